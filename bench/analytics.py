"""Analytics query times on a generated warehouse, next to hand-written SQL and pandas.

    python -m bench.analytics --events 10000000 --persons 1000000 --repeat 3

Steps:

1. ``generate`` builds ``bench/out/analytics-<events>-<persons>-<seed>.duckdb`` from a seeded
   NumPy generator (kept between runs, rebuilt with ``--regenerate``): every person signs up
   once, then moves through Signed Up -> Project Created -> Teammate Invited -> Subscription
   Started with falling odds and exponential delays, among noise events (page views, errors,
   experiment exposures). Arrival order is jittered, so sequence numbers and event times
   disagree now and then, as in real ingest.
2. Each analysis in ``ANALYSES`` runs in a fresh subprocess that opens the file read-only:
   one untimed warm-up, then ``--repeat`` timed runs of the headstart analysis and of its
   baselines (hand-written DuckDB SQL with the same semantics, and pandas where given).
   The subprocess reports its peak resident memory, so each analysis is measured alone.
3. Baselines must return the same numbers as the analysis; a mismatch fails the run.

Results are printed and written to ``bench/out/analytics.json``. To add an analysis, append
an ``Analysis`` to ``ANALYSES``.

    python -m bench.analytics --sync 200000

measures ``Warehouse.sync`` instead: it logs and processes that many synthetic events
(``bench.workload``) in ``bench/out/sync-data``, then times a full sync into an empty
warehouse, an incremental sync of 1% more events, and a sync with nothing new (the cost every
analytics request pays). Results go to ``bench/out/analytics-sync.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from bench import lifecycle
from headstart.analytics.funnels import run_funnel
from headstart.analytics.warehouse import create_schema
from headstart.plan.analytics import FunnelSpec

OUT = Path(__file__).parent / "out"
DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
START_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
SIGNUP_SPREAD_DAYS = 90

FUNNEL_EVENTS = ["Signed Up", "Project Created", "Teammate Invited", "Subscription Started"]
# Probability of doing each funnel step after the previous one, and the mean delay in hours.
STEP_ODDS = [0.65, 0.55, 0.35]
STEP_DELAY_H = [20.0, 36.0, 60.0]
NOISE_EVENTS = [
    "Page Viewed",
    "Opened App",
    "Document Edited",
    "Search Performed",
    "Error Shown",
    "Settings Changed",
    "Experiment Viewed",
    "Comment Added",
]
NOISE_WEIGHTS = [0.30, 0.20, 0.15, 0.10, 0.08, 0.05, 0.07, 0.05]
EVENT_NAMES = FUNNEL_EVENTS + NOISE_EVENTS
SOURCES = ["ads", "mail", "organic"]
PAGES = ["Home", "Pricing", "Docs"]

FUNNEL = FunnelSpec.model_validate(
    {
        "name": "bench_onboarding",
        "steps": [{"event": name} for name in FUNNEL_EVENTS],
        "order": "ordered",
        "window": "7d",
        "entry": "first",
    }
)


# ---- generator --------------------------------------------------------------------------------


def generate(path: Path, events: int, persons: int, seed: int) -> dict[str, float]:
    """Write a warehouse with about ``events`` events of ``persons`` persons to ``path``."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    signup = START_US + rng.integers(0, SIGNUP_SPREAD_DAYS * DAY_US, persons)
    person_parts = [np.arange(persons)]
    code_parts = [np.zeros(persons, dtype=np.int8)]
    time_parts = [signup]
    reached = np.ones(persons, dtype=bool)
    previous = signup
    milestone_times = []
    for step, (odds, delay_h) in enumerate(zip(STEP_ODDS, STEP_DELAY_H, strict=True), start=1):
        reached = reached & (rng.random(persons) < odds)
        delay = rng.exponential(delay_h * HOUR_US, persons).astype(np.int64) + 1
        current = previous + delay
        person_parts.append(np.flatnonzero(reached))
        code_parts.append(np.full(int(reached.sum()), step, dtype=np.int8))
        time_parts.append(current[reached])
        milestone_times.append(np.where(reached, current, -1))
        previous = current
    funnel_count = sum(len(part) for part in person_parts)

    noise_mean = max(events - funnel_count, 0) / persons
    noise_per_person = rng.poisson(noise_mean, persons)
    noise_person = np.repeat(np.arange(persons), noise_per_person)
    noise_code = rng.choice(
        np.arange(len(FUNNEL_EVENTS), len(EVENT_NAMES)), len(noise_person), p=NOISE_WEIGHTS
    ).astype(np.int8)
    noise_time = signup[noise_person] + rng.integers(-DAY_US, 30 * DAY_US, len(noise_person))
    person_parts.append(noise_person)
    code_parts.append(noise_code)
    time_parts.append(noise_time)

    person = np.concatenate(person_parts).astype(np.int32)
    code = np.concatenate(code_parts)
    ts = np.concatenate(time_parts).astype(np.int64)
    # Arrival order: event time plus up to 10 minutes of jitter, so some events arrive late.
    arrival = ts + rng.integers(0, 10 * 60_000_000, len(ts))
    order = np.argsort(arrival, kind="stable")
    person, code, ts = person[order], code[order], ts[order]
    variant = rng.integers(0, 2, persons).astype(np.int8)
    detail = rng.integers(0, 3, len(ts)).astype(np.int8)

    if path.exists():
        path.unlink()
    conn = duckdb.connect(str(path))
    create_schema(conn)
    raw = pa.table(
        {
            "seq": pa.array(np.arange(1, len(ts) + 1, dtype=np.int64)),
            "person": pa.array(person),
            "code": pa.array(code),
            "ts": pa.array(ts),
            "detail": pa.array(detail),
            "variant": pa.array(variant[person]),
        }
    )
    conn.register("raw", raw)
    names = _sql_list(EVENT_NAMES)
    sources = _sql_list(SOURCES)
    pages = _sql_list(PAGES)
    conn.execute(
        f"""
        INSERT INTO events
        SELECT seq, 'p' || lpad(person::VARCHAR, 8, '0'), 'track', {names}[code + 1],
            make_timestamp(ts),
            (CASE {names}[code + 1]
                WHEN 'Signed Up' THEN json_object('plan', CASE WHEN person % 4 = 0 THEN 'pro' ELSE 'free' END)
                WHEN 'Page Viewed' THEN json_object('name', {pages}[detail + 1])
                WHEN 'Experiment Viewed' THEN json_object('experiment_id', 'onboarding',
                    'variation_id', CASE variant WHEN 0 THEN 'checklist' ELSE 'progress_bar' END)
                ELSE '{{}}'::JSON END),
            (CASE WHEN code = 0 THEN json_object('campaign', json_object('source', {sources}[person % 3 + 1]))
                ELSE '{{}}'::JSON END),
            'u' || person::VARCHAR, NULL, 'm' || seq::VARCHAR
        FROM raw
        """
    )
    conn.unregister("raw")
    _persons(conn, signup, milestone_times)
    conn.execute("CHECKPOINT")
    count = conn.execute("SELECT count(*) FROM events").fetchone()
    conn.close()
    return {"events": float(count[0]) if count else 0.0, "seconds": time.perf_counter() - started}


