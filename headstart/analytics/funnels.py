"""Funnels over the warehouse: per-step counts, conversion, drop-off, time to convert, persons.

``run_funnel`` builds one row per counting unit with ``sql_funnel.FunnelSql`` into a temporary
table, then aggregates it. The semantics of every ``FunnelSpec`` field are documented there and
in ``docs/analytics.md``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd

from headstart.analytics.segments import find_segment, segment_sql
from headstart.analytics.sql_funnel import FunnelSql, breakdown_columns
from headstart.analytics.warehouse import Warehouse, resolve_as_of
from headstart.errors import InvalidInput
from headstart.plan.analytics import FunnelSpec, SegmentSpec
from headstart.timeutil import MICROS_PER_SECOND, to_iso

# Below this many entered units a result carries LOW_SAMPLE: a rule of thumb, not a test.
MIN_SAMPLE = 30

# Buckets of the time from the previous step, as (lower, upper) seconds, upper exclusive.
TIME_BUCKETS: tuple[tuple[float, float, str], ...] = (
    (0, 60, "< 1m"),
    (60, 300, "1-5m"),
    (300, 900, "5-15m"),
    (900, 3600, "15-60m"),
    (3600, 4 * 3600, "1-4h"),
    (4 * 3600, 86_400, "4-24h"),
    (86_400, 3 * 86_400, "1-3d"),
    (3 * 86_400, 7 * 86_400, "3-7d"),
    (7 * 86_400, 14 * 86_400, "7-14d"),
    (14 * 86_400, 30 * 86_400, "14-30d"),
    (30 * 86_400, math.inf, ">= 30d"),
)

# The columns of ``FunnelResult.steps``, in order.
STEP_COLUMNS = [
    "step",
    "label",
    "event",
    "units",
    "conversion",
    "from_previous",
    "dropped",
    "in_progress",
    "median_s_from_previous",
    "median_s_from_entry",
]

Source = Warehouse | duckdb.DuckDBPyConnection
PersonStatus = Literal["reached", "dropped"]


@dataclass(frozen=True)
class PersonSelection:
    """A selection of units to list: those that ``reached`` step ``step`` or ``dropped`` after it."""

    step: int
    status: PersonStatus = "reached"
    limit: int = 1000


@dataclass
class FunnelResult:
    """A funnel's numbers. ``codes`` lists conditions such as ``NO_DATA`` and ``LOW_SAMPLE``."""

    spec: FunnelSpec
    as_of: int
    entered: int
    excluded: int
    steps: pd.DataFrame
    times: pd.DataFrame
    breakdown: pd.DataFrame | None = None
    persons: pd.DataFrame | None = None
    codes: list[str] = field(default_factory=list)

    @property
    def unit(self) -> str:
        return "+".join(["person", *self.spec.hold_constant])

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready data."""
        return {
            "spec": self.spec.model_dump(mode="json", by_alias=True),
            "as_of": to_iso(self.as_of),
            "unit": self.unit,
            "entered": self.entered,
            "excluded": self.excluded,
            "codes": self.codes,
            "steps": records(self.steps),
            "times": records(self.times),
            "breakdown": None if self.breakdown is None else records(self.breakdown),
            "persons": None if self.persons is None else records(self.persons),
        }


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Return a DataFrame's rows as dicts of plain Python values, with None for missing."""
    rows = []
    for row in frame.to_dict(orient="records"):
        rows.append({str(name): _plain(value) for name, value in row.items()})
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp):
        # Warehouse times are naive UTC; write them as every other instant of the API is.
        utc = value.tz_convert("UTC") if value.tzinfo is not None else value
        return to_iso(utc.value // 1000)
    return value


def run_funnel(
    source: Source,
    spec: FunnelSpec,
    *,
    as_of: int | None = None,
    segments: Sequence[SegmentSpec] = (),
    persons: PersonSelection | None = None,
) -> FunnelResult:
    """Compute ``spec`` over the warehouse as of ``as_of`` (UTC µs).

    ``as_of`` defaults to the latest event time in the warehouse. It decides which dropped units are still in their window (``in_progress``) and
    the instant segment breakdowns are evaluated at; events after it still count.
    """
    moment = resolve_as_of(_conn(source), as_of)
    if persons is not None:
        _check_selection(spec, persons)
    sql = _funnel_sql(spec, segments, moment)
    if persons is None and sql.summarizable:
        return _summarize(_conn(source), sql, moment)
    with units_table(source, spec, as_of=moment, segments=segments) as units:
        return _aggregate(units.cursor, units.table, units.sql, moment, persons)


@dataclass(frozen=True)
class UnitsTable:
    """A temporary table of a funnel's units, on its own cursor."""

    cursor: duckdb.DuckDBPyConnection
    table: str
    sql: FunnelSql


@contextmanager
def units_table(
    source: Source, spec: FunnelSpec, *, as_of: int, segments: Sequence[SegmentSpec] = ()
) -> Iterator[UnitsTable]:
    """Build the per-unit table of ``spec`` in a temporary table, dropped on exit.

    The table lives on a new cursor of the connection, so concurrent analyses do not see
    each other's tables.
    """
    sql = _funnel_sql(spec, segments, as_of)
    cursor = _conn(source).cursor()
    table = f"funnel_units_{uuid.uuid4().hex}"
    try:
        cursor.execute(f"CREATE TEMP TABLE {table} AS {sql.units_sql()}")
        yield UnitsTable(cursor, table, sql)
    finally:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")
        cursor.close()


def funnel_units(
    source: Source,
    spec: FunnelSpec,
    *,
    as_of: int | None = None,
    segments: Sequence[SegmentSpec] = (),
) -> pd.DataFrame:
    """Return one row per counting unit: its depth, step times (UTC µs) and breakdown values.

    Units disqualified by an exclusion are included with ``excluded`` true. ``t<k>`` is the
    time step k was reached (NULL when it was not) and ``window_ends_at`` the end of the
    unit's conversion window.
    """
    moment = resolve_as_of(_conn(source), as_of)
    sql = _funnel_sql(spec, segments, moment)
    times = [f"epoch_us(t{step}) AS t{step}" for step in range(1, sql.steps + 1)]
    columns = [*sql.unit_columns(), "depth", "excluded", *times]
    columns += ["epoch_us(deadline) AS window_ends_at", *breakdown_columns(sql)]
    cursor = _conn(source).cursor()
    try:
        frame = cursor.execute(
            f"SELECT {', '.join(columns)} FROM ({sql.units_sql()}) ORDER BY ALL"
        ).df()
    finally:
        cursor.close()
    for step in range(1, sql.steps + 1):
        frame[f"t{step}"] = frame[f"t{step}"].astype("Int64")
    return frame


def _conn(source: Source) -> duckdb.DuckDBPyConnection:
    return source.conn if isinstance(source, Warehouse) else source


def _funnel_sql(spec: FunnelSpec, segments: Sequence[SegmentSpec], as_of: int) -> FunnelSql:
    segment = None
    if spec.breakdown is not None and spec.breakdown.by == "segment":
        segment = segment_sql(find_segment(segments, spec.breakdown.key), as_of)
    return FunnelSql(spec, segment)


def _check_selection(spec: FunnelSpec, persons: PersonSelection) -> None:
    last = len(spec.steps) - (1 if persons.status == "dropped" else 0)
    if not 1 <= persons.step <= last:
        raise InvalidInput(
            f"persons step {persons.step} is out of range; expected 1 to {last} for "
            f"status {persons.status!r} in a {len(spec.steps)}-step funnel"
        )
    if persons.limit < 1:
        raise InvalidInput(f"persons limit {persons.limit} must be at least 1")


def _aggregate(
    cursor: duckdb.DuckDBPyConnection,
    table: str,
    sql: FunnelSql,
    as_of: int,
    persons: PersonSelection | None,
) -> FunnelResult:
    spec = sql.spec
    counts = cursor.execute(
        f"SELECT count(*), count(*) FILTER (WHERE excluded) FROM {table}"
    ).fetchone()
    entered, excluded = (int(counts[0]), int(counts[1])) if counts is not None else (0, 0)
    grouped = cursor.execute(_step_stats_sql(table, sql, as_of)).df()
    overall = grouped[grouped["overall"]].drop(columns=["overall", "b"])
    steps = _step_frame(spec, overall)
    breakdown = None
    if spec.breakdown is not None:
        breakdown = _breakdown_frame(spec, grouped[~grouped["overall"]])
    times = _times_frame(spec, cursor.execute(_histogram_sql(table, sql)).df())
    listed = None
    if persons is not None:
        listed = cursor.execute(_persons_sql(table, sql, as_of, persons)).df()
    codes = _sample_codes(entered - excluded)
    return FunnelResult(spec, as_of, entered, excluded, steps, times, breakdown, listed, codes)


def _summarize(conn: duckdb.DuckDBPyConnection, sql: FunnelSql, as_of: int) -> FunnelResult:
    """Compute the result of a ``summarizable`` spec from one aggregate query."""
    spec = sql.spec
    edges = [round(lower * MICROS_PER_SECOND) for lower, _, _ in TIME_BUCKETS]
    cursor = conn.cursor()
    try:
        found = cursor.execute(sql.summary_sql(as_of, edges)).df()
    finally:
        cursor.close()

    by_step = {int(row["step"]): row for row in found.to_dict(orient="records")}
    rows = []
    histogram = []
    for step in range(1, len(spec.steps) + 1):
        rows.append(_summary_row(by_step, step))
        row = by_step.get(step)
        if step > 1 and row is not None:
            histogram += [
                {"step": step, "bucket": index, "units": int(row[f"bucket{index}"])}
                for index in range(len(TIME_BUCKETS))
            ]

    steps = _step_frame(spec, pd.DataFrame(rows))
    times = _times_frame(spec, pd.DataFrame(histogram, columns=["step", "bucket", "units"]))
    entered = int(steps["units"].iloc[0])
    return FunnelResult(spec, as_of, entered, 0, steps, times, None, None, _sample_codes(entered))


def _summary_row(by_step: dict[int, dict[str, Any]], step: int) -> dict[str, Any]:
    """Turn one row of ``summary_sql`` into the stats ``_step_frame`` expects."""
    row = by_step.get(step)
    # Units still inside their window that reached the previous step but not this one.
    previous_open = int(by_step[step - 1]["open"]) if step > 1 and step - 1 in by_step else 0
    if row is None:
        return {
            "step": step,
            "units": 0,
            "median_previous_us": None,
            "median_entry_us": None,
            "in_progress": previous_open,
        }
    return {
        "step": step,
        "units": row["units"],
        "median_previous_us": row["median_previous_us"],
        "median_entry_us": row["median_entry_us"],
        "in_progress": previous_open - int(row["open"]),
    }


def _sample_codes(units: int) -> list[str]:
    if units == 0:
        return ["NO_DATA"]
    if units < MIN_SAMPLE:
        return ["LOW_SAMPLE"]
    return []


def _value_at(sql: FunnelSql, step: str, prefix: str = "") -> str:
    """Return SQL for a unit's breakdown value at step number expression ``step``."""
    if not breakdown_columns(sql):
        return "NULL::VARCHAR"
    if not sql.per_step:
        return f"{prefix}b"
    cases = " ".join(f"WHEN {index} THEN {prefix}b{index}" for index in range(1, sql.steps + 1))
    return f"(CASE {step} {cases} END)"


def _step_rows_sql(table: str, sql: FunnelSql) -> str:
    """Return SQL with one row per (unit, reached step) and its times from the previous step
    and from the entry."""
    parts = []
    for step in range(1, sql.steps + 1):
        value = _value_at(sql, str(step))
        if step == 1:
            previous, entry = "NULL::BIGINT", "0::BIGINT"
        else:
            previous = f"epoch_us(t{step}) - epoch_us(t{step - 1})"
            entry = f"epoch_us(t{step}) - epoch_us(t1)"
        parts.append(
            f"SELECT {step} AS step, {value} AS b, {previous} AS from_previous,"
            f" {entry} AS from_entry FROM {table} WHERE NOT excluded AND t{step} IS NOT NULL"
        )
    return " UNION ALL ".join(parts)


def _step_stats_sql(table: str, sql: FunnelSql, as_of: int) -> str:
    """Units, median times and open windows per step, overall and per breakdown value."""
    reached = (
        f"SELECT step, b, grouping(b) = 1 AS overall, count(*) AS units,"
        f" median(from_previous) AS median_previous_us, median(from_entry) AS median_entry_us"
        f" FROM ({_step_rows_sql(table, sql)}) GROUP BY GROUPING SETS ((step), (step, b))"
    )
    # A unit that stopped at step d dropped at step d + 1. It is in progress when its window
    # has not ended by as_of, so it may still convert.
    stalled = (
        f"SELECT depth + 1 AS step, b, grouping(b) = 1 AS overall,"
        f" count(*) FILTER (WHERE deadline > make_timestamp({as_of})) AS in_progress"
        f" FROM (SELECT depth, deadline, {_value_at(sql, 'depth')} AS b FROM {table}"
        f" WHERE NOT excluded AND depth < {sql.steps})"
        f" GROUP BY GROUPING SETS ((depth), (depth, b))"
    )
    return (
        f"SELECT coalesce(r.step, s.step) AS step, coalesce(r.b, s.b) AS b,"
        f" coalesce(r.overall, s.overall) AS overall, coalesce(r.units, 0) AS units,"
        f" r.median_previous_us, r.median_entry_us, coalesce(s.in_progress, 0) AS in_progress"
        f" FROM ({reached}) r FULL OUTER JOIN ({stalled}) s ON s.step = r.step"
        f" AND s.overall = r.overall AND s.b IS NOT DISTINCT FROM r.b ORDER BY 1"
    )


def _histogram_sql(table: str, sql: FunnelSql) -> str:
    bucket = " ".join(
        f"WHEN from_previous < {upper * MICROS_PER_SECOND:.0f} THEN {index}"
        for index, (_, upper, _) in enumerate(TIME_BUCKETS[:-1])
    )
    last = len(TIME_BUCKETS) - 1
    return (
        f"SELECT step, CASE {bucket} ELSE {last} END AS bucket, count(*) AS units"
        f" FROM ({_step_rows_sql(table, sql)}) WHERE step > 1 GROUP BY ALL ORDER BY ALL"
    )


def _persons_sql(table: str, sql: FunnelSql, as_of: int, selection: PersonSelection) -> str:
    steps = sql.steps
    wanted = (
        f"depth >= {selection.step}"
        if selection.status == "reached"
        else f"depth = {selection.step}"
    )
    last_time = " ".join(f"WHEN {step} THEN u.t{step}" for step in range(1, steps + 1))
    columns = ["u.person_id", "p.user_id", *[f"u.{name}" for name in sql.held]]
    columns += [
        "u.depth AS reached_step",
        "u.t1 AS entered_at",
        f"CASE u.depth {last_time} END AS last_step_at",
        "u.deadline AS window_ends_at",
        f"u.depth < {steps} AND u.deadline > make_timestamp({as_of}) AS in_progress",
    ]
    if breakdown_columns(sql):
        columns.append(f"{_value_at(sql, 'u.depth', 'u.')} AS breakdown")
    return (
        f"SELECT {', '.join(columns)} FROM {table} u LEFT JOIN persons p"
        f" ON p.person_id = u.person_id WHERE NOT u.excluded AND {wanted}"
        f" ORDER BY u.t1, u.person_id LIMIT {selection.limit}"
    )


def _labels(spec: FunnelSpec) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "step": range(1, len(spec.steps) + 1),
            "label": [step.title() for step in spec.steps],
            "event": [step.event for step in spec.steps],
        }
    )


