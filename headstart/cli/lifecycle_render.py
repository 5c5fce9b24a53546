"""Tables for the results of ``headstart retention``, ``ttv`` and ``discover``."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table


def render_retention(out: Console, result: dict[str, Any]) -> None:
    definition = result["definition"]
    out.print(
        f"[bold]retention[/] ({definition['kind']}, {definition['boundary']} "
        f"{definition['interval']}s, {definition['timezone']}) from {definition['start']} "
        f"({definition['start_mode']}), returning with {_names(definition['return_events'])}; "
        f"as of {result['as_of']}"
    )
    columns: list[str] = result["columns"]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("cohort")
    table.add_column("entries", justify="right")
    for column in columns:
        table.add_column(column, justify="right")
    rows: dict[str, dict[str, Any]] = {}
    for cell in result["cells"]:
        rows.setdefault(cell["cohort"], {"entries": cell["entries"]})[cell["column"]] = cell
    for cohort, cells in rows.items():
        table.add_row(cohort, str(cells["entries"]), *(_rate_cell(cells[c]) for c in columns))
    out.print(table)
    out.print("[dim]- = not observable yet; * = only part of the cohort observable[/]")
    _render_notices(out, result)


def render_ttv(out: Console, result: dict[str, Any]) -> None:
    within = result["definition"]["within_days"]
    grouped = result["definition"]["breakdown"] is not None
    rows = result["summary"]
    signups = {row["group"]: row["signups"] for row in rows}

    out.print(
        f"[bold]time-to-value[/] as of {result['as_of']}; sign-ups: "
        + ", ".join(f"{group} {count}" for group, count in signups.items())
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("goal", overflow="fold")
    if grouped:
        table.add_column("group", overflow="fold")
    headers = ["reached", f"<={within:g}d", "median", "p75", "p90", "KM med", "KM"]
    for header in headers:
        table.add_column(header, justify="right", min_width=len(header), no_wrap=True)

    for row in rows:
        table.add_row(
            row["goal"],
            *([row["group"]] if grouped else []),
            str(row["converted"]),
            _percent(row["share_within"]),
            _duration(row["median_hours"]),
            _duration(row["p75_hours"]),
            _duration(row["p90_hours"]),
            _duration(row["km_median_hours"]),
            _percent(row["km_share_within"]),
        )
    out.print(table)
    out.print(
        f"[dim]<={within:g}d: share that reached the goal within {within:g} days, among sign-ups "
        f"at least {within:g} days old. median/p75/p90: time to the goal, over those who "
        f"reached it. KM med, KM: Kaplan-Meier median time and share within {within:g} days, "
        "which also count the persons still in progress. -: not reached[/]"
    )
    _render_notices(out, result)


def render_discovery(out: Console, result: dict[str, Any]) -> None:
    definition = result["definition"]
    out.print(
        f"[bold]discovery[/]: behaviours in the first {definition['first_days']} days; "
        f"outcome: {definition['outcome_rule']}; as of {result['as_of']}"
    )
    out.print(
        f"{result['population']} persons, {result['retained']} retained "
        f"({_percent(result['base_rate'])}); {result['candidates_scored']} candidates scored, "
        f"{result['candidates_dropped']} dropped: {result['threshold_rule']}"
    )
    for title, rows in (
        ("predict retention", result["top_positive"]),
        ("predict loss", result["top_negative"]),
    ):
        table = Table(title=f"behaviours that {title}", box=box.SIMPLE_HEAD, pad_edge=False)
        for header in (
            "behaviour",
            "doers",
            "retained if done",
            "if not",
            "phi",
            "odds ratio",
            "recall",
        ):
            table.add_column(header, justify="left" if header == "behaviour" else "right")
        for row in rows:
            table.add_row(
                row["behaviour"],
                str(row["doers"]),
                _percent(row["retention_doers"]),
                _percent(row["retention_non_doers"]),
                f"{row['phi']:.3f}",
                f"{row['odds_ratio']:.2f} ({row['odds_ratio_low']:.2f}-{row['odds_ratio_high']:.2f})",
                _percent(row["recall"]),
            )
        out.print(table)
    if result["plan_snippet"]:
        out.print(Syntax(result["plan_snippet"], "yaml", theme="ansi_dark", word_wrap=True))
    out.print(f"[yellow]{result['caveat']}[/]")
    _render_notices(out, result)


def _render_notices(out: Console, result: dict[str, Any]) -> None:
    for notice in result["notices"]:
        out.print(f"[yellow]{notice['code']}[/]: {notice['message']}", highlight=False)


def _rate_cell(cell: dict[str, Any]) -> str:
    if cell["rate"] is None:
        return "-"
    mark = "*" if cell["observable"] < cell["entries"] else ""
    return f"{cell['rate']:.1%}{mark}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _duration(hours: float | None) -> str:
    if hours is None:
        return "-"
    if hours < 48:
        return f"{hours:.1f}h"
    return f"{hours / 24:.1f}d"


def _names(value: Any) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)
