"""Crash recovery: SIGKILL the server or its processor while a client streams batches.

A client thread sends numbered batches one at a time and records each one that got a 200.
After the crash every acknowledged event must be in the log exactly once. Once the client has
re-sent what was not acknowledged, as an SDK retries, the derived state must equal the state of
a clean run that received every batch once.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import (
    HeadstartDir,
    HeadstartServer,
    is_running,
    make_data_dir,
    wait_until,
    wait_until_processed,
)

from headstart.timeutil import MICROS_PER_DAY, to_iso

BATCHES = 100
EVENTS_PER_BATCH = 30
USERS = 40
# The server is killed once this many batches were acknowledged, well before the last one.
KILL_AFTER_ACKS = 12
WAIT_S = 60.0

Batch = list[dict[str, Any]]


# ---- the event stream ------------------------------------------------------------------------


def build_batches(seed: int, base_us: int) -> list[Batch]:
    """Build a deterministic stream of BATCHES batches over USERS users on two devices.

    Every event has its own messageId and a timestamp 1 ms after the previous one, and none
    carries sentAt, so its timestamp is stored as sent and both runs see the same times.
    """
    rng = random.Random(seed)
    events = [
        _event(rng, index, base_us + index * 1000) for index in range(BATCHES * EVENTS_PER_BATCH)
    ]
    return [
        events[start : start + EVENTS_PER_BATCH]
        for start in range(0, len(events), EVENTS_PER_BATCH)
    ]


def _event(rng: random.Random, index: int, timestamp_us: int) -> dict[str, Any]:
    user = rng.randrange(USERS)
    user_id = f"user-{user}"
    laptop = f"laptop-{user}"
    phone = f"phone-{user}"
    device = rng.choice((laptop, phone))
    kind = rng.choices(
        ("page", "signup", "identify", "project", "invite", "alias", "group"),
        weights=(6, 2, 3, 3, 3, 1, 1),
    )[0]

    common = {"messageId": f"crash-{index}", "timestamp": to_iso(timestamp_us)}
    if kind == "page":
        name = rng.choice(("Pricing", "Home", "Docs"))
        return {"type": "page", "anonymousId": device, "name": name, **common}
    if kind == "signup":
        return {"type": "track", "anonymousId": laptop, "event": "Signed Up", **common}
    if kind == "identify":
        traits = {"plan": rng.choice(("free", "team", "pro")), "seats": rng.randrange(1, 50)}
        return {
            "type": "identify",
            "userId": user_id,
            "anonymousId": device,
            "traits": traits,
            **common,
        }
    if kind == "alias":
        return {"type": "alias", "previousId": phone, "userId": user_id, **common}
    if kind == "group":
        return {"type": "group", "userId": user_id, "groupId": f"org-{user % 7}", **common}
    event = "Project Created" if kind == "project" else "Teammate Invited"
    return {
        "type": "track",
        "userId": user_id,
        "event": event,
        "properties": {"n": index},
        **common,
    }


BASE_US = time.time_ns() // 1000 - 2 * MICROS_PER_DAY
STREAM = build_batches(seed=20240501, base_us=BASE_US)
ALL_MESSAGE_IDS = [event["messageId"] for batch in STREAM for event in batch]


# ---- the client -------------------------------------------------------------------------------


class Sender(threading.Thread):
    """Send batches ``first`` to ``last`` (exclusive) in order, one request at a time.

    The thread stops at the first request that fails and records why in ``failure``.
    """

    def __init__(self, url: str, write_key: str, first: int = 0, last: int = len(STREAM)):
        super().__init__(name="batch-sender", daemon=True)
        self.url = url
        self.write_key = write_key
        self.first = first
        self.last = last
        self.acknowledged: list[int] = []
        self.responses: list[dict[str, Any]] = []
        self.failure: str | None = None

    def run(self) -> None:
        with httpx.Client(base_url=self.url, trust_env=False, timeout=60) as client:
            for index in range(self.first, self.last):
                try:
                    response = client.post(
                        "/v1/batch", json={"batch": STREAM[index]}, auth=(self.write_key, "")
                    )
                except httpx.TransportError as exc:
                    self.failure = f"batch {index}: {type(exc).__name__}: {exc}"
                    return
                if response.status_code != 200:
                    self.failure = f"batch {index}: HTTP {response.status_code}: {response.text}"
                    return
                self.responses.append(response.json())
                self.acknowledged.append(index)


def send_all(server: HeadstartServer, first: int = 0, last: int = len(STREAM)) -> Sender:
    sender = Sender(server.url, server.data.write_key, first, last)
    sender.start()
    sender.join(timeout=300)
    assert not sender.is_alive(), "the sender did not finish"
    assert sender.failure is None, sender.failure
    return sender


# ---- reading the files ----------------------------------------------------------------------


def message_id_counts(log_path: Path) -> Counter[str]:
    """Count log rows per messageId, read straight from log.sqlite."""
    conn = sqlite3.connect(log_path)
    try:
        rows = conn.execute("SELECT message_id, count(*) FROM events GROUP BY message_id")
        return Counter({str(message_id): int(count) for message_id, count in rows})
    finally:
        conn.close()


def state_snapshot(state_path: Path) -> dict[str, Any]:
    """Read the derived tables of state.sqlite into plain values that compare by content."""
    conn = sqlite3.connect(state_path)
    try:
        persons = {
            person_id: (user_id, first_seen, last_seen, signup_at, activated_at, orjson.loads(doc))
            for person_id, user_id, first_seen, last_seen, signup_at, activated_at, doc in conn.execute(
                "SELECT person_id, user_id, first_seen, last_seen, signup_at, activated_at, doc"
                " FROM persons"
            )
        }
        snapshot = {
            "persons": persons,
            "identifiers": sorted(conn.execute("SELECT kind, value, person_id FROM identifiers")),
            "merged_persons": sorted(
                conn.execute("SELECT person_id, merged_into FROM merged_persons")
            ),
            "milestones": sorted(
                conn.execute("SELECT person_id, milestone, reached_at FROM milestones")
            ),
            "merges": sorted(
                (seq, at, survivor, merged, reason, orjson.loads(detail))
                for seq, at, survivor, merged, reason, detail in conn.execute(
                    "SELECT seq, at, survivor, merged, reason, detail FROM merges"
                )
            ),
            "warnings": sorted(conn.execute("SELECT seq, at, person_id, code FROM warnings")),
            "failed_events": sorted(conn.execute("SELECT seq, error FROM failed_events")),
        }
    finally:
        conn.close()
    return snapshot


def assert_logged_exactly_once(log_path: Path, message_ids: list[str]) -> Counter[str]:
    counts = message_id_counts(log_path)
    missing = [message_id for message_id in message_ids if counts[message_id] == 0]
    doubled = {message_id: count for message_id, count in counts.items() if count > 1}
    unknown = set(counts) - set(ALL_MESSAGE_IDS)
    assert missing == [], f"{len(missing)} acknowledged events are not in the log: {missing[:5]}"
    assert doubled == {}, f"events logged more than once: {dict(list(doubled.items())[:5])}"
    assert unknown == set(), f"events in the log that were never sent: {sorted(unknown)[:5]}"
    return counts


def ids_of(batches: list[int]) -> list[str]:
    return [event["messageId"] for index in batches for event in STREAM[index]]


# ---- the reference run --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The derived state after one server received every batch exactly once, with no crash."""
    data = make_data_dir(tmp_path_factory.mktemp("clean") / "data")
    server = HeadstartServer(data).start()
    try:
        sender = send_all(server)
        with server.admin_client() as admin:
            wait_until_processed(admin)
    finally:
        server.stop()

    assert sum(response["accepted"] for response in sender.responses) == len(ALL_MESSAGE_IDS)
    snapshot = state_snapshot(data.state_path)
    assert len(snapshot["persons"]) > USERS // 2
    assert snapshot["merges"], "the stream should merge anonymous persons into users"
    return snapshot


