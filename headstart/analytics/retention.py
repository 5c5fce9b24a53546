"""Retention: of the persons who started, the share who came back in a given period.

Definitions (docs/analytics.md explains them with examples):

- Entries. With ``start_mode="first"`` each person has one entry, at their first start event,
  or at their sign-up (``persons.signup_at``) when ``start_event`` is None. With
  ``"recurring"`` every distinct instant at which the person did the start event is an entry,
  so one person can be in several cohorts, or several times in one cohort. Entries after
  ``as_of`` or outside [``start_from``, ``start_to``) are left out. ``start_from`` and
  ``start_to`` filter entries; they do not redefine "first": a person whose first start event
  lies before ``start_from`` has no entry.
- Periods. Period n of an entry that starts at instant s is, with ``boundary="rolling"``,
  [s + n * L, s + (n + 1) * L) for L = 24 hours (``interval="day"``) or 7 * 24 hours
  (``"week"``). With ``boundary="calendar"`` it is the n-th local calendar day (or Monday-based
  week) in ``timezone`` after the one containing s. Such a day is 23 or 25 hours long across a
  DST change. Period 0 is the rest of the start's own day or week.
- Returns. A return is an event named in ``return_events`` (any named event when empty) that
  happened strictly after the entry's start instant and at or before ``as_of``. The start
  event itself, and anything at the same microsecond, is never a return.
- Kinds. ``n_day``: returned within period n. ``unbounded``: returned in period n or any
  later one (up to ``as_of``). ``bracket``: returned within any period of [lo, hi].
- Observability. A cell needs its whole period: period n (bracket: period hi; unbounded:
  period n) must have ended by ``as_of``. Entries whose period has not ended are left out of
  both the numerator and the denominator of that cell, and a cell without any observable entry
  is null, never 0. So a partially observed cohort reports the rate over its observable entries
  only; ``observable`` next to ``entries`` says how many those are, and the result carries a
  ``PARTIAL_COHORT`` notice.
- Cohorts. By the local date (in ``timezone``) of the entry's start, truncated to the day,
  the Monday-based week or the month (label: the first day, ``YYYY-MM-DD``); or, with
  ``breakdown``, by a trait value, first-touch channel or experiment variant
  (see ``headstart.analytics.person_groups``). The ``(all)`` row totals every cohort.
- ``as_of`` defaults to the time of the latest event in the warehouse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import duckdb
import pandas as pd

from headstart.analytics.lifecycle_base import (
    LOW_SAMPLE,
    NO_DATA,
    PARTIAL_COHORT,
    UNOBSERVED_CELLS,
    Notice,
    ParamReader,
    Params,
    ParamValue,
    Source,
    check_zone,
    cursor_for,
    listing,
    local_date_sql,
    notices_dict,
    records,
    resolve_as_of,
    share,
)
from headstart.analytics.person_groups import ALL_LABEL, Breakdown, experiment_conflicts, group_sql
from headstart.errors import InvalidInput
from headstart.timeutil import MICROS_PER_DAY, to_iso

RetentionKind = Literal["n_day", "unbounded", "bracket"]
StartMode = Literal["first", "recurring"]
Interval = Literal["day", "week"]
Boundary = Literal["rolling", "calendar"]
CohortUnit = Literal["day", "week", "month"]

MAX_PERIOD = 3650
# The highest period kept in the per-entry bit mask of returns. Bits 0 to 61 keep every
# shift and the widest column mask (62 bits) inside a signed 64-bit integer.
MAX_MASK_PERIOD = 61
# Cohorts with fewer entries than this get a LOW_SAMPLE notice: a rate over fewer than 30
# entries moves by more than 3 points with one person.
LOW_SAMPLE_ENTRIES = 30
_UNBOUNDED_HI = 2**31
_PERIOD_US = {"day": MICROS_PER_DAY, "week": 7 * MICROS_PER_DAY}


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the retention table: returns in periods [lo, hi], complete by ``need``."""

    label: str
    lo: int
    hi: int
    need: int


