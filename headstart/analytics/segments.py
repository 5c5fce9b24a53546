"""Behavioural segments from the plan's ``segments:``, evaluated as SQL over the warehouse.

A segment is evaluated as of an instant, by default the latest event time in the warehouse. Persons first seen after it are not
counted. ``did``/``did_not`` count events with ``as_of - within < ts <= as_of`` (no lower
bound without ``within``); milestones and activation count when reached at or before
``as_of``. Trait conditions read the person's current traits, because the warehouse keeps no
trait history.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import duckdb
import pandas as pd

from headstart.analytics.sql_filters import condition_sql, json_path, matcher_sql, sql_string
from headstart.analytics.sql_funnel import SegmentSql
from headstart.analytics.warehouse import Warehouse, resolve_as_of
from headstart.errors import HeadstartError, NotFound
from headstart.plan.analytics import SegmentCondition, SegmentSpec

logger = logging.getLogger(__name__)

Source = Warehouse | duckdb.DuckDBPyConnection


def members_sql(spec: SegmentSpec, as_of: int) -> str:
    """Return SQL selecting ``person_id`` of every member of ``spec`` as of ``as_of`` (µs)."""
    joiner = " AND " if spec.match == "all" else " OR "
    tests = joiner.join(_condition(condition, as_of) for condition in spec.conditions)
    return (
        f"SELECT p.person_id FROM persons p WHERE (p.first_seen IS NULL"
        f" OR p.first_seen <= make_timestamp({as_of})) AND ({tests})"
    )


def segment_sql(spec: SegmentSpec, as_of: int) -> SegmentSql:
    return SegmentSql(spec.name, members_sql(spec, as_of))


def _condition(condition: SegmentCondition, as_of: int) -> str:
    kind = condition.kind
    if kind == "trait":
        key = condition.trait or ""
        value = f"json_extract(p.traits, {sql_string(json_path(key.split('.')))})"
        if "is_" in condition.model_fields_set:
            return condition_sql(value, condition.is_, key)
        return f"coalesce(json_type({value}) <> 'NULL', FALSE)"
    if kind in ("did", "did_not"):
        bounds = [f"ts <= make_timestamp({as_of})"]
        if condition.within_us is not None:
            bounds.append(f"ts > make_timestamp({as_of - condition.within_us})")
        counted = (
            f"SELECT person_id FROM events WHERE {matcher_sql(condition.matcher())}"
            f" AND person_id IS NOT NULL AND {' AND '.join(bounds)}"
            f" GROUP BY person_id HAVING count(*) >= {condition.at_least}"
        )
        negate = "NOT " if kind == "did_not" else ""
        return f"(p.person_id {negate}IN ({counted}))"
    if kind == "milestone":
        reached = (
            f"SELECT person_id FROM milestones WHERE milestone ="
            f" {sql_string(condition.milestone or '')}"
            f" AND reached_at <= make_timestamp({as_of})"
        )
        negate = "" if condition.reached else "NOT "
        return f"(p.person_id {negate}IN ({reached}))"
    activated = f"coalesce(p.activated_at <= make_timestamp({as_of}), FALSE)"
    return activated if condition.activated else f"(NOT {activated})"


def find_segment(segments: Sequence[SegmentSpec], name: str) -> SegmentSpec:
    for spec in segments:
        if spec.name == name:
            return spec
    known = ", ".join(spec.name for spec in segments) or "none"
    raise NotFound(
        f"segment {name!r} is not defined in the plan's segments (defined: {known})",
        code="unknown_segment",
    )


def _connection(source: Source) -> duckdb.DuckDBPyConnection:
    conn = source.conn if isinstance(source, Warehouse) else source
    return conn.cursor()


def segment_members(source: Source, spec: SegmentSpec, *, as_of: int | None = None) -> pd.DataFrame:
    """Return the members of ``spec`` (``person_id``, ``user_id``), sorted by person id."""
    cursor = _connection(source)
    try:
        members = members_sql(spec, resolve_as_of(cursor, as_of))
        return cursor.execute(
            f"SELECT m.person_id, p.user_id FROM ({members}) m"
            " LEFT JOIN persons p ON p.person_id = m.person_id ORDER BY m.person_id"
        ).df()
    finally:
        cursor.close()


def in_segment(
    source: Source, spec: SegmentSpec, person_id: str, *, as_of: int | None = None
) -> bool:
    """Return whether the person ``person_id`` (a surviving person id) is in ``spec``."""
    cursor = _connection(source)
    try:
        members = members_sql(spec, resolve_as_of(cursor, as_of))
        row = cursor.execute(
            f"SELECT count(*) FROM ({members}) WHERE person_id = ?",
            [person_id],
        ).fetchone()
    finally:
        cursor.close()
    return row is not None and int(row[0]) > 0


def segment_sizes(
    source: Source, specs: Sequence[SegmentSpec], *, as_of: int | None = None
) -> pd.DataFrame:
    """Return each segment's size and share of all persons; one failure is one row's ``error``."""
    cursor = _connection(source)
    moment = resolve_as_of(cursor, as_of)
    rows = []
    try:
        total_row = cursor.execute(
            "SELECT count(*) FROM persons WHERE first_seen IS NULL"
            f" OR first_seen <= make_timestamp({moment})"
        ).fetchone()
        total = int(total_row[0]) if total_row is not None else 0
        for spec in specs:
            rows.append(_size_row(cursor, spec, moment, total))
    finally:
        cursor.close()
    columns = ["segment", "description", "persons", "share", "code", "error"]
    return pd.DataFrame(rows, columns=columns)


def _size_row(
    cursor: duckdb.DuckDBPyConnection, spec: SegmentSpec, as_of: int, total: int
) -> dict[str, object]:
    row: dict[str, object] = {"segment": spec.name, "description": spec.description}
    try:
        found = cursor.execute(f"SELECT count(*) FROM ({members_sql(spec, as_of)})").fetchone()
    except (duckdb.Error, HeadstartError) as exc:
        logger.warning("segment %s failed: %s", spec.name, exc)
        return {**row, "persons": None, "share": None, "code": "FAILED", "error": str(exc)}
    size = int(found[0]) if found is not None else 0
    share = size / total if total else None
    code = "NO_DATA" if total == 0 else None
    return {**row, "persons": size, "share": share, "code": code, "error": None}