def _persons(conn: duckdb.DuckDBPyConnection, signup: Any, milestone_times: list[Any]) -> None:
    created, invited, subscribed = milestone_times
    # Activated: created a project and invited a teammate within 14 days of signing up.
    activated = np.where((invited >= 0) & (invited - signup <= 14 * DAY_US), invited, -1)
    table = pa.table(
        {
            "person": pa.array(np.arange(len(signup), dtype=np.int32)),
            "signup": pa.array(signup),
            "activated": pa.array(activated),
            "created": pa.array(created),
            "invited": pa.array(invited),
            "subscribed": pa.array(subscribed),
        }
    )
    conn.register("people", table)
    conn.execute(
        """
        INSERT INTO persons
        SELECT 'p' || lpad(p.person::VARCHAR, 8, '0'), 'u' || p.person::VARCHAR, s.first_seen,
            s.last_seen, make_timestamp(p.signup),
            CASE WHEN p.activated >= 0 THEN make_timestamp(p.activated) END,
            json_object('plan', CASE WHEN p.person % 4 = 0 THEN 'pro' ELSE 'free' END)
        FROM people p JOIN (SELECT person_id, min(ts) AS first_seen, max(ts) AS last_seen
            FROM events GROUP BY person_id) s ON s.person_id = 'p' || lpad(p.person::VARCHAR, 8, '0')
        """
    )
    for milestone, column in (
        ("created_project", "created"),
        ("invited_teammate", "invited"),
        ("subscribed", "subscribed"),
    ):
        conn.execute(
            f"INSERT INTO milestones SELECT 'p' || lpad(person::VARCHAR, 8, '0'), '{milestone}',"
            f" make_timestamp({column}) FROM people WHERE {column} >= 0"
        )
    conn.unregister("people")


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join("'" + value.replace("'", "''") + "'" for value in values) + "]"


