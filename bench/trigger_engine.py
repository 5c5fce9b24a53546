"""Processor throughput with trigger rules, in this process, without HTTP or delivery.

    python -m bench.trigger_engine --events 20000 --runs 3

Each scenario builds an event log once and replays it into empty state with a manual clock.
The clock stands a month after the first event, so due timers fire as the replay goes. The
report gives events per second of wall time and of this process's CPU time, as medians over
the runs:

- ``no-rules``: the ingest benchmark's traffic (bench/workload.py) and plan, no triggers.
- ``new-user-50-rules``: one new user per event; 50 rules, each event enters one of them,
  which sends an in-app message (the rule set of bench/triggers.py).
- ``traffic-50-rules``: the ingest benchmark's traffic with 50 rules: 10 welcome journeys
  on sign-up with waits, 10 trial journeys with a goal and an exit, 10 absence rules
  (project created, no invite within a day), 10 trait-change rules and 10 rules on large
  orders.

CPU time is the fairer number on a busy machine: wall time includes waiting for a CPU.
Results are printed and written to bench/out/trigger_engine.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.triggers import build_plan
from bench.workload import PLAN, messages
from headstart.ingest.normalize import IngestContext, normalize
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.plan.load import parse_plan
from headstart.processor.processor import Processor
from headstart.state.store import StateStore
from headstart.timeutil import MICROS_PER_DAY, ManualClock, parse_iso, to_iso

OUT = Path(__file__).resolve().parent / "out"
START = parse_iso("2024-05-01T00:00:00Z")

CHANNELS = """
channels:
  email: {type: smtp, host: 127.0.0.1, from: hello@example.com}
  in_app: {type: in_app, identity_secret_env: BENCH_INAPP_SECRET}
"""


def traffic_rules() -> str:
    rules = []
    for index in range(10):
        rules += [
            f"    - {{name: welcome{index}, entry: {{event: Signed Up}}, steps: ["
            "{send: email, template: t}, {wait: 1d}, {wait_until: '09:00'},"
            " {send: in_app, template: t}]}",
            f"    - {{name: trial{index}, entry: {{event: Signed Up}},"
            " goal: {conditions: [{activated: true}]},"
            " exit: {events: [{event: Order Completed}]},"
            " steps: [{wait: 2d}, {send: email, template: t}]}",
            f"    - {{name: no_invite{index}, entry: {{after: {{event: Project Created}},"
            " missing: {event: Invite Sent}, within: 1d}, steps: [{send: email, template: t}]}",
            f"    - {{name: upgraded{index}, entry: {{trait: plan, from: free, to: pro}},"
            " steps: [{send: email, template: t}]}",
            f"    - {{name: big_order{index}, entry: {{event: Order Completed,"
            " where: {total: {gte: 1000}}}, steps: [{send: email, template: t}]}",
        ]
    return (
        CHANNELS
        + "triggers:\n  fallback_timezone: UTC\n"
        + "  caps: [{channel: email, max: 3, per: 24h}]\n"
        + "  templates:\n    t: {subject: \"Hi {{ traits.name | default('there') }}\"}\n"
        + "  rules:\n"
        + "\n".join(rules)
        + "\n"
    )


def new_user_messages(count: int, rules: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "track",
            "event": f"Bench {index % rules}",
            "userId": f"user-{index}",
            "properties": {"bench_id": index},
            "timestamp": to_iso(START + index * 500),
            "messageId": f"bench-{index}",
        }
        for index in range(count)
    ]


def build_log(path: Path, raw: list[dict[str, Any]]) -> SQLiteEventLog:
    log = SQLiteEventLog(path)
    ctx = IngestContext(
        source_id="bench", received_at=parse_iso("2030-01-01T00:00:00Z"), historical=True
    )
    records = [normalize(message, None, ctx) for message in raw]
    for start in range(0, len(records), 5000):
        log.append(records[start : start + 5000])
    return log


def replay(log: SQLiteEventLog, state: Path, plan_text: str) -> tuple[float, float, int]:
    store = StateStore(state)
    processor = Processor(log, store, None, clock=ManualClock(START + 30 * MICROS_PER_DAY))
    processor.use_plan(parse_plan(plan_text))
    wall, cpu = time.perf_counter(), time.process_time()
    applied = processor.catch_up()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sends = int(store.conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
    store.close()
    return applied / wall, applied / cpu, sends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="Events per scenario.")
    parser.add_argument("--runs", type=int, default=3, help="Replays per scenario.")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="headstart-bench-engine-"))
    traffic = list(messages(args.events, start_us=START))
    scenarios = {
        "no-rules": (traffic, PLAN),
        "new-user-50-rules": (new_user_messages(args.events, 50), build_plan(50, 3)),
        "traffic-50-rules": (traffic, PLAN + traffic_rules()),
    }
    results: dict[str, Any] = {"events": args.events, "runs": args.runs, "scenarios": {}}
    for name, (raw, plan_text) in scenarios.items():
        log = build_log(workdir / f"{name}.sqlite", raw)
        runs = [
            replay(log, workdir / f"{name}-state-{run}.sqlite", plan_text)
            for run in range(args.runs)
        ]
        log.close()
        results["scenarios"][name] = {
            "events_per_s_wall": round(statistics.median(run[0] for run in runs)),
            "events_per_s_cpu": round(statistics.median(run[1] for run in runs)),
            "outbox_rows": runs[0][2],
        }
        print(name, json.dumps(results["scenarios"][name]), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "trigger_engine.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