def test_stream_totals_match_plain_count(clean_state: dict[str, Any]) -> None:
    # Each page and track event adds one to its person's counts, and identify, alias and group
    # add nothing. A merge adds the counts together, so the totals cannot change.
    expected = Counter(
        "Page Viewed" if event["type"] == "page" else event["event"]
        for batch in STREAM
        for event in batch
        if event["type"] in ("page", "track")
    )
    counted: Counter[str] = Counter()
    for *_, doc in clean_state["persons"].values():
        counted.update(doc["event_counts"])

    assert counted == expected


# ---- crashes ---------------------------------------------------------------------------------


@pytest.fixture
def crash_dir(tmp_path: Path) -> HeadstartDir:
    return make_data_dir(tmp_path / "data")


def test_server_sigkill_loses_no_acknowledged_event(
    crash_dir: HeadstartDir, clean_state: dict[str, Any]
) -> None:
    server = HeadstartServer(crash_dir).start()
    try:
        [processor_pid] = server.processor_pids()
        sender = Sender(server.url, crash_dir.write_key)
        sender.start()
        wait_until(
            lambda: len(sender.acknowledged) >= KILL_AFTER_ACKS or not sender.is_alive(),
            WAIT_S,
            "the sender made no progress",
        )
        server.kill()
        sender.join(timeout=WAIT_S)
    except BaseException:
        server.kill_group()
        raise

    assert sender.failure is not None, "the server was killed after the last batch"
    acknowledged = sender.acknowledged
    assert acknowledged == list(range(len(acknowledged)))
    assert_logged_exactly_once(crash_dir.log_path, ids_of(acknowledged))
    wait_until(lambda: not is_running(processor_pid), WAIT_S, "the orphaned processor kept running")
    server.kill_group()

    restarted = HeadstartServer(crash_dir, port=server.port).start()
    try:
        assert_logged_exactly_once(crash_dir.log_path, ids_of(acknowledged))
        resent = send_all(restarted, first=len(acknowledged))
        with restarted.admin_client() as admin:
            status = wait_until_processed(admin)
    finally:
        assert restarted.stop() == 0

    # Only the batch in flight at the kill can have been committed without its 200.
    duplicates = [response["duplicates"] for response in resent.responses]
    assert duplicates[0] in (0, EVENTS_PER_BATCH)
    assert sum(duplicates[1:]) == 0
    counts = assert_logged_exactly_once(crash_dir.log_path, ALL_MESSAGE_IDS)
    assert sum(counts.values()) == len(ALL_MESSAGE_IDS)
    assert status["log_head"] == len(ALL_MESSAGE_IDS)
    assert state_snapshot(crash_dir.state_path) == clean_state


