"""Retention, time-to-value and discovery timings next to hand-written DuckDB SQL, in one run.

    python -m bench.lifecycle --persons 1000000 --events 10000000 --runs 3

Generates a seeded warehouse in a temporary DuckDB file (``generate``; all in SQL, from a
hash of the row number, so the same arguments give the same data), then times each analysis
through the headstart API and a hand-written query of the same semantics on the same
connection, and fails when the two disagree on any number. DuckDB runs with
``memory_limit`` (default 4 GB), so a query that needed more would fail; the peak resident
memory of the process is reported too.

It prints a markdown table and writes the numbers as JSON to bench/out/lifecycle.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from headstart.analytics.discovery import DiscoveryQuery, discover
from headstart.analytics.retention import RetentionQuery, run_retention
from headstart.analytics.ttv import TtvQuery, time_to_value
from headstart.analytics.warehouse import create_schema
from headstart.timeutil import MICROS_PER_DAY, parse_iso

OUT = Path(__file__).resolve().parent / "out" / "lifecycle.json"
T0 = parse_iso("2024-01-01T00:00:00Z")
SIGNUP_SPREAD_DAYS = 90
ACTIVITY_DAYS = 60
EVENT_NAMES = [
    "Page Viewed",
    "Project Created",
    "Report Viewed",
    "Invite Sent",
    "Button Clicked",
    "Settings Updated",
    "Order Completed",
    "Comment Posted",
]
MILESTONES = {
    "created_project": "Project Created",
    "invited": "Invite Sent",
    "ordered": "Order Completed",
}


def generate(conn: duckdb.DuckDBPyConnection, persons: int, events: int) -> None:
    """Fill the warehouse with ``persons`` sign-ups and ``events`` events in total.

    Each person signs up at a time spread over 90 days; every other event belongs to a
    person chosen by hash, at a delay after their sign-up that is skewed toward the first
    days (the square of a uniform share of 60 days), with one of eight event names.
    """
    create_schema(conn)
    activity = events - persons
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE signups AS
        SELECT CAST(i AS BIGINT) AS n, 'p' || i AS person_id,
               CAST({T0} + (hash(i, 1) % {SIGNUP_SPREAD_DAYS * 86_400}) * 1000000 AS BIGINT) AS signup_us,
               ['free', 'pro', 'team'][CAST(1 + hash(i, 2) % 3 AS BIGINT)] AS plan
        FROM range({persons}) r(i)
        """
    )
    conn.execute(
        """
        INSERT INTO events
        SELECT n, person_id, 'track', 'Signed Up', make_timestamp(signup_us), '{}', '{}',
               person_id, NULL, 'm' || n
        FROM signups
        """
    )
    names = ", ".join(f"'{name}'" for name in EVENT_NAMES)
    conn.execute(
        f"""
        INSERT INTO events
        SELECT {persons} + j, s.person_id, 'track', ([{names}])[CAST(1 + hash(j, 3) % {len(EVENT_NAMES)} AS BIGINT)],
               make_timestamp(s.signup_us + CAST(pow((hash(j, 4) % 1000000) / 1e6, 2)
                                                 * {ACTIVITY_DAYS * MICROS_PER_DAY} AS BIGINT)),
               '{{}}', '{{}}', s.person_id, NULL, 'm' || ({persons} + j)
        FROM range({activity}) r(j) JOIN signups s ON s.n = CAST(hash(j, 5) % {persons} AS BIGINT)
        """
    )
    milestone_rows = " UNION ALL ".join(
        f"SELECT person_id, '{name}', min(ts) FROM events WHERE event = '{event}' GROUP BY person_id"
        for name, event in MILESTONES.items()
    )
    conn.execute(f"INSERT INTO milestones {milestone_rows}")
    conn.execute(
        """
        INSERT INTO persons
        SELECT s.person_id, s.person_id, make_timestamp(s.signup_us), NULL,
               make_timestamp(s.signup_us),
               CASE WHEN c.reached_at <= make_timestamp(s.signup_us + 7 * 86400000000)
                     AND i.reached_at <= make_timestamp(s.signup_us + 7 * 86400000000)
                    THEN greatest(c.reached_at, i.reached_at) END,
               json_object('plan', s.plan)
        FROM signups s
        LEFT JOIN milestones c ON c.person_id = s.person_id AND c.milestone = 'created_project'
        LEFT JOIN milestones i ON i.person_id = s.person_id AND i.milestone = 'invited'
        """
    )
    conn.execute("DROP TABLE signups")