@dataclass(frozen=True)
class RetentionQuery:
    """Parameters of a retention analysis; the module docstring defines each field."""

    start_event: str | None = None
    start_mode: StartMode = "first"
    return_events: tuple[str, ...] = ()
    kind: RetentionKind = "n_day"
    periods: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    brackets: tuple[tuple[int, int], ...] = ()
    interval: Interval = "day"
    boundary: Boundary = "rolling"
    timezone: str = "UTC"
    cohort: CohortUnit = "week"
    breakdown: Breakdown | None = None
    start_from: int | None = None
    start_to: int | None = None
    as_of: int | None = None

    @classmethod
    def from_params(cls, values: Mapping[str, ParamValue]) -> RetentionQuery:
        """Build a query from text parameters (REST query string, CLI options), validated."""
        read = ParamReader(values)
        by = read.text("by")
        brackets = read.ranges("brackets")
        return cls(
            start_event=read.text("start_event"),
            start_mode=read.text("start_mode") or "first",  # type: ignore[arg-type]
            return_events=read.texts("return_event"),
            kind=read.text("kind") or "n_day",  # type: ignore[arg-type]
            periods=read.integer_list("periods", cls.periods),
            brackets=brackets or (),
            interval=read.text("interval") or "day",  # type: ignore[arg-type]
            boundary=read.text("boundary") or "rolling",  # type: ignore[arg-type]
            timezone=read.text("timezone") or "UTC",
            cohort=read.text("cohort") or "week",  # type: ignore[arg-type]
            breakdown=None if by is None else Breakdown.parse(by),
            start_from=read.instant("start_from"),
            start_to=read.instant("start_to"),
            as_of=read.instant("as_of"),
        ).validate()

    def validate(self) -> RetentionQuery:
        """Return the query with sorted periods; raise InvalidInput naming the bad field."""
        _check_choice("kind", self.kind, ("n_day", "unbounded", "bracket"))
        _check_choice("start_mode", self.start_mode, ("first", "recurring"))
        _check_choice("interval", self.interval, ("day", "week"))
        _check_choice("boundary", self.boundary, ("rolling", "calendar"))
        _check_choice("cohort", self.cohort, ("day", "week", "month"))
        check_zone(self.timezone, "timezone")

        if self.start_mode == "recurring" and self.start_event is None:
            raise InvalidInput(
                "start_mode=recurring needs a start_event: a sign-up happens once per person"
            )
        for name in (self.start_event, *self.return_events):
            if name is not None and not name.strip():
                raise InvalidInput("event names must not be empty; omit the field for the default")
        if (
            self.start_from is not None
            and self.start_to is not None
            and self.start_from >= self.start_to
        ):
            raise InvalidInput(
                f"start_from ({to_iso(self.start_from)}) must be before start_to "
                f"({to_iso(self.start_to)})"
            )

        if self.kind == "bracket":
            return self._validated_brackets()
        if self.brackets:
            raise InvalidInput("brackets apply only to kind=bracket; use periods for this kind")
        periods = tuple(sorted(set(self.periods)))
        if not periods:
            raise InvalidInput("periods must list at least one period, e.g. 0,1,7,30")
        _check_period_range("periods", periods)
        return replace(self, periods=periods)

    def _validated_brackets(self) -> RetentionQuery:
        if not self.brackets:
            raise InvalidInput("kind=bracket needs brackets, e.g. 1-1,2-7,8-30")
        for lo, hi in self.brackets:
            if lo > hi:
                raise InvalidInput(
                    f"bracket {lo}-{hi} ends before it starts; write it as {hi}-{lo}"
                )
            _check_period_range("brackets", (lo, hi))
        if len(set(self.brackets)) != len(self.brackets):
            raise InvalidInput("brackets lists the same bracket twice; list each once")
        return self

    def columns(self) -> list[Column]:
        unit = self.interval
        if self.kind == "bracket":
            return [Column(f"{unit}s {lo}-{hi}", lo, hi, hi) for lo, hi in self.brackets]
        if self.kind == "unbounded":
            return [Column(f"{unit} {n}+", n, _UNBOUNDED_HI, n) for n in self.periods]
        return [Column(f"{unit} {n}", n, n, n) for n in self.periods]

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_event": self.start_event,
            "start": "sign-up" if self.start_event is None else self.start_event,
            "start_mode": self.start_mode,
            "return_events": list(self.return_events) or "any event",
            "kind": self.kind,
            "periods": list(self.periods) if self.kind != "bracket" else None,
            "brackets": [list(b) for b in self.brackets] or None,
            "interval": self.interval,
            "boundary": self.boundary,
            "timezone": self.timezone,
            "cohort": self.breakdown.label() if self.breakdown else self.cohort,
            "start_from": to_iso(self.start_from),
            "start_to": to_iso(self.start_to),
            "return_rule": "a matching event strictly after the entry's start, at or before as_of",
            "observability": (
                "a cell counts only entries whose period has ended by as_of; "
                "a cell with no such entry is null"
            ),
        }


