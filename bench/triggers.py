"""Trigger latency, timer precision and delivery throughput of a real ``headstart serve``.

    python -m bench.triggers --rate 2000 --seconds 10 --rules 50

The plan has ``--rules`` active rules; rule ``i`` enters on the event ``Bench i`` and sends
one in-app message whose template echoes the event's ``bench_id``. A client thread posts
batches to /v1/batch at ``--rate`` events per second, each event for a new user and a rule
chosen in turn, and records when each batch got its HTTP 200. Then:

- latency: per event, the outbox row's ``sent_at`` (the dispatcher's clock when the in-app
  channel returned) minus the HTTP 200 of the event's batch. Both clocks are this machine's
  wall clock. Reported as p50, p99 and max.
- timer precision: ``--timers`` extra events enter a rule that waits ``--wait-s`` seconds,
  then sends. Precision is the send row's ``created_at`` (when the processor fired the timer)
  minus the enrollment's ``entered_at`` plus the wait.
- throughput: events per second accepted by the API, and messages per second sent, from the
  first send to the last.

Results are printed as JSON, written to bench/out/triggers.json, and with ``--record``
appended to docs/benchmarks.md with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from base64 import b64encode
from pathlib import Path
from typing import Any

import httpx
import orjson

from headstart.datadir import DataDir
from headstart.sources import SourceRegistry
from headstart.sqlite import connect
from headstart.timeutil import MICROS_PER_SECOND

ADMIN_KEY = "bench-admin-key"
INAPP_SECRET = "bench-inapp-secret"
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Triggers and delivery"
RETURNING_USERS = 5000
PRODUCT_EVENTS = ("Page Viewed", "Button Clicked", "Report Viewed", "Settings Updated")


def build_plan(rules: int, wait_s: float) -> str:
    lines = [
        "version: 1",
        "name: trigger benchmark",
        "signup: {event: Signed Up}",
        "milestones:",
        "  - {name: first_project, event: Project Created}",
        "activation: {milestones: [first_project], within_days: 14}",
        "channels:",
        "  in_app:",
        "    type: in_app",
        "    identity_secret_env: BENCH_INAPP_SECRET",
        "triggers:",
        "  fallback_timezone: UTC",
        "  templates:",
        '    card: {title: "Tip {{ rule }}", data: {bench_id: "{{ event.properties.bench_id }}"}}',
        "  rules:",
    ]
    for index in range(rules):
        lines += [
            f"    - name: rule{index:03d}",
            f"      entry: {{event: Bench {index}}}",
            "      quiet_hours: ignore",
            "      steps:",
            "        - {send: in_app, template: card}",
        ]
    lines += [
        "    - name: timer",
        "      entry: {event: Bench Timer}",
        "      quiet_hours: ignore",
        "      steps:",
        f"        - {{wait: {wait_s:g}s}}",
        "        - {send: in_app, template: card}",
    ]
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, root: Path, plan: str):
        self.data = DataDir.create(root)
        plan_file = root.parent / "plan.yaml"
        plan_file.write_text(plan, encoding="utf-8")
        self.data.install_plan(plan_file)
        conn = connect(self.data.log_path)
        _, self.write_key = SourceRegistry(conn).add("bench")
        conn.close()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "HEADSTART_ADMIN_KEY": ADMIN_KEY,
            "BENCH_INAPP_SECRET": INAPP_SECRET,
            "HEADSTART_LOG_LEVEL": "WARNING",
        }
        command = [sys.executable, "-m", "headstart.cli.main", "serve", "-d", str(root)]
        command += ["--port", str(self.port)]
        self.output = (root.parent / "serve.log").open("wb")
        self.process = subprocess.Popen(
            command, env=env, stdout=self.output, stderr=subprocess.STDOUT
        )
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", trust_env=False).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the server did not start within 60 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.output.close()


class Sender(threading.Thread):
    """Posts ``batches`` at a steady pace and records each batch's 200 in wall-clock us."""

    def __init__(
        self, url: str, write_key: str, batches: list[list[dict[str, Any]]], pace_s: float
    ):
        super().__init__(name="bench-sender", daemon=True)
        self.url = url
        self.auth = "Basic " + b64encode(f"{write_key}:".encode()).decode()
        self.batches = batches
        self.pace_s = pace_s
        self.acked: dict[str, int] = {}
        self.errors = 0
        self.finished_at = 0.0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60, trust_env=False) as client:
            start = time.monotonic()
            for index, batch in enumerate(self.batches):
                delay = start + index * self.pace_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                body = orjson.dumps({"batch": batch})
                response = client.post(
                    "/v1/batch",
                    content=body,
                    headers={"Authorization": self.auth, "Content-Type": "application/json"},
                )
                acked = time.time_ns() // 1000
                if response.status_code != 200:
                    self.errors += 1
                    continue
                for event in batch:
                    self.acked[event["properties"]["bench_id"]] = acked
        self.finished_at = time.monotonic()