# Hand-written queries with the semantics of the headstart calls below, as an analyst would
# write them for this one case: no parameters, no notices, no JSON shaping. Each reads the data's
# end (the latest event) itself, as headstart does.
HAND_RETENTION = """
WITH bounds AS (SELECT max(ts) AS as_of FROM events),
entries AS (
    SELECT person_id, signup_at AS s, CAST(date_trunc('week', signup_at) AS DATE) AS cohort,
           (epoch_us(as_of) - epoch_us(signup_at)) // (7 * 86400000000) AS obs
    FROM persons, bounds WHERE signup_at IS NOT NULL
),
hits AS (
    SELECT DISTINCT e.person_id, (epoch_us(r.ts) - epoch_us(e.s)) // (7 * 86400000000) AS week
    FROM entries e JOIN events r ON r.person_id = e.person_id AND r.ts > e.s
    WHERE r.event IS NOT NULL AND r.ts < e.s + INTERVAL 56 DAY
)
SELECT strftime(e.cohort, '%Y-%m-%d'), w.week, count(*) FILTER (WHERE e.obs > w.week),
       count(h.person_id) FILTER (WHERE e.obs > w.week)
FROM entries e CROSS JOIN range(8) w(week)
LEFT JOIN hits h ON h.person_id = e.person_id AND h.week = w.week
GROUP BY ALL
"""

HAND_TTV = """
WITH bounds AS (SELECT epoch_us(max(ts)) AS as_of FROM events),
cohort AS (
    SELECT person_id, epoch_us(signup_at) AS s, epoch_us(activated_at) AS a FROM persons
    WHERE signup_at IS NOT NULL
),
goal_names AS (
    SELECT DISTINCT milestone AS goal FROM milestones UNION ALL SELECT 'activation'
),
durations AS (
    SELECT g.goal,
           CASE WHEN g.goal = 'activation' THEN c.a ELSE epoch_us(m.reached_at) END AS r,
           c.s
    FROM cohort c CROSS JOIN goal_names g
    LEFT JOIN milestones m ON m.person_id = c.person_id AND m.milestone = g.goal
),
measured AS (
    SELECT goal, r IS NOT NULL AS converted,
           CASE WHEN r IS NOT NULL THEN greatest(r - s, 0) ELSE as_of - s END AS d
    FROM durations, bounds
),
steps AS (
    SELECT goal, d, count(*) FILTER (WHERE converted) AS events, count(*) AS removed
    FROM measured GROUP BY goal, d
),
km AS (
    SELECT goal, d, exp(sum(ln(1 - events / at_risk)) OVER (PARTITION BY goal ORDER BY d)) AS s
    FROM (
        SELECT *, sum(removed) OVER (PARTITION BY goal ORDER BY d DESC) AS at_risk FROM steps
    ) WHERE events < at_risk
)
SELECT q.goal, q.converted, q.quantiles, k.median
FROM (
    SELECT goal, count(*) FILTER (WHERE converted) AS converted,
           quantile_cont(d, [0.5, 0.75, 0.9]) FILTER (WHERE converted) AS quantiles
    FROM measured GROUP BY goal
) q
LEFT JOIN (SELECT goal, min(d) AS median FROM km WHERE s <= 0.5 GROUP BY goal) k USING (goal)
"""