@dataclass
class RetentionResult:
    """Retention cells in long form, one row per cohort and column, plus notices.

    ``cells`` columns: cohort, column, lo, hi, entries, persons, observable, retained, rate.
    ``rate`` is NaN where ``observable`` is 0.
    """

    query: RetentionQuery
    as_of: int | None
    cells: pd.DataFrame
    notices: list[Notice] = field(default_factory=list)

    def matrix(self) -> pd.DataFrame:
        """Return rates as cohorts x columns, in query order; unobservable cells are NaN."""
        if self.cells.empty:
            return pd.DataFrame()
        labels = [column.label for column in self.query.columns()]
        table = self.cells.pivot(index="cohort", columns="column", values="rate")
        cohorts = list(dict.fromkeys(self.cells["cohort"]))
        return table.reindex(index=cohorts, columns=labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "analysis": "retention",
            "as_of": to_iso(self.as_of),
            "definition": self.query.to_dict(),
            "columns": [column.label for column in self.query.columns()],
            "cells": records(self.cells),
            **notices_dict(self.notices),
        }


CELL_COLUMNS = [
    "cohort",
    "column",
    "lo",
    "hi",
    "entries",
    "persons",
    "observable",
    "retained",
    "rate",
]


def run_retention(source: Source, query: RetentionQuery) -> RetentionResult:
    """Compute the retention table of ``query`` over the warehouse ``source``."""
    with cursor_for(source) as conn:
        return _retention(conn, query)


def _retention(conn: duckdb.DuckDBPyConnection, query: RetentionQuery) -> RetentionResult:
    query = query.validate()
    as_of = resolve_as_of(conn, query.as_of)
    if as_of is None:
        return _empty(query, None, "the warehouse holds no events yet")

    sql, params = _retention_sql(query, as_of)
    rows = conn.execute(sql, params.values).fetchall()
    cells = _assemble(query, rows)
    if cells.empty:
        return _empty(query, as_of, "no entries: nobody did the start event before as_of")

    notices = _notices(cells)
    if query.breakdown is not None:
        conflict = experiment_conflicts(conn, query.breakdown, as_of)
        if conflict is not None:
            notices.append(conflict)
    return RetentionResult(query, as_of, cells, notices)


def _empty(query: RetentionQuery, as_of: int | None, reason: str) -> RetentionResult:
    frame = pd.DataFrame({name: [] for name in CELL_COLUMNS})
    return RetentionResult(query, as_of, frame, [Notice(NO_DATA, reason)])


def _retention_sql(query: RetentionQuery, as_of: int) -> tuple[str, Params]:
    params = Params()
    as_of_param = params.add(as_of)
    columns = query.columns()
    cap = max(column.need for column in columns) + 1
    zone = query.timezone
    calendar = query.boundary == "calendar"

    entries = f"""
        SELECT row_number() OVER () AS entry_id, person_id, s, epoch_us(s) AS s_us,
               {local_date_sql("s", zone)} AS s_date
        FROM ({_start_sql(query, params, as_of_param)})
        WHERE s <= make_timestamp({as_of_param}) {_start_window_sql(query, params)}
    """
    group_join = ""
    if query.breakdown is not None:
        group_join = (
            f"LEFT JOIN ({group_sql(query.breakdown, params, as_of_param)}) g USING (person_id)"
        )
    as_of_date = local_date_sql(f"make_timestamp({as_of_param})", zone)
    returns_filter = _event_filter(query.return_events, params)
    return_date = f", {local_date_sql('ts', zone)} AS t_date" if calendar else ""
    columns_sql = ", ".join(f"({i}, {c.lo}, {c.hi})" for i, c in enumerate(columns))
    sql = f"""
        WITH entries AS MATERIALIZED ({entries}),
        labelled AS MATERIALIZED (
            SELECT e.entry_id, e.person_id, e.s, e.s_us, e.s_date,
                   {_cohort_sql(query)} AS cohort,
                   least({_observed_sql(query, as_of_param, as_of_date)}, {cap}) AS obs
            FROM entries e {group_join}
        ),
        returns AS (
            SELECT person_id, ts, epoch_us(ts) AS t_us {return_date}
            FROM events
            WHERE ts <= make_timestamp({as_of_param}) AND {returns_filter}
        ),
        hits AS ({_hits_sql(query, columns)}),
        cols(col, lo, hi) AS (VALUES {columns_sql})
        SELECT 'size' AS kind, cohort, NULL AS col, obs, count(*) AS n
        FROM labelled GROUP BY cohort, obs
        UNION ALL
        SELECT 'hit', e.cohort, c.col, e.obs, {_hit_count_sql(query, columns)}
        FROM hits h
        JOIN labelled e USING (entry_id)
        JOIN cols c ON {_hit_test_sql(query, columns)}
        GROUP BY e.cohort, c.col, e.obs
        UNION ALL
        SELECT 'persons', cohort, NULL, NULL, count(DISTINCT person_id)
        FROM labelled GROUP BY GROUPING SETS ((cohort), ())
    """
    return sql, params


