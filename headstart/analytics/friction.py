"""Friction points: what units that dropped after a funnel step did next, against converters.

For step k of a funnel, two groups of counting units:

- ``dropped``: reached step k, not step k + 1, and their conversion window has ended by
  ``as_of`` (units still inside their window are left out: they have not dropped yet);
- ``converted``: reached step k + 1.

For each unit the person's tracked events after the step-k event are collected (events of
the person, whatever their held-constant values). ``mode="between"`` takes every event before
the step-(k+1) event (converters) or before the window ends (dropped units). ``mode="next"``
takes only the first event after step k, within the window, which for a converter may be the
step-(k+1) event itself. Each event name then gets the share of each group that did it and
the lift, the dropped share divided by the converted share. ``(no event)`` counts the units
that did nothing in that span.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from headstart.analytics.funnels import MIN_SAMPLE, Source, records, units_table
from headstart.analytics.sql_funnel import event_key
from headstart.analytics.warehouse import Warehouse, resolve_as_of
from headstart.errors import InvalidInput
from headstart.plan.analytics import FunnelSpec, SegmentSpec
from headstart.timeutil import to_iso

FrictionMode = Literal["between", "next"]
NO_EVENT = "(no event)"
# Event names that look like failures, flagged so that errors stand out in the table.
ERROR_PATTERN = re.compile(r"error|fail|exception|crash|invalid|timeout|denied", re.IGNORECASE)
COLUMNS = [
    "event",
    "dropped_units",
    "dropped_share",
    "converted_units",
    "converted_share",
    "lift",
    "error_like",
]


@dataclass
class FrictionResult:
    """The events after step ``step``, per group, with ``codes`` such as ``LOW_SAMPLE``."""

    spec: FunnelSpec
    step: int
    mode: FrictionMode
    as_of: int
    dropped: int
    converted: int
    events: pd.DataFrame
    codes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.model_dump(mode="json", by_alias=True),
            "step": self.step,
            "mode": self.mode,
            "as_of": to_iso(self.as_of),
            "dropped": self.dropped,
            "converted": self.converted,
            "codes": self.codes,
            "events": records(self.events),
        }


def friction_points(
    source: Source,
    spec: FunnelSpec,
    step: int,
    *,
    mode: FrictionMode = "between",
    as_of: int | None = None,
    segments: Sequence[SegmentSpec] = (),
) -> FrictionResult:
    """Compare what dropped units and converters did after step ``step`` of ``spec``."""
    if not 1 <= step < len(spec.steps):
        raise InvalidInput(
            f"friction step {step} is out of range; expected 1 to {len(spec.steps) - 1}, "
            "a step that has a next step"
        )
    moment = resolve_as_of(source.conn if isinstance(source, Warehouse) else source, as_of)
    with units_table(source, spec, as_of=moment, segments=segments) as units:
        cursor = units.cursor
        cursor.execute(_groups_sql(units.table, step, moment))
        span = _span_sql(mode)
        sizes = cursor.execute(
            "SELECT count(*) FILTER (WHERE NOT converted), count(*) FILTER (WHERE converted)"
            " FROM friction_groups"
        ).fetchone()
        active = cursor.execute(
            "SELECT count(DISTINCT unit) FILTER (WHERE NOT converted),"
            f" count(DISTINCT unit) FILTER (WHERE converted) FROM ({span})"
        ).fetchone()
        counts = cursor.execute(_counts_sql(span, mode)).fetchall()
        cursor.execute("DROP TABLE friction_groups")
    dropped, converted = _pair(sizes)
    frame = _frame(counts, (dropped, converted), _pair(active))
    codes = []
    if dropped == 0:
        codes.append("NO_DATA")
    elif dropped < MIN_SAMPLE or converted < MIN_SAMPLE:
        codes.append("LOW_SAMPLE")
    return FrictionResult(spec, step, mode, moment, dropped, converted, frame, codes)


def _pair(row: tuple[Any, ...] | None) -> tuple[int, int]:
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def _groups_sql(table: str, step: int, as_of: int) -> str:
    """Create ``friction_groups``: one row per unit in either group, with its span's bounds."""
    return (
        f"CREATE TEMP TABLE friction_groups AS SELECT row_number() OVER () AS unit,"
        f" person_id, depth > {step} AS converted, k{step} AS after_key,"
        f" k{step + 1} AS next_key, deadline FROM {table}"
        f" WHERE NOT excluded AND depth >= {step}"
        f" AND (depth > {step} OR deadline <= make_timestamp({as_of}))"
    )


def _span_sql(mode: FrictionMode) -> str:
    """Select (unit, converted, event, key) for the tracked events in each unit's span."""
    key = event_key("e.ts", "e.seq")
    # "next" lets a converter's next event be the step-(k+1) event itself.
    until = "<=" if mode == "next" else "<"
    return (
        f"SELECT g.unit, g.converted, e.event, {key} AS k FROM friction_groups g"
        f" JOIN events e ON e.person_id = g.person_id AND e.event IS NOT NULL"
        f" AND {key} > g.after_key AND CASE WHEN g.converted THEN {key} {until} g.next_key"
        f" ELSE e.ts <= g.deadline END"
    )


def _counts_sql(span: str, mode: FrictionMode) -> str:
    """Count, per event name, the units of each group that did it (first event for "next")."""
    if mode == "next":
        per_unit = (
            f"SELECT unit, any_value(converted) AS converted, arg_min(event, k) AS event"
            f" FROM ({span}) GROUP BY unit"
        )
    else:
        per_unit = f"SELECT DISTINCT unit, converted, event FROM ({span})"
    return (
        f"SELECT event, count(*) FILTER (WHERE NOT converted),"
        f" count(*) FILTER (WHERE converted) FROM ({per_unit}) GROUP BY event"
    )


def _frame(
    counts: list[tuple[Any, ...]], sizes: tuple[int, int], active: tuple[int, int]
) -> pd.DataFrame:
    dropped, converted = sizes
    rows = [(str(name), int(lost), int(kept)) for name, lost, kept in counts]
    rows.append((NO_EVENT, dropped - active[0], converted - active[1]))
    table = []
    for name, lost, kept in rows:
        if lost == 0 and kept == 0:
            continue
        dropped_share = lost / dropped if dropped else None
        converted_share = kept / converted if converted else None
        lift = None
        if dropped_share is not None and converted_share:
            lift = dropped_share / converted_share
        error_like = name != NO_EVENT and ERROR_PATTERN.search(name) is not None
        table.append((name, lost, dropped_share, kept, converted_share, lift, error_like))
    table.sort(key=lambda row: (-(row[2] or 0.0), -row[1], row[0]))
    return pd.DataFrame(table, columns=COLUMNS)