HAND_DISCOVERY = """
WITH bounds AS (SELECT epoch_us(max(ts)) AS as_of FROM events),
pop AS (
    SELECT person_id, epoch_us(signup_at) AS s FROM persons, bounds
    WHERE epoch_us(signup_at) + 37 * 86400000000 <= as_of
),
outcome AS (
    SELECT p.person_id, count(r.person_id) > 0 AS retained
    FROM pop p LEFT JOIN events r ON r.person_id = p.person_id AND r.event IS NOT NULL
     AND epoch_us(r.ts) >= p.s + 23 * 86400000000 AND epoch_us(r.ts) < p.s + 37 * 86400000000
    GROUP BY p.person_id
),
early AS (
    SELECT e.person_id, e.event, least(count(*), 5) AS n
    FROM events e JOIN pop p USING (person_id)
    WHERE e.event IS NOT NULL AND epoch_us(e.ts) >= p.s AND epoch_us(e.ts) < p.s + 7 * 86400000000
    GROUP BY ALL
)
SELECT event, n, retained, count(*) FROM early JOIN outcome USING (person_id) GROUP BY ALL
UNION ALL
SELECT NULL, NULL, retained, count(*) FROM outcome GROUP BY retained
"""

Cells = dict[tuple[str, int], tuple[int, int]]


def retention_engine(conn: duckdb.DuckDBPyConnection) -> Cells:
    """Return the weekly matrix as {(cohort, week): (observable, retained)}."""
    query = RetentionQuery(interval="week", periods=tuple(range(8)), cohort="week")
    cells = run_retention(conn, query).cells
    return {
        (row.cohort, int(row.lo)): (int(row.observable), int(row.retained))
        for row in cells.itertuples()
        if row.cohort != "(all)"
    }


def retention_handwritten(conn: duckdb.DuckDBPyConnection) -> Cells:
    rows = conn.execute(HAND_RETENTION).fetchall()
    return {(cohort, int(week)): (int(seen), int(kept)) for cohort, week, seen, kept in rows}


def same_cells(expected: Cells, found: Cells) -> None:
    assert expected == found, "the weekly retention matrices differ"


Goals = dict[str, tuple[int, list[float | None], float | None]]


def ttv_engine(conn: duckdb.DuckDBPyConnection) -> Goals:
    """Return {goal: (converted, [median, p75, p90] hours, Kaplan-Meier median hours)}."""
    summary = time_to_value(conn, TtvQuery()).summary
    return {
        row["goal"]: (
            int(row["converted"]),
            [_finite(row[f"{name}_hours"]) for name in ("median", "p75", "p90")],
            _finite(row["km_median_hours"]),
        )
        for row in summary.to_dict(orient="records")
    }


def ttv_handwritten(conn: duckdb.DuckDBPyConnection) -> Goals:
    hour = 3_600_000_000
    result: Goals = {}
    for goal, converted, quantiles, median in conn.execute(HAND_TTV).fetchall():
        values = [None if v is None else v / hour for v in (quantiles or [None] * 3)]
        result[goal] = (int(converted), values, None if median is None else median / hour)
    return result


def same_goals(expected: Goals, found: Goals) -> None:
    assert expected.keys() == found.keys(), (sorted(expected), sorted(found))
    for goal, (converted, quantiles, median) in expected.items():
        other = found[goal]
        assert converted == other[0], (goal, converted, other[0])
        for want, got in zip([*quantiles, median], [*other[1], other[2]], strict=True):
            assert (want is None and got is None) or abs(want - got) < 1e-6, (goal, want, got)


Tables = dict[tuple[str, int], tuple[int, int]]


def discovery_engine(conn: duckdb.DuckDBPyConnection) -> Tables:
    """Return {(event, k): (doers, doers retained)} plus ("", 0): (population, retained)."""
    result = discover(conn, DiscoveryQuery(min_doers=1, min_share=0.0))
    tables = {
        (row.event, int(row.min_count)): (int(row.doers), int(row.doers_retained))
        for row in result.candidates.itertuples()
    }
    tables[("", 0)] = (result.population, result.retained)
    return tables


