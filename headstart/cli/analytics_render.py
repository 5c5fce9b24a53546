"""Tables for the funnel, friction and segment results of ``headstart funnel`` and ``segments``."""

from __future__ import annotations

from typing import Any

import orjson
from rich.console import Console
from rich.table import Table


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def _codes(out: Console, codes: list[str]) -> None:
    if codes:
        out.print(f"[yellow]codes:[/] {', '.join(codes)}")


def render_funnel(out: Console, result: dict[str, Any]) -> None:
    spec = result["spec"]
    title = spec.get("name") or " -> ".join(
        step.get("label") or step["event"] for step in spec["steps"]
    )
    out.print(
        f"[bold]funnel[/] {title}: order {spec['order']}, window {spec['window']} from the entry,"
        f" entry {spec['entry']}, counting {result['unit']}, as of {result['as_of']}"
    )
    out.print(f"{result['entered']} entered, {result['excluded']} excluded by exclusion steps")
    out.print(_steps_table(result["steps"], "Steps"))
    if result.get("breakdown"):
        breakdown = spec["breakdown"]
        attribution = breakdown.get("attribution")
        how = f" ({attribution})" if attribution else ""
        table = Table(title=f"By {breakdown['by']} {breakdown['key']}{how}")
        for column in (
            "value",
            "step",
            "units",
            "conversion",
            "from previous",
            "median from previous",
            "code",
        ):
            table.add_column(
                column, justify="left" if column in ("value", "step", "code") else "right"
            )
        for row in result["breakdown"]:
            table.add_row(
                str(row["breakdown"]),
                f"{row['step']}. {row['label']}",
                str(row["units"]),
                _percent(row["conversion"]),
                _percent(row["from_previous"]),
                _duration(row["median_s_from_previous"]),
                row.get("code") or "",
            )
        out.print(table)
    out.print(_times_table(result["times"]))
    if result.get("persons") is not None:
        out.print(_persons_table(result["persons"]))
    _codes(out, result["codes"])


def _steps_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    columns = ("step", "units", "conversion", "from previous", "dropped", "in progress")
    for column in (*columns, "median from previous", "median from entry"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for row in rows:
        table.add_row(
            f"{row['step']}. {row['label']}",
            str(row["units"]),
            _percent(row["conversion"]),
            _percent(row["from_previous"]),
            "-" if row["dropped"] is None else str(row["dropped"]),
            str(row["in_progress"]),
            _duration(row["median_s_from_previous"]),
            _duration(row["median_s_from_entry"]),
        )
    return table


def _times_table(rows: list[dict[str, Any]]) -> Table:
    """Time from the previous step: one row per step, one column per bucket that has units."""
    buckets = list(dict.fromkeys(row["bucket"] for row in rows if row["units"]))
    table = Table(title="Time from the previous step (units per bucket)")
    table.add_column("step")
    for bucket in buckets:
        table.add_column(bucket, justify="right")
    by_step: dict[str, dict[str, int]] = {}
    for row in rows:
        by_step.setdefault(f"{row['step']}. {row['label']}", {})[row["bucket"]] = row["units"]
    for step, counts in by_step.items():
        table.add_row(step, *(str(counts.get(bucket, 0)) for bucket in buckets))
    return table


def _persons_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"Units ({len(rows)} listed)")
    columns = [name for name in (rows[0] if rows else {}) if name != "in_progress"]
    for column in columns:
        table.add_column(column)
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
    table = Table()
    for column in ("event", "dropped", "share", "converted", "share ", "lift"):
        table.add_column(column, justify="left" if column == "event" else "right")
    for row in result["events"]:
        name = row["event"] + (" [red](error)[/]" if row["error_like"] else "")
        lift = "-" if row["lift"] is None else f"{row['lift']:.2f}"
        table.add_row(
            name,
            str(row["dropped_units"]),
            _percent(row["dropped_share"]),
            str(row["converted_units"]),
            _percent(row["converted_share"]),
            lift,
        )
    out.print(table)
    _codes(out, result["codes"])


def render_segments(out: Console, result: dict[str, Any]) -> None:
    table = Table(title="Segments")
    for column in ("segment", "persons", "share", "description", "code"):
        table.add_column(column, justify="right" if column in ("persons", "share") else "left")
    for row in result["segments"]:
        table.add_row(
            row["segment"],
            "-" if row["persons"] is None else str(row["persons"]),
            _percent(row["share"]),
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
    table = Table(title=f"Members ({len(result['members'])} listed)")
    table.add_column("person_id")
    table.add_column("user_id")
    for row in result["members"]:
        table.add_row(row["person_id"], row["user_id"] or "")
    out.print(table)
