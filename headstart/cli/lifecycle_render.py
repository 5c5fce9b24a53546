"""Tables for the results of ``headstart retention``, ``ttv`` and ``discover``."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from headstart.cli.tables import format_hours, format_percent, new_table

DISCOVERY_COLUMNS = (
    "behaviour",
    "doers",
    "retained if done",
    "if not",
    "phi",
    "odds ratio",
    "recall",
)


def render_retention(out: Console, result: dict[str, Any]) -> None:
    definition = result["definition"]
    out.print(
        f"[bold]retention[/] ({definition['kind']}, {definition['boundary']} "
        f"{definition['interval']}s, {definition['timezone']}) from {definition['start']} "
        f"({definition['start_mode']}), returning with {_names(definition['return_events'])}; "
        f"as of {result['as_of']}"
    )
    columns: list[str] = result["columns"]
    table = new_table(
        ("cohort", "entries", *columns),
        numeric=("entries", *columns),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
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
            format_percent(row["share_within"]),
            _hours(row["median_hours"]),
            _hours(row["p75_hours"]),
            _hours(row["p90_hours"]),
            _hours(row["km_median_hours"]),
            format_percent(row["km_share_within"]),
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
        f"({format_percent(result['base_rate'])}); "
        f"{result['candidates_scored']} candidates scored, "
        f"{result['candidates_dropped']} dropped: {result['threshold_rule']}"
    )
    for title, rows in (
        ("predict retention", result["top_positive"]),
        ("predict loss", result["top_negative"]),
    ):
        table = new_table(
            DISCOVERY_COLUMNS,
            numeric=DISCOVERY_COLUMNS[1:],
            title=f"behaviours that {title}",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        for row in rows:
            table.add_row(
                row["behaviour"],
                str(row["doers"]),
                format_percent(row["retention_doers"]),
                format_percent(row["retention_non_doers"]),
                f"{row['phi']:.3f}",
                f"{row['odds_ratio']:.2f} ({row['odds_ratio_low']:.2f}-{row['odds_ratio_high']:.2f})",
                format_percent(row["recall"]),
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
    return f"{format_percent(cell['rate'])}{mark}"


def _hours(hours: float | None) -> str:
    return format_hours(hours, unit_separator="")


def _names(value: Any) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)