# ---- analyses and baselines -------------------------------------------------------------------


@dataclass
class Analysis:
    """One analysis and its baselines; each callable takes the open connection."""

    name: str
    run: Callable[[duckdb.DuckDBPyConnection], Any]
    handwritten: Callable[[duckdb.DuckDBPyConnection], Any] | None = None
    pandas: Callable[[duckdb.DuckDBPyConnection], Any] | None = None
    # Loads what the pandas baseline needs into memory, untimed; its result goes to pandas.
    pandas_input: Callable[[duckdb.DuckDBPyConnection], Any] | None = None
    # Raises AssertionError when a baseline's numbers differ from the analysis's.
    check: Callable[[Any, Any], None] | None = None
    notes: list[str] = field(default_factory=list)


def funnel_engine(conn: duckdb.DuckDBPyConnection) -> list[tuple[int, float | None]]:
    result = run_funnel(conn, FUNNEL)
    return [
        (
            int(row["units"]),
            None if pd.isna(row["median_s_from_previous"]) else row["median_s_from_previous"],
        )
        for row in result.steps.to_dict(orient="records")
    ]


def funnel_handwritten(conn: duckdb.DuckDBPyConnection) -> list[tuple[int, float | None]]:
    """The same funnel as an analyst would write it: greedy steps ordered by (ts, seq)."""
    sql = """
    WITH e AS (
        SELECT person_id, event, ts,
            (epoch_us(ts)::HUGEINT + 4611686018427387904) * 9223372036854775808 + seq AS k
        FROM events WHERE event IN ('Signed Up', 'Project Created', 'Teammate Invited',
            'Subscription Started')
    ),
    s1 AS (SELECT person_id, min(k) AS k FROM e WHERE event = 'Signed Up' GROUP BY person_id),
    w AS (SELECT person_id, k, make_timestamp(((k >> 63)
            - 4611686018427387904)::BIGINT) AS t1 FROM s1),
    s2 AS (SELECT w.person_id, any_value(w.t1) AS t1, any_value(w.k) AS prev, min(e.k) AS k
        FROM w JOIN e ON e.person_id = w.person_id AND e.event = 'Project Created'
        AND e.k > w.k AND e.ts <= w.t1 + INTERVAL 7 DAY GROUP BY w.person_id),
    s3 AS (SELECT s.person_id, any_value(s.t1) AS t1, any_value(s.k) AS prev, min(e.k) AS k
        FROM s2 s JOIN e ON e.person_id = s.person_id AND e.event = 'Teammate Invited'
        AND e.k > s.k AND e.ts <= s.t1 + INTERVAL 7 DAY GROUP BY s.person_id),
    s4 AS (SELECT s.person_id, any_value(s.t1) AS t1, any_value(s.k) AS prev, min(e.k) AS k
        FROM s3 s JOIN e ON e.person_id = s.person_id AND e.event = 'Subscription Started'
        AND e.k > s.k AND e.ts <= s.t1 + INTERVAL 7 DAY GROUP BY s.person_id)
    SELECT 1, count(*), NULL FROM s1
    UNION ALL SELECT 2, count(*), median(((k >> 63) - (prev >> 63))::BIGINT) FROM s2
    UNION ALL SELECT 3, count(*), median(((k >> 63) - (prev >> 63))::BIGINT) FROM s3
    UNION ALL SELECT 4, count(*), median(((k >> 63) - (prev >> 63))::BIGINT) FROM s4
    ORDER BY 1
    """
    rows = conn.execute(sql).fetchall()
    return [(int(units), None if median is None else median / 1e6) for _, units, median in rows]


