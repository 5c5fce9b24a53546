"""Tables for the funnel, friction and segment results of ``headstart funnel`` and ``segments``."""

from __future__ import annotations

from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from headstart.cli.tables import format_count, format_percent, format_seconds, new_table
from headstart.plan.analytics import FunnelStep

STEP_COLUMNS = (
    "step",
    "units",
    "conversion",
    "from previous",
    "dropped",
    "in progress",
    "median from previous",
    "median from entry",
)
BREAKDOWN_COLUMNS = (
    "value",
    "step",
    "units",
    "conversion",
    "from previous",
    "median from previous",
    "code",
)
FRICTION_COLUMNS = ("event", "dropped", "share", "converted", "share ", "lift")
SEGMENT_COLUMNS = ("segment", "persons", "share", "description", "code")


def _codes(out: Console, codes: list[str]) -> None:
    if codes:
        out.print(f"[yellow]codes:[/] {', '.join(codes)}")


def render_funnel(out: Console, result: dict[str, Any]) -> None:
    spec = result["spec"]
    title = spec.get("name") or " -> ".join(
        FunnelStep.model_validate(step).title() for step in spec["steps"]
    )
    out.print(
        f"[bold]funnel[/] {title}: order {spec['order']}, window {spec['window']} from the entry,"
        f" entry {spec['entry']}, counting {result['unit']}, as of {result['as_of']}"
    )
    out.print(f"{result['entered']} entered, {result['excluded']} excluded by exclusion steps")
    out.print(_steps_table(result["steps"], "Steps"))
    if result.get("breakdown"):
        out.print(_breakdown_table(spec["breakdown"], result["breakdown"]))
    out.print(_times_table(result["times"]))
    if result.get("persons") is not None:
        out.print(_persons_table(result["persons"]))
    _codes(out, result["codes"])


def _steps_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = new_table(STEP_COLUMNS, numeric=STEP_COLUMNS[1:], title=title)
    for row in rows:
        table.add_row(
            f"{row['step']}. {row['label']}",
            str(row["units"]),
            format_percent(row["conversion"]),
            format_percent(row["from_previous"]),
            format_count(row["dropped"]),
            str(row["in_progress"]),
            format_seconds(row["median_s_from_previous"]),
            format_seconds(row["median_s_from_entry"]),
        )
    return table


def _breakdown_table(breakdown: dict[str, Any], rows: list[dict[str, Any]]) -> Table:
    attribution = breakdown.get("attribution")
    how = f" ({attribution})" if attribution else ""
    table = new_table(
        BREAKDOWN_COLUMNS,
        numeric=BREAKDOWN_COLUMNS[2:-1],
        title=f"By {breakdown['by']} {breakdown['key']}{how}",
    )
    for row in rows:
        table.add_row(
            str(row["breakdown"]),
            f"{row['step']}. {row['label']}",
            str(row["units"]),
            format_percent(row["conversion"]),
            format_percent(row["from_previous"]),
            format_seconds(row["median_s_from_previous"]),
            row.get("code") or "",
        )
    return table


def _times_table(rows: list[dict[str, Any]]) -> Table:
    """Time from the previous step: one row per step, one column per bucket that has units."""
    used = [row for row in rows if row["units"]]
    # Columns from the shortest time to the longest, whichever step filled a bucket first.
    buckets = list(dict.fromkeys(row["bucket"] for row in sorted(used, key=lambda r: r["lower_s"])))
    table = new_table(
        ("step", *buckets),
        numeric=buckets,
        title="Time from the previous step (units per bucket)",
    )
    by_step: dict[str, dict[str, int]] = {}
    for row in rows:
        by_step.setdefault(f"{row['step']}. {row['label']}", {})[row["bucket"]] = row["units"]
    for step, counts in by_step.items():
        table.add_row(step, *(str(counts.get(bucket, 0)) for bucket in buckets))
    return table


def _persons_table(rows: list[dict[str, Any]]) -> Table:
    columns = [name for name in (rows[0] if rows else {}) if name != "in_progress"]
    table = new_table(columns, title=f"Units ({len(rows)} listed)")
    for row in rows:
        table.add_row(*("" if row[column] is None else str(row[column]) for column in columns))
    return table


def render_friction(out: Console, result: dict[str, Any]) -> None:
    spec = result["spec"]
    step = result["step"]
    labels = [s.get("label") or s["event"] for s in spec["steps"]]
    out.print(
        f"[bold]after step {step}[/] ({labels[step - 1]}), before {labels[step]}:"
        f" {result['dropped']} dropped (window ended), {result['converted']} converted;"
        f" mode {result['mode']}, as of {result['as_of']}"
    )
    table = new_table(FRICTION_COLUMNS, numeric=FRICTION_COLUMNS[1:])
    for row in result["events"]:
        name = row["event"] + (" [red](error)[/]" if row["error_like"] else "")
        lift = "-" if row["lift"] is None else f"{row['lift']:.2f}"
        table.add_row(
            name,
            str(row["dropped_units"]),
            format_percent(row["dropped_share"]),
            str(row["converted_units"]),
            format_percent(row["converted_share"]),
            lift,
        )
    out.print(table)
    _codes(out, result["codes"])


def render_segments(out: Console, result: dict[str, Any]) -> None:
    table = new_table(SEGMENT_COLUMNS, numeric=("persons", "share"), title="Segments")
    for row in result["segments"]:
        table.add_row(
            row["segment"],
            format_count(row["persons"]),
            format_percent(row["share"]),
            row["description"] or "",
            (row["code"] or "") + (f": {row['error']}" if row["error"] else ""),
        )
    out.print(table)


def render_membership(out: Console, result: dict[str, Any]) -> None:
    state = "is" if result["member"] else "is not"
    out.print(f"person {result['person_id']} {state} in segment {result['segment']}")


def render_members(out: Console, result: dict[str, Any]) -> None:
    segment = result["segment"]
    out.print(f"[bold]segment[/] {segment['name']}: {result['persons']} persons")
    out.print(orjson.dumps(segment["conditions"]).decode())
    table = new_table(("person_id", "user_id"), title=f"Members ({len(result['members'])} listed)")
    for row in result["members"]:
        table.add_row(row["person_id"], row["user_id"] or "")
    out.print(table)