def build_batches(
    rate: int,
    seconds: float,
    rules: int,
    batch_size: int,
    timers: int,
    trigger_share: float = 1.0,
) -> list[list[dict[str, Any]]]:
    """Return the batches to send: ``trigger_share`` of the events enter a rule.

    The other events are product events of a pool of returning users that no rule reacts
    to, as most of a real stream is.
    """
    rng = random.Random(7)
    total = int(rate * seconds)
    events = []
    triggering = 0
    for index in range(total):
        if rng.random() < trigger_share:
            name = f"Bench {triggering % rules}"
            triggering += 1
            events.append(_event(f"e{index}", name, f"bench-user-{index}"))
        else:
            user = f"returning-user-{rng.randrange(RETURNING_USERS)}"
            events.append(_event(f"p{index}", rng.choice(PRODUCT_EVENTS), user))
    spacing = max(1, total // max(timers, 1))
    for index in range(timers):
        events.insert(index * spacing, _event(f"t{index}", "Bench Timer", f"timer-user-{index}"))
    return [events[i : i + batch_size] for i in range(0, len(events), batch_size)]


def _event(bench_id: str, name: str, user: str) -> dict[str, Any]:
    """Return a track event without a timestamp, so the server stamps it on arrival."""
    return {
        "type": "track",
        "event": name,
        "userId": user,
        "messageId": f"bench-{bench_id}",
        "properties": {"bench_id": bench_id},
    }


def read_outbox(state_path: Path) -> list[tuple[str, str, int, int | None, str]]:
    conn = sqlite3.connect(state_path, timeout=30)
    try:
        return conn.execute(
            "SELECT status, payload, created_at, sent_at, person_id FROM outbox"
        ).fetchall()
    finally:
        conn.close()


def timer_due(state_path: Path, wait_us: int) -> dict[str, int]:
    conn = sqlite3.connect(state_path, timeout=30)
    try:
        rows = conn.execute(
            "SELECT person_id, entered_at FROM enrollments WHERE rule = 'timer'"
        ).fetchall()
    finally:
        conn.close()
    return {str(person): int(entered) + wait_us for person, entered in rows if entered}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="headstart-bench-triggers-"))
    wait_us = int(args.wait_s * MICROS_PER_SECOND)
    batches = build_batches(
        args.rate, args.seconds, args.rules, args.batch, args.timers, args.trigger_share
    )
    expected = sum(len(batch) for batch in batches)
    # Every event of a "Bench ..." rule (and every timer event) sends exactly one message.
    expected_sends = sum(
        1 for batch in batches for event in batch if event["event"].startswith("Bench")
    )
    server = Server(workdir / "data", build_plan(args.rules, args.wait_s))
    try:
        sender = Sender(server.url, server.write_key, batches, args.batch / args.rate)
        started = time.monotonic()
        sender.start()
        sender.join()
        ingest_s = sender.finished_at - started

        deadline = time.monotonic() + args.drain_s
        rows = read_outbox(server.data.state_path)
        while time.monotonic() < deadline:
            rows = read_outbox(server.data.state_path)
            if sum(1 for row in rows if row[0] == "sent") >= expected_sends:
                break
            time.sleep(0.5)
        due = timer_due(server.data.state_path, wait_us)
    finally:
        server.stop()

    latencies_ms: list[float] = []
    precision_ms: list[float] = []
    enqueue_ms: list[float] = []
    dispatch_ms: list[float] = []
    sent_times: list[int] = []
    for status, payload, created_at, sent_at, person_id in rows:
        if status != "sent" or sent_at is None:
            continue
        sent_times.append(sent_at)
        bench_id = str(orjson.loads(payload).get("data", {}).get("bench_id", ""))
        if bench_id.startswith("t"):
            if person_id in due:
                precision_ms.append((created_at - due[person_id]) / 1000)
            continue
        acked = sender.acked.get(bench_id)
        if acked is not None:
            latencies_ms.append((sent_at - acked) / 1000)
            enqueue_ms.append((created_at - acked) / 1000)
            dispatch_ms.append((sent_at - created_at) / 1000)
    shutil.rmtree(workdir, ignore_errors=True)

    span_s = (max(sent_times) - min(sent_times)) / MICROS_PER_SECOND if len(sent_times) > 1 else 0
    result: dict[str, Any] = {
        "rules": args.rules,
        "target_rate": args.rate,
        "events": expected,
        "acked_events": len(sender.acked),
        "http_errors": sender.errors,
        "ingest_events_per_s": round(len(sender.acked) / ingest_s) if ingest_s else None,
        "sent": len(sent_times),
        "trigger_share": args.trigger_share,
        "expected_sends": expected_sends,
        "missing": expected_sends - len(sent_times),
        "sends_per_s": round(len(sent_times) / span_s) if span_s else None,
    }
    if latencies_ms:
        result["latency_ms"] = {
            "p50": round(percentile(latencies_ms, 0.50), 1),
            "p99": round(percentile(latencies_ms, 0.99), 1),
            "max": round(max(latencies_ms), 1),
        }
        # The latency split at the outbox: until the processor wrote the row, then until
        # the dispatcher handed it to the channel.
        result["enqueue_ms"] = {
            "p50": round(percentile(enqueue_ms, 0.50), 1),
            "p99": round(percentile(enqueue_ms, 0.99), 1),
        }
        result["dispatch_ms"] = {
            "p50": round(percentile(dispatch_ms, 0.50), 1),
            "p99": round(percentile(dispatch_ms, 0.99), 1),
        }
    if precision_ms:
        result["timer_precision_ms"] = {
            "wait_s": args.wait_s,
            "timers": len(precision_ms),
            "p50": round(statistics.median(precision_ms), 1),
            "p99": round(percentile(precision_ms, 0.99), 1),
            "max": round(max(precision_ms), 1),
        }
    return result


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (
        f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()}, 1-minute load average {load:.1f} when it finished"
    )