def _start_sql(query: RetentionQuery, params: Params, as_of_param: str) -> str:
    if query.start_event is None:
        return "SELECT person_id, signup_at AS s FROM persons WHERE signup_at IS NOT NULL"
    event = params.add(query.start_event)
    if query.start_mode == "first":
        return (
            f"SELECT person_id, min(ts) AS s FROM events WHERE event = {event} GROUP BY person_id"
        )
    return (
        f"SELECT DISTINCT person_id, ts AS s FROM events WHERE event = {event}"
        f" AND ts <= make_timestamp({as_of_param})"
    )


def _start_window_sql(query: RetentionQuery, params: Params) -> str:
    conditions = ""
    if query.start_from is not None:
        conditions += f" AND s >= make_timestamp({params.add(query.start_from)})"
    if query.start_to is not None:
        conditions += f" AND s < make_timestamp({params.add(query.start_to)})"
    return conditions


def _event_filter(names: tuple[str, ...], params: Params) -> str:
    if not names:
        return "event IS NOT NULL"
    placeholders = ", ".join(params.add(name) for name in names)
    return f"event IN ({placeholders})"


def _cohort_sql(query: RetentionQuery) -> str:
    if query.breakdown is not None:
        missing = query.breakdown.missing_label().replace("'", "''")
        return f"coalesce(g.grp, '{missing}')"
    return f"strftime(CAST(date_trunc('{query.cohort}', e.s_date) AS DATE), '%Y-%m-%d')"


def _observed_sql(query: RetentionQuery, as_of_param: str, as_of_date: str) -> str:
    """Return SQL for the number of whole periods of an entry that ended by as_of."""
    if query.boundary == "rolling":
        return f"({as_of_param} - e.s_us) // {_PERIOD_US[query.interval]}"
    if query.interval == "day":
        return f"date_diff('day', e.s_date, {as_of_date})"
    return f"date_diff('day', CAST(date_trunc('week', e.s_date) AS DATE), {as_of_date}) // 7"


def _period_index_sql(query: RetentionQuery) -> str:
    """Return SQL for the period of return r relative to entry e (both non-negative)."""
    if query.boundary == "rolling":
        return f"(r.t_us - e.s_us) // {_PERIOD_US[query.interval]}"
    if query.interval == "day":
        return "date_diff('day', e.s_date, r.t_date)"
    return "date_diff('day', CAST(date_trunc('week', e.s_date) AS DATE), r.t_date) // 7"


def _hits_sql(query: RetentionQuery, columns: list[Column]) -> str:
    """Return SQL for the periods in which each entry returned.

    Unbounded retention needs only the latest period, so each entry keeps one row with
    ``idx``. Periods up to ``MAX_MASK_PERIOD`` are folded into one bit mask per entry
    (``mask``, bit n set when the entry returned in period n), because grouping by entry is
    cheaper than keeping each distinct (entry, period) pair, which later periods still need.
    """
    idx = _period_index_sql(query)
    join = "FROM labelled e JOIN returns r ON r.person_id = e.person_id AND r.ts > e.s"
    if query.kind == "unbounded":
        return f"SELECT e.entry_id, max({idx}) AS idx {join} GROUP BY e.entry_id"
    max_hi = max(column.hi for column in columns)
    if query.boundary == "rolling":
        join += f" AND r.t_us < e.s_us + {(max_hi + 1) * _PERIOD_US[query.interval]}"
    if max_hi <= MAX_MASK_PERIOD:
        return (
            f"SELECT e.entry_id, bit_or(CAST(1 AS BIGINT) << {idx}) AS mask {join}"
            f" AND {idx} <= {max_hi} GROUP BY e.entry_id"
        )
    return f"SELECT DISTINCT e.entry_id, {idx} AS idx {join} AND {idx} <= {max_hi}"


def _uses_mask(query: RetentionQuery, columns: list[Column]) -> bool:
    return query.kind != "unbounded" and max(c.hi for c in columns) <= MAX_MASK_PERIOD