def _seconds(micros: Any) -> float | None:
    if micros is None or (isinstance(micros, float) and math.isnan(micros)):
        return None
    return float(micros) / MICROS_PER_SECOND


def _step_frame(spec: FunnelSpec, stats: pd.DataFrame) -> pd.DataFrame:
    """Join per-step stats to the step list and derive conversion and drop-off."""
    frame = _labels(spec).merge(stats, on="step", how="left")
    frame["units"] = frame["units"].fillna(0).astype(int)
    frame["in_progress"] = frame["in_progress"].fillna(0).astype(int)
    frame.loc[0, "in_progress"] = 0

    first = int(frame["units"].iloc[0])
    previous = frame["units"].shift(1)
    frame["conversion"] = [_ratio(units, first) for units in frame["units"]]
    frame["from_previous"] = [
        None if index == 0 else _ratio(units, int(previous.iloc[index]))
        for index, units in enumerate(frame["units"])
    ]
    dropped = [
        None if index == 0 else int(previous.iloc[index]) - int(units)
        for index, units in enumerate(frame["units"])
    ]
    frame["dropped"] = pd.array(dropped, dtype="Int64")

    frame["median_s_from_previous"] = [_seconds(value) for value in frame["median_previous_us"]]
    frame["median_s_from_entry"] = [_seconds(value) for value in frame["median_entry_us"]]
    return frame[STEP_COLUMNS]


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def _breakdown_frame(spec: FunnelSpec, stats: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for value in sorted(stats["b"].dropna().unique()):
        group = stats[stats["b"] == value].drop(columns=["overall", "b"])
        frame = _step_frame(spec, group)
        frame.insert(0, "breakdown", value)
        entered = int(frame["units"].iloc[0])
        frame["code"] = "LOW_SAMPLE" if entered < MIN_SAMPLE else None
        frames.append(frame)
    columns = ["breakdown", *_step_frame(spec, stats.iloc[0:0]).columns, "code"]
    rows = [row for frame in frames for row in frame.to_dict(orient="records")]
    return pd.DataFrame(rows, columns=columns)


def _times_frame(spec: FunnelSpec, counts: pd.DataFrame) -> pd.DataFrame:
    rows = []
    found = {(int(row.step), int(row.bucket)): int(row.units) for row in counts.itertuples()}
    for step in range(2, len(spec.steps) + 1):
        for index, (lower, upper, label) in enumerate(TIME_BUCKETS):
            rows.append(
                {
                    "step": step,
                    "label": spec.steps[step - 1].title(),
                    "bucket": label,
                    "lower_s": lower,
                    "upper_s": None if math.isinf(upper) else upper,
                    "units": found.get((step, index), 0),
                }
            )
    return pd.DataFrame(rows, columns=["step", "label", "bucket", "lower_s", "upper_s", "units"])