def cpu_ticks(pid: int) -> int:
    """Return the user plus system CPU time of ``pid`` in clock ticks, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def processed(admin: httpx.Client) -> int:
    return int(admin.get("/api/status").json()["processed"])


def kill_processor_mid_batch(
    server: HeadstartServer, admin: httpx.Client, first: int, last: int
) -> bool:
    """Pile up batches for a paused processor, resume it, and SIGKILL it once it is working.

    The kill comes after the processor used 1 clock tick of CPU time on the backlog, which
    takes it far longer than that to apply. Returns whether the kill came before the batch
    was committed, which is what the test is meant to exercise.
    """
    [pid] = server.processor_pids()
    offset = processed(admin)
    os.kill(pid, signal.SIGSTOP)
    try:
        send_all(server, first, last)
        ticks = cpu_ticks(pid)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: cpu_ticks(pid) > ticks, WAIT_S, "the resumed processor did no work")
    os.kill(pid, signal.SIGKILL)
    killed_before_commit = processed(admin) == offset

    wait_until(
        lambda: any(other != pid for other in server.processor_pids()),
        WAIT_S,
        f"the server did not restart its processor after SIGKILL of {pid}",
    )
    return killed_before_commit


def test_processor_sigkill_restarted_exactly_once(
    crash_dir: HeadstartDir, clean_state: dict[str, Any]
) -> None:
    warm_up = 10
    middle = warm_up + (len(STREAM) - warm_up) // 2
    server = HeadstartServer(crash_dir).start()
    try:
        with server.admin_client() as admin:
            send_all(server, 0, warm_up)
            wait_until_processed(admin)
            first_kill = kill_processor_mid_batch(server, admin, warm_up, middle)
            wait_until_processed(admin)
            second_kill = kill_processor_mid_batch(server, admin, middle, len(STREAM))
            status = wait_until_processed(admin)
    finally:
        assert server.stop() == 0

    assert first_kill or second_kill, "no kill came before the processor committed its batch"
    assert "restarting" in server.output()
    assert status["processed"] == len(ALL_MESSAGE_IDS)
    assert_logged_exactly_once(crash_dir.log_path, ALL_MESSAGE_IDS)
    assert state_snapshot(crash_dir.state_path) == clean_state