def _hit_test_sql(query: RetentionQuery, columns: list[Column]) -> str:
    """Return SQL that is true when hit row h counts for column c."""
    if _uses_mask(query, columns):
        return "(h.mask >> c.lo) & ((CAST(1 AS BIGINT) << (c.hi - c.lo + 1)) - 1) <> 0"
    return "h.idx BETWEEN c.lo AND c.hi"


def _hit_count_sql(query: RetentionQuery, columns: list[Column]) -> str:
    """Return SQL counting entries per group: one row per entry, except on the pairs path."""
    if query.kind == "unbounded" or _uses_mask(query, columns):
        return "count(*)"
    return "count(DISTINCT e.entry_id)"


def _assemble(query: RetentionQuery, rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """Turn the aggregate rows into cells: sum entries over obs > need per cohort and column."""
    columns = query.columns()
    sizes: dict[str, dict[int, int]] = {}
    hits: dict[tuple[str, int], dict[int, int]] = {}
    persons: dict[str | None, int] = {}
    for kind, cohort, col, obs, n in rows:
        if kind == "size":
            sizes.setdefault(cohort, {})[int(obs)] = int(n)
        elif kind == "hit":
            bucket = hits.setdefault((cohort, int(col)), {})
            bucket[int(obs)] = bucket.get(int(obs), 0) + int(n)
        else:
            persons[cohort] = int(n)
    if not sizes:
        return pd.DataFrame({name: [] for name in CELL_COLUMNS})

    cohorts = sorted(sizes)
    out: list[dict[str, Any]] = []
    for cohort in [*cohorts, None]:
        size_by_obs = _merged(sizes, cohorts) if cohort is None else sizes[cohort]
        entries = sum(size_by_obs.values())
        for index, column in enumerate(columns):
            if cohort is None:
                hit_by_obs = _merged(hits, [(c, index) for c in cohorts])
            else:
                hit_by_obs = hits.get((cohort, index), {})
            observable = sum(n for obs, n in size_by_obs.items() if obs > column.need)
            retained = sum(n for obs, n in hit_by_obs.items() if obs > column.need)
            out.append(
                {
                    "cohort": ALL_LABEL if cohort is None else cohort,
                    "column": column.label,
                    "lo": column.lo,
                    "hi": None if column.hi == _UNBOUNDED_HI else column.hi,
                    "entries": entries,
                    "persons": persons.get(cohort, 0),
                    "observable": observable,
                    "retained": retained,
                    "rate": share(retained, observable),
                }
            )
    frame = pd.DataFrame(out, columns=CELL_COLUMNS)
    frame["rate"] = frame["rate"].astype(float)
    frame["hi"] = frame["hi"].astype("Int64")
    return frame


def _merged(table: dict[Any, dict[int, int]], keys: list[Any]) -> dict[int, int]:
    total: dict[int, int] = {}
    for key in keys:
        for obs, n in table.get(key, {}).items():
            total[obs] = total.get(obs, 0) + n
    return total


def _notices(cells: pd.DataFrame) -> list[Notice]:
    notices: list[Notice] = []
    cohorts = cells[cells["cohort"] != ALL_LABEL]
    unobserved = int((cohorts["observable"] == 0).sum())
    if unobserved:
        notices.append(
            Notice(
                UNOBSERVED_CELLS,
                f"{unobserved} cells are null: their period had not ended for any entry by as_of",
            )
        )
    partial = cohorts[(cohorts["observable"] > 0) & (cohorts["observable"] < cohorts["entries"])]
    if not partial.empty:
        names = ", ".join(dict.fromkeys(partial["cohort"]))
        notices.append(
            Notice(
                PARTIAL_COHORT,
                f"{len(partial)} cells of cohorts {names} are partly observed: their rate "
                "counts only the entries whose period ended by as_of (see observable)",
            )
        )
    sizes = cohorts.drop_duplicates("cohort")
    small = sizes[sizes["entries"] < LOW_SAMPLE_ENTRIES]
    if not small.empty:
        notices.append(
            Notice(
                LOW_SAMPLE,
                f"{len(small)} cohorts have fewer than {LOW_SAMPLE_ENTRIES} entries: "
                + listing([f"{row.cohort} ({row.entries})" for row in small.itertuples()]),
            )
        )
    return notices


def _check_choice(field_name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidInput(f"{field_name}={value!r} is not valid; use one of {', '.join(allowed)}")


def _check_period_range(field_name: str, values: tuple[int, ...]) -> None:
    for value in values:
        if not 0 <= value <= MAX_PERIOD:
            raise InvalidInput(f"{field_name} contains {value}; periods run from 0 to {MAX_PERIOD}")