def discovery_handwritten(conn: duckdb.DuckDBPyConnection) -> Tables:
    rows = conn.execute(HAND_DISCOVERY).fetchall()
    totals = [(kept, count) for event, _, kept, count in rows if event is None]
    population = sum(count for _, count in totals)
    tables: Tables = {("", 0): (population, sum(count for kept, count in totals if kept))}
    for k in (1, 2, 3, 5):
        doers: dict[str, list[int]] = {}
        for event, n, kept, count in rows:
            if event is None or n < k:
                continue
            cell = doers.setdefault(event, [0, 0])
            cell[0] += count
            cell[1] += count if kept else 0
        for event, (did, retained) in doers.items():
            if 0 < did < population:
                tables[(event, k)] = (did, retained)
    return tables


def same_tables(expected: Tables, found: Tables) -> None:
    assert expected == found, "the discovery 2x2 tables differ"


# Name, headstart call, hand-written baseline and the check that both gave the same numbers,
# in the shape bench/analytics.py takes.
ANALYSES: list[dict[str, Any]] = [
    {
        "name": "retention: weekly matrix, 8 weeks",
        "run": retention_engine,
        "handwritten": retention_handwritten,
        "check": same_cells,
    },
    {
        "name": "time-to-value: milestones + activation, Kaplan-Meier",
        "run": ttv_engine,
        "handwritten": ttv_handwritten,
        "check": same_goals,
    },
    {
        "name": "discovery: every event x k in 1,2,3,5",
        "run": discovery_engine,
        "handwritten": discovery_handwritten,
        "check": same_tables,
    },
]


def timed(
    action: Callable[[duckdb.DuckDBPyConnection], Any], conn: duckdb.DuckDBPyConnection, runs: int
) -> tuple[Any, float]:
    """Return the last result and the median wall time of ``runs`` calls, in seconds."""
    times = []
    result = None
    for _ in range(runs):
        started = time.perf_counter()
        result = action(conn)
        times.append(time.perf_counter() - started)
    return result, statistics.median(times)


def run(persons: int, events: int, runs: int, memory_limit: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        conn = duckdb.connect(str(Path(folder) / "bench.duckdb"))
        conn.execute(f"SET memory_limit = '{memory_limit}'")
        started = time.perf_counter()
        generate(conn, persons, events)
        generated_s = time.perf_counter() - started
        results = []
        for analysis in ANALYSES:
            found, engine_s = timed(analysis["run"], conn, runs)
            expected, hand_s = timed(analysis["handwritten"], conn, runs)
            analysis["check"](expected, found)
            results.append(
                {
                    "analysis": analysis["name"],
                    "headstart_s": engine_s,
                    "sql_s": hand_s,
                    "ratio": engine_s / hand_s,
                }
            )
        conn.close()
    return {
        "persons": persons,
        "events": events,
        "runs": runs,
        "memory_limit": memory_limit,
        "generate_s": generated_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, duckdb {duckdb.__version__}",
        "load_average": os.getloadavg()[0],
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument(
        "--events", type=int, default=10_000_000, help="Events in total, sign-ups included."
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory-limit", default="4GB")
    args = parser.parse_args()
    if args.events <= args.persons:
        parser.error("--events must be larger than --persons (each person has a sign-up event)")
    report = run(args.persons, args.events, args.runs, args.memory_limit)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))
    print(f"{report['persons']:,} persons, {report['events']:,} events; {report['machine']}")
    print(
        f"generated in {report['generate_s']:.1f} s; peak RSS {report['peak_rss_mb']:.0f} MB; "
        f"1-minute load average {report['load_average']:.1f} at the end"
    )
    print("| analysis | headstart s | hand-written SQL s | ratio |")
    print("|---|---:|---:|---:|")
    for row in report["results"]:
        print(
            f"| {row['analysis']} | {row['headstart_s']:.2f} | {row['sql_s']:.2f} | "
            f"{row['ratio']:.2f} |"
        )


def _finite(value: Any) -> float | None:
    return None if value is None or value != value else float(value)


if __name__ == "__main__":
    main()