def funnel_pandas_input(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    names = ", ".join(f"'{name}'" for name in FUNNEL_EVENTS)
    return conn.execute(
        f"SELECT person_id, event, epoch_us(ts) AS ts, seq FROM events WHERE event IN ({names})"
    ).df()


def funnel_pandas(frame: pd.DataFrame) -> list[tuple[int, float | None]]:
    """The same funnel in pandas: merge each step's events onto the previous step, keep the first."""
    window = 7 * DAY_US
    first = frame[frame["event"] == FUNNEL_EVENTS[0]].sort_values(["ts", "seq"])
    current = first.groupby("person_id", sort=False).head(1)[["person_id", "ts", "seq"]]
    current = current.assign(t1=current["ts"])
    results: list[tuple[int, float | None]] = [(len(current), None)]
    for name in FUNNEL_EVENTS[1:]:
        candidates = frame[frame["event"] == name][["person_id", "ts", "seq"]]
        joined = current.merge(candidates, on="person_id", suffixes=("_prev", ""))
        later = (joined["ts"] > joined["ts_prev"]) | (
            (joined["ts"] == joined["ts_prev"]) & (joined["seq"] > joined["seq_prev"])
        )
        joined = joined[later & (joined["ts"] <= joined["t1"] + window)]
        joined = joined.sort_values(["ts", "seq"]).groupby("person_id", sort=False).head(1)
        gap = joined["ts"] - joined["ts_prev"]
        results.append((len(joined), float(gap.median()) / 1e6 if len(joined) else None))
        current = joined[["person_id", "ts", "seq", "t1"]]
    return results


def same_steps(expected: Any, found: Any) -> None:
    assert [units for units, _ in expected] == [units for units, _ in found], (expected, found)
    for (_, want), (_, got) in zip(expected, found, strict=True):
        assert (want is None and got is None) or abs(want - got) < 1e-6, (expected, found)


ANALYSES = [
    Analysis(
        name="funnel: 4 steps, ordered, 7-day window",
        run=funnel_engine,
        handwritten=funnel_handwritten,
        pandas=funnel_pandas,
        pandas_input=funnel_pandas_input,
        check=same_steps,
    ),
    # Retention, time-to-value and discovery, each against its hand-written query.
    *(Analysis(**spec) for spec in lifecycle.ANALYSES),
]


# ---- sync -------------------------------------------------------------------------------------


def sync_benchmark(count: int) -> dict[str, Any]:
    """Time full, incremental and empty syncs of ``count`` processed synthetic events."""
    import shutil

    from bench.workload import PLAN, messages
    from headstart.analytics.warehouse import Warehouse
    from headstart.datadir import DataDir
    from headstart.ingest.normalize import IngestContext, normalize
    from headstart.log.sqlite_log import SQLiteEventLog
    from headstart.plan.load import parse_plan
    from headstart.processor.processor import Processor
    from headstart.state.store import StateStore

    root = OUT / "sync-data"
    shutil.rmtree(root, ignore_errors=True)
    directory = DataDir.create(root)
    log = SQLiteEventLog(directory.log_path)
    store = StateStore(directory.state_path)
    processor = Processor(log, store, parse_plan(PLAN))
    extra = max(count // 100, 1)
    stream = messages(count + extra, start_us=START_US)
    context = IngestContext(source_id="bench", received_at=START_US + 400 * DAY_US, historical=True)

    def log_and_process(how_many: int) -> None:
        batch = []
        for _ in range(how_many):
            batch.append(normalize(next(stream), None, context))
            if len(batch) == 5000:
                log.append(batch)
                batch = []
        if batch:
            log.append(batch)
        processor.catch_up()

    log_and_process(count)
    warehouse = Warehouse.open(directory)
    started = time.perf_counter()
    full = warehouse.sync()
    full_s = time.perf_counter() - started
    log_and_process(extra)
    started = time.perf_counter()
    incremental = warehouse.sync()
    incremental_s = time.perf_counter() - started
    empty = []
    for _ in range(5):
        started = time.perf_counter()
        warehouse.sync()
        empty.append(time.perf_counter() - started)
    warehouse.close()
    log.close()
    store.close()
    return {
        "events": count,
        "full_sync_s": full_s,
        "full_sync_events": full.events,
        "full_sync_persons": full.persons,
        "incremental_sync_s": incremental_s,
        "incremental_events": incremental.events,
        "incremental_persons": incremental.persons,
        "empty_sync_ms": statistics.median(empty) * 1000,
    }


# ---- running ----------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(function: Callable[[Any], Any], argument: Any, repeat: int) -> tuple[Any, list[float]]:
    result = function(argument)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = function(argument)
        times.append(time.perf_counter() - started)
    return result, times


def run_one(path: Path, index: int, repeat: int) -> dict[str, Any]:
    """Run analysis ``index`` and its baselines on the warehouse at ``path`` (this process)."""
    analysis = ANALYSES[index]
    conn = duckdb.connect(str(path), read_only=True)
    report: dict[str, Any] = {"analysis": analysis.name}
    result, times = _timed(analysis.run, conn, repeat)
    report["headstart_s"] = statistics.median(times)
    report["headstart_peak_rss_mb"] = _peak_rss_mb()
    if analysis.handwritten is not None:
        expected, times = _timed(analysis.handwritten, conn, repeat)
        if analysis.check is not None:
            analysis.check(result, expected)
        report["handwritten_sql_s"] = statistics.median(times)
    if analysis.pandas is not None and analysis.pandas_input is not None:
        started = time.perf_counter()
        frame = analysis.pandas_input(conn)
        report["pandas_load_s"] = time.perf_counter() - started
        expected, times = _timed(analysis.pandas, frame, repeat)
        if analysis.check is not None:
            analysis.check(result, expected)
        report["pandas_s"] = statistics.median(times)
    report["peak_rss_mb"] = _peak_rss_mb()
    if "handwritten_sql_s" in report:
        report["ratio_to_sql"] = report["headstart_s"] / report["handwritten_sql_s"]
    conn.close()
    return report


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{cpu}, {os.cpu_count()} cores, {memory_gb:.0f} GB RAM, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="Timed runs per query.")
    parser.add_argument("--regenerate", action="store_true", help="Rebuild the warehouse file.")
    parser.add_argument(
        "--sync", type=int, metavar="EVENTS", help="Measure Warehouse.sync on this many events."
    )
    parser.add_argument("--only", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.only is not None:
        print(json.dumps(run_one(args.db, args.only, args.repeat)))
        return
    if args.sync is not None:
        OUT.mkdir(exist_ok=True)
        report = {"command": " ".join(["python -m bench.analytics", *sys.argv[1:]])}
        report.update(machine=machine(), **sync_benchmark(args.sync))
        print(json.dumps(report, indent=2))
        (OUT / "analytics-sync.json").write_text(json.dumps(report, indent=2) + "\n")
        return

    OUT.mkdir(exist_ok=True)
    path = OUT / f"analytics-{args.events}-{args.persons}-{args.seed}.duckdb"
    generated = None
    if args.regenerate or not path.exists():
        generated = generate(path, args.events, args.persons, args.seed)
        print(f"generated {generated['events']:.0f} events in {generated['seconds']:.1f} s: {path}")
    reports = []
    for index, analysis in enumerate(ANALYSES):
        command = [
            sys.executable,
            "-m",
            "bench.analytics",
            "--only",
            str(index),
            "--db",
            str(path),
            "--repeat",
            str(args.repeat),
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=False)
        if output.returncode != 0:
            print(f"{analysis.name}: failed\n{output.stderr}", file=sys.stderr)
            raise SystemExit(1)
        report = json.loads(output.stdout.strip().splitlines()[-1])
        reports.append(report)
        print(_line(report))
    summary = {
        "command": " ".join(["python -m bench.analytics", *sys.argv[1:]]),
        "machine": machine(),
        "duckdb": duckdb.__version__,
        "events": args.events,
        "persons": args.persons,
        "seed": args.seed,
        "generated": generated,
        "analyses": reports,
    }
    (OUT / "analytics.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def _line(report: dict[str, Any]) -> str:
    parts = [f"{report['analysis']}: headstart {report['headstart_s']:.2f} s"]
    if "handwritten_sql_s" in report:
        parts.append(f"hand-written SQL {report['handwritten_sql_s']:.2f} s")
        parts.append(f"ratio {report['ratio_to_sql']:.2f}")
    if "pandas_s" in report:
        parts.append(f"pandas {report['pandas_s']:.2f} s (+{report['pandas_load_s']:.1f} s load)")
    parts.append(f"peak RSS {report['peak_rss_mb']:.0f} MB")
    return ", ".join(parts)


if __name__ == "__main__":
    main()
