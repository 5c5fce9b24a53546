"""Outbox claims, leases and admin actions, the dispatcher's handling of unusable rows and
channels, channel settings validation, and the ``headstart messages`` commands."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
from pathlib import Path

import pytest
from channel_peers import HttpPeer, http_peer
from conftest import DEFAULT_PLAN, headstart_command, run_cli

from headstart.channels.base import ChannelContext, SendResult
from headstart.delivery.channelset import ChannelSet
from headstart.delivery.dispatcher import Dispatcher
from headstart.delivery.outbox import OutboxStore, Outcome
from headstart.errors import PlanError
from headstart.plan.load import parse_plan, plan_hash
from headstart.timeutil import MICROS_PER_SECOND, ManualClock, parse_iso

T0 = parse_iso("2025-03-01T12:00:00Z")
SECOND = MICROS_PER_SECOND


def enqueue(outbox: OutboxStore, key: str, *, channel: str = "hooks", not_before: int = T0) -> int:
    outbox_id = outbox.enqueue(
        idempotency_key=key,
        person_id="p1",
        rule="r",
        step="s",
        channel=channel,
        payload={"n": 1},
        created_at=T0,
        not_before=not_before,
    )
    assert outbox_id is not None
    return outbox_id


@pytest.fixture
def outbox(tmp_path: Path):
    store = OutboxStore(tmp_path / "state.sqlite")
    yield store
    store.close()


def test_enqueue_same_key_once(outbox: OutboxStore):
    first = enqueue(outbox, "k")
    again = outbox.enqueue(
        idempotency_key="k",
        person_id="p2",
        rule="r",
        step="s",
        channel="hooks",
        payload={},
        created_at=T0,
    )
    assert again is None
    assert [row.outbox_id for row in outbox.rows()] == [first]


def test_claim_waits_for_not_before(outbox: OutboxStore):
    later = enqueue(outbox, "later", not_before=T0 + 60 * SECOND)
    now = enqueue(outbox, "now")
    assert [row.outbox_id for row in outbox.claim(T0, 10, 300 * SECOND)] == [now]
    assert outbox.claim(T0 + 59 * SECOND, 10, 300 * SECOND) == []
    [claimed] = outbox.claim(T0 + 60 * SECOND, 10, 300 * SECOND)
    assert claimed.outbox_id == later
    assert claimed.attempts == 1


def test_claim_reclaims_expired_lease(outbox: OutboxStore):
    outbox_id = enqueue(outbox, "k")
    [first] = outbox.claim(T0, 10, 30 * SECOND)
    assert first.status == "sending"
    assert outbox.claim(T0 + 29 * SECOND, 10, 30 * SECOND) == []
    [second] = outbox.claim(T0 + 30 * SECOND, 10, 30 * SECOND)
    assert second.outbox_id == outbox_id
    assert second.attempts == 2


def test_claim_excludes_in_flight(outbox: OutboxStore):
    first = enqueue(outbox, "a")
    second = enqueue(outbox, "b")
    outbox.release_orphans(T0)
    claimed = outbox.claim(T0, 10, SECOND, exclude={first})
    assert [row.outbox_id for row in claimed] == [second]


def test_claim_respects_limit_and_order(outbox: OutboxStore):
    ids = [enqueue(outbox, f"k{index}") for index in range(5)]
    assert [row.outbox_id for row in outbox.claim(T0, 2, SECOND)] == ids[:2]
    assert [row.outbox_id for row in outbox.claim(T0, 10, SECOND)] == ids[2:]


def test_record_keeps_admin_change(outbox: OutboxStore):
    outbox_id = enqueue(outbox, "k")
    outbox.claim(T0, 1, SECOND)
    outbox.record([Outcome(outbox_id, "dead", T0, error="boom")])
    assert outbox.drop([outbox_id]) == 1
    outbox.record([Outcome(outbox_id, "sent", T0 + SECOND)])
    row = outbox.get(outbox_id)
    assert row is not None
    assert row.status == "dropped"


def test_retry_and_drop_only_dead(outbox: OutboxStore):
    dead = enqueue(outbox, "dead")
    pending = enqueue(outbox, "pending", not_before=T0 + SECOND)
    outbox.claim(T0, 10, SECOND)
    outbox.record([Outcome(dead, "dead", T0, error="boom")])

    assert outbox.retry([pending]) == 0
    assert outbox.retry() == 1
    row = outbox.get(dead)
    assert row is not None
    assert (row.status, row.attempts, row.next_attempt_at) == ("pending", 0, None)
    assert outbox.counts()["pending"] == 2


class Rig:
    def __init__(self, tmp_path: Path, channels_yaml: str, environ: dict[str, str]):
        self.clock = ManualClock(T0)
        self.outbox = OutboxStore(tmp_path / "state.sqlite")
        plan = parse_plan(DEFAULT_PLAN + channels_yaml)
        context = ChannelContext(tmp_path / "state.sqlite", self.clock, environ)
        self.dispatcher = Dispatcher(
            self.outbox, ChannelSet.from_plan(plan, context), self.clock, rng=random.Random(5)
        )

    def close(self) -> None:
        self.dispatcher.close()
        self.outbox.close()


HOOKS = "channels:\n  hooks:\n    type: webhook\n    url: {url}/h\n    secret_env: BENCH_SECRET\n"


@pytest.fixture
def peer():
    with http_peer() as running:
        yield running


def test_unset_secret_retried_without_leaking(tmp_path: Path, peer: HttpPeer):
    rig = Rig(tmp_path, HOOKS.format(url=peer.url), {})
    try:
        outbox_id = enqueue(rig.outbox, "k")
        rig.dispatcher.run_until_idle()
        row = rig.outbox.get(outbox_id)
        assert row is not None
        assert row.status == "failed"
        assert "BENCH_SECRET" in (row.last_error or "")
        assert "is not set" in (row.last_error or "")
    finally:
        rig.close()


def test_unconfigured_channel_retried(tmp_path: Path, peer: HttpPeer):
    rig = Rig(tmp_path, HOOKS.format(url=peer.url), {"BENCH_SECRET": "s3cr3t-value"})
    try:
        outbox_id = enqueue(rig.outbox, "k", channel="sms")
        rig.dispatcher.run_until_idle()
        row = rig.outbox.get(outbox_id)
        assert row is not None
        assert row.status == "failed"
        assert "'sms' is not configured" in (row.last_error or "")
        assert "s3cr3t-value" not in (row.last_error or "")
    finally:
        rig.close()


@pytest.mark.parametrize(
    ("payload", "error"),
    [("not json", "not valid JSON"), ("[1, 2]", "expected an object")],
    ids=["invalid-json", "array"],
)
def test_unusable_payload_dead(tmp_path: Path, peer: HttpPeer, payload: str, error: str):
    rig = Rig(tmp_path, HOOKS.format(url=peer.url), {"BENCH_SECRET": "x"})
    try:
        conn = sqlite3.connect(tmp_path / "state.sqlite")
        conn.execute(
            "INSERT INTO outbox (idempotency_key, person_id, rule, step, channel, payload,"
            " created_at, not_before) VALUES ('k', 'p', 'r', 's', 'hooks', ?, ?, ?)",
            (payload, T0, T0),
        )
        conn.commit()
        conn.close()
        rig.dispatcher.run_until_idle()
        [row] = rig.outbox.rows()
        assert row.status == "dead"
        assert error in (row.last_error or "")
        assert peer.received() == []
    finally:
        rig.close()


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        ("{type: smtp, host: h}", "from"),
        ("{type: smtp, host: h, from: a@b.c, username_env: U}", "username_env and password_env"),
        ("{type: smtp, host: h, from: a@b.c, security: ssl}", "security"),
        ("{type: webhook, secret_env: S}", "set url, destinations or both"),
        ("{type: webhook, url: ftp://x, secret_env: S}", "url"),
        (
            "{type: webhook, url: http://x, secret_env: S, headers: {Idempotency-Key: x}}",
            "is set by headstart",
        ),
        ("{type: web_push, vapid_private_key_env: K, subject: ops@acme}", "subject"),
        ("{type: in_app}", "identity_secret_env"),
        ("{type: in_app, identity_secret_env: 'not a name'}", "identity_secret_env"),
        ("{type: smtp, host: h, from: a@b.c, retry: {max_attempts: 0}}", "max_attempts"),
        ("{type: smtp, host: h, from: a@b.c, retry: {jitter: 2}}", "jitter"),
    ],
    ids=[
        "smtp-no-from",
        "smtp-half-credentials",
        "smtp-bad-security",
        "webhook-no-target",
        "webhook-bad-url",
        "webhook-reserved-header",
        "push-bad-subject",
        "inapp-no-secret",
        "inapp-bad-env-name",
        "retry-zero-attempts",
        "retry-jitter-over-one",
    ],
)
def test_invalid_channel_settings(channel: str, message: str):
    with pytest.raises(PlanError) as raised:
        parse_plan(DEFAULT_PLAN + f"channels:\n  c: {channel}\n")
    text = str(raised.value)
    assert "channels.c" in text
    assert message in text


def test_channels_leave_plan_hash():
    base = parse_plan(DEFAULT_PLAN)
    with_channels = parse_plan(DEFAULT_PLAN + HOOKS.format(url="http://127.0.0.1:9"))
    assert plan_hash(base) == plan_hash(with_channels)


def test_messages_cli(tmp_path: Path):
    root = tmp_path / "data"
    root.mkdir()
    outbox = OutboxStore(root / "state.sqlite")
    dead = enqueue(outbox, "dead")
    enqueue(outbox, "later", not_before=T0 + 3600 * SECOND)
    outbox.claim(T0, 1, SECOND)
    outbox.record([Outcome(dead, "dead", T0, error="gave up after 8 attempts")])
    outbox.close()

    listed = json.loads(run_cli("messages", "list", "-d", str(root), "--json").stdout)
    assert listed["counts"]["dead"] == 1
    assert listed["counts"]["pending"] == 1
    dead_only = json.loads(
        run_cli("messages", "list", "-d", str(root), "--status", "dead", "--json").stdout
    )
    assert [row["outbox_id"] for row in dead_only["messages"]] == [dead]
    assert dead_only["messages"][0]["last_error"] == "gave up after 8 attempts"

    shown = json.loads(run_cli("messages", "show", str(dead), "-d", str(root)).stdout)
    assert shown["idempotency_key"] == "dead"

    for action, outbox_id, message in (
        ("drop", 999, "no outbox row 999"),
        ("retry", dead + 1, f"outbox row {dead + 1} is pending; only dead or dropped rows"),
    ):
        refused = subprocess.run(
            headstart_command("messages", action, str(outbox_id), "-d", str(root)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refused.returncode != 0
        assert message in " ".join(refused.stderr.split())
    assert "1 messages dropped" in run_cli("messages", "drop", "--all-dead", "-d", str(root)).stdout
    retried = run_cli("messages", "retry", str(dead), "-d", str(root)).stdout
    assert "1 messages will be sent again" in retried
    after = json.loads(run_cli("messages", "list", "-d", str(root), "--json").stdout)
    assert after["counts"]["pending"] == 2
    assert after["counts"]["dead"] == 0

    with sqlite3.connect(root / "state.sqlite") as conn:
        conn.execute(
            "INSERT INTO identifiers (kind, value, person_id) VALUES ('user_id', 'u9', 'p9')"
        )
    unknown = subprocess.run(
        headstart_command(
            "messages",
            "send",
            "--channel",
            "hooks",
            "--person",
            "nobody",
            "--payload",
            "{}",
            "-d",
            str(root),
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unknown.returncode != 0
    assert "no person 'nobody'" in unknown.stderr
    run_cli(
        "messages",
        "send",
        "--channel",
        "hooks",
        "--person",
        "u9",
        "--payload",
        '{"n": 2}',
        "-d",
        str(root),
    )
    manual = json.loads(
        run_cli("messages", "list", "-d", str(root), "--json", "--rule", "manual").stdout
    )
    assert [row["person_id"] for row in manual["messages"]] == ["p9"]


def test_vapid_keys_cli():
    from headstart.channels.push import load_vapid_key, public_key_text

    private, public = run_cli("messages", "vapid-keys").stdout.split()
    assert public_key_text(load_vapid_key(private)) == public


def test_inapp_batch_isolates_bad_row(tmp_path: Path):
    rig = Rig(
        tmp_path,
        "channels:\n  in_app: {type: in_app, identity_secret_env: INAPP}\n",
        {"INAPP": "secret"},
    )
    try:
        for key, payload in (
            ("good-1", {"title": "a"}),
            ("bad", {"title": "b", "expires_at": "next tuesday"}),
            ("good-2", {"title": "c", "priority": 5}),
        ):
            rig.outbox.enqueue(
                idempotency_key=key,
                person_id="p1",
                rule="r",
                step="s",
                channel="in_app",
                payload=payload,
                created_at=T0,
            )
        rig.dispatcher.run_until_idle()
        status = {row.idempotency_key: row.status for row in rig.outbox.rows()}
        assert status == {"good-1": "sent", "bad": "dead", "good-2": "sent"}
        conn = sqlite3.connect(tmp_path / "state.sqlite")
        inbox = conn.execute(
            "SELECT idempotency_key, priority FROM inbox ORDER BY rowid"
        ).fetchall()
        conn.close()
        assert inbox == [("good-1", 0), ("good-2", 5)]
    finally:
        rig.close()


class ShortBatchChannel:
    """A plugin with a bug: its batch send returns one result too few."""

    name = "batchy"

    def send(self, message: object) -> SendResult:
        return SendResult()

    def send_batch(self, messages: list[object]) -> list[SendResult]:
        return [SendResult() for _ in messages[1:]]

    def close(self) -> None:
        pass


def test_batch_result_count_mismatch_retried(outbox: OutboxStore):
    for key in ("k1", "k2", "k3"):
        enqueue(outbox, key, channel="batchy")
    clock = ManualClock(T0)
    dispatcher = Dispatcher(outbox, ChannelSet({"batchy": ShortBatchChannel()}), clock, threads=2)
    try:
        dispatcher.run_until_idle()
        assert dispatcher.in_flight == 0
        rows = outbox.rows()
        assert {row.status for row in rows} == {"failed"}
        assert all("returned 2 results for 3 messages" in (row.last_error or "") for row in rows)
    finally:
        dispatcher.close()