def record(result: dict[str, Any], command: str) -> None:
    """Add one line for ``result`` at the end of this benchmark's section of the page."""
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\nRecorded by `bench/triggers.py`.\n"
    latency = result.get("latency_ms", {})
    enqueue = result.get("enqueue_ms", {})
    dispatch = result.get("dispatch_ms", {})
    timers = result.get("timer_precision_ms", {})
    entry = (
        f"- `{command}` on {machine()}, {time.strftime('%Y-%m-%d')}: "
        f"{result['events']} events at a target of {result['target_rate']}/s "
        f"({result['ingest_events_per_s']}/s accepted) with {result['rules']} rules, "
        f"{result['trigger_share']:.0%} of events entering a rule; "
        f"event to in-app delivery p50 {latency.get('p50')} ms, p99 {latency.get('p99')} ms, "
        f"max {latency.get('max')} ms (p50 until the outbox row {enqueue.get('p50')} ms, "
        f"then in the dispatcher {dispatch.get('p50')} ms); {result['sends_per_s']} sends/s; "
        f"{result['missing']} not sent within the drain time; timer fire minus due "
        f"p50 {timers.get('p50')} ms, p99 {timers.get('p99')} ms over {timers.get('timers')} "
        f"timers of {timers.get('wait_s')} s.\n"
    )
    head, _, rest = text.partition(SECTION)
    next_section = rest.find("\n## ")
    if next_section == -1:
        body, tail = rest, ""
    else:
        body, tail = rest[:next_section], rest[next_section:]
    body = body.rstrip("\n")
    separator = "\n" if body.splitlines()[-1].startswith("- ") else "\n\n"
    DOC.write_text(head + SECTION + body + separator + entry + tail, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=2000, help="Events per second to send.")
    parser.add_argument("--seconds", type=float, default=10.0, help="How long to send.")
    parser.add_argument("--rules", type=int, default=50, help="Active rules in the plan.")
    parser.add_argument("--batch", type=int, default=100, help="Events per HTTP request.")
    parser.add_argument("--timers", type=int, default=200, help="Events that start a timer.")
    parser.add_argument("--wait-s", type=float, default=3.0, help="The timer rule's wait.")
    parser.add_argument(
        "--drain-s", type=float, default=120.0, help="Seconds to wait for the last sends."
    )
    parser.add_argument(
        "--trigger-share",
        type=float,
        default=1.0,
        help="Share of events (0 to 1) that enter a rule; the rest are other product events.",
    )
    parser.add_argument("--record", action="store_true", help="Append to docs/benchmarks.md.")
    args = parser.parse_args()
    result = run(args)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "triggers.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    if args.record:
        record(result, "python -m bench.triggers " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
