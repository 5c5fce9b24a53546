"""``headstart retention``, ``headstart ttv`` and ``headstart discover``.

With a server running on the data directory, a command calls its REST API (``/api/retention``,
``/api/ttv``, ``/api/discover``) with the admin key, because the server has the warehouse
file open. Otherwise it catches up the processor, syncs ``analytics.duckdb`` and runs the analysis
in this process. Both paths pass the same text parameters to the same parser, so the output
is the same JSON, which ``--json`` prints as is and the default view renders as tables.
The analyses are imported inside the commands, so other commands start without pandas.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from headstart.cli.common import DEFAULT_DATA_DIR, DataDirOption, JsonOption
from headstart.cli.remote import AdminKeyOption, ApiRequest, run_analysis

if TYPE_CHECKING:
    from headstart.analytics.lifecycle_base import ParamValue

DATA = Path(DEFAULT_DATA_DIR)

DataEndOption = Annotated[
    str | None,
    typer.Option(help="End of the data as an ISO-8601 time; default: the latest event."),
]
ByOption = Annotated[
    str | None, typer.Option(help="Group by trait:NAME, channel or experiment:ID.")
]


def register(app: typer.Typer) -> None:
    """Add the retention, ttv and discover commands to ``app``."""
    app.command("retention")(retention_command)
    app.command("ttv")(ttv_command)
    app.command("discover")(discover_command)


def retention_command(
    data_dir: DataDirOption = DATA,
    start_event: Annotated[
        str | None, typer.Option(help="Start event; default: the sign-up.")
    ] = None,
    start_mode: Annotated[
        str, typer.Option(help="first (first occurrence per person) or recurring (every one).")
    ] = "first",
    return_event: Annotated[
        list[str] | None,
        typer.Option(help="Event that counts as a return (repeatable); default: any."),
    ] = None,
    kind: Annotated[
        str, typer.Option(help="n_day (in period N), unbounded (N or later) or bracket.")
    ] = "n_day",
    periods: Annotated[str, typer.Option(help="Periods to show, e.g. 0-7,14,30.")] = "0-7",
    brackets: Annotated[
        str | None, typer.Option(help="Day ranges for --kind bracket, e.g. 1-1,2-7,8-30.")
    ] = None,
    interval: Annotated[str, typer.Option(help="Period length: day or week.")] = "day",
    boundary: Annotated[
        str, typer.Option(help="rolling (24-hour periods) or calendar (local dates).")
    ] = "rolling",
    timezone: Annotated[
        str, typer.Option(help="IANA time zone for calendar periods and cohort dates.")
    ] = "UTC",
    cohort: Annotated[str, typer.Option(help="Cohort by start day, week or month.")] = "week",
    by: ByOption = None,
    start_from: Annotated[
        str | None, typer.Option(help="Only entries at or after this ISO-8601 time.")
    ] = None,
    start_to: Annotated[
        str | None, typer.Option(help="Only entries before this ISO-8601 time.")
    ] = None,
    as_of: DataEndOption = None,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show retention by cohort: N-day, unbounded or bracketed, rolling or calendar days."""
    params: dict[str, ParamValue] = {
        "start_event": start_event,
        "start_mode": start_mode,
        "return_event": return_event or [],
        "kind": kind,
        "periods": periods if kind != "bracket" else None,
        "brackets": brackets,
        "interval": interval,
        "boundary": boundary,
        "timezone": timezone,
        "cohort": cohort,
        "by": by,
        "start_from": start_from,
        "start_to": start_to,
        "as_of": as_of,
    }
    from headstart.analytics.retention import RetentionQuery, run_retention

    query = RetentionQuery.from_params(params)
    run_analysis(
        data_dir,
        admin_key,
        ApiRequest("/api/retention", params),
        lambda warehouse, _plan: run_retention(warehouse, query).to_dict(),
        render_retention,
        as_json=as_json,
    )


def ttv_command(
    data_dir: DataDirOption = DATA,
    within_days: Annotated[
        float | None,
        typer.Option(help="N in 'converted within N days'; default: the plan's activation window."),
    ] = None,
    by: ByOption = None,
    goal: Annotated[
        list[str] | None, typer.Option(help="Milestone or activation (repeatable); default: all.")
    ] = None,
    signup_from: Annotated[
        str | None, typer.Option(help="Only sign-ups at or after this ISO-8601 time.")
    ] = None,
    signup_to: Annotated[
        str | None, typer.Option(help="Only sign-ups before this ISO-8601 time.")
    ] = None,
    as_of: DataEndOption = None,
    curve_days: Annotated[int, typer.Option(help="Days of survival curve in --json output.")] = 30,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show time-to-value per milestone: shares, quantiles and Kaplan-Meier estimates."""
    params: dict[str, ParamValue] = {
        "within_days": None if within_days is None else repr(within_days),
        "by": by,
        "goal": goal or [],
        "signup_from": signup_from,
        "signup_to": signup_to,
        "as_of": as_of,
        "curve_days": str(curve_days),
    }
    from headstart.analytics.ttv import TtvQuery, time_to_value

    query = TtvQuery.from_params(params)
    run_analysis(
        data_dir,
        admin_key,
        ApiRequest("/api/ttv", params),
        lambda warehouse, plan: time_to_value(warehouse, query, plan).to_dict(),
        render_ttv,
        as_json=as_json,
    )


def discover_command(
    data_dir: DataDirOption = DATA,
    first_days: Annotated[int, typer.Option(help="Behaviour window D: days after sign-up.")] = 7,
    counts: Annotated[str, typer.Option(help="Minimum counts k to try, e.g. 1,2,3,5.")] = "1,2,3,5",
    outcome: Annotated[
        str, typer.Option(help="active_window, active_after, trait_after or not_churned.")
    ] = "active_window",
    retention_day: Annotated[int, typer.Option(help="Day R of the outcome.")] = 30,
    window_days: Annotated[
        int, typer.Option(help="Width W in days of the active_window centred on day R.")
    ] = 14,
    return_event: Annotated[
        list[str] | None,
        typer.Option(help="Event that counts as activity (repeatable); default: any."),
    ] = None,
    outcome_trait: Annotated[
        str | None, typer.Option(help="Timestamp trait for --outcome trait_after.")
    ] = None,
    churn_event: Annotated[
        str | None, typer.Option(help="Churn event for --outcome not_churned.")
    ] = None,
    split: Annotated[
        list[str] | None,
        typer.Option(help="EVENT=PROPERTY[,PROPERTY]: one candidate per value (repeatable)."),
    ] = None,
    exclude_event: Annotated[
        list[str] | None, typer.Option(help="Event never used as a candidate (repeatable).")
    ] = None,
    min_doers: Annotated[
        int, typer.Option(help="Minimum persons doing (and not doing) a candidate.")
    ] = 30,
    min_share: Annotated[
        float, typer.Option(help="Minimum share of persons doing (and not doing) a candidate.")
    ] = 0.01,
    top: Annotated[
        int, typer.Option(help="How many positive and negative candidates to list.")
    ] = 10,
    signup_from: Annotated[
        str | None, typer.Option(help="Only sign-ups at or after this ISO-8601 time.")
    ] = None,
    signup_to: Annotated[
        str | None, typer.Option(help="Only sign-ups before this ISO-8601 time.")
    ] = None,
    as_of: DataEndOption = None,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rank early behaviours by how well they predict retention (hypotheses to test)."""
    params: dict[str, ParamValue] = {
        "first_days": str(first_days),
        "counts": counts,
        "outcome": outcome,
        "retention_day": str(retention_day),
        "window_days": str(window_days),
        "return_event": return_event or [],
        "outcome_trait": outcome_trait,
        "churn_event": churn_event,
        "split": split or [],
        "exclude_event": exclude_event or [],
        "min_doers": str(min_doers),
        "min_share": repr(min_share),
        "top": str(top),
        "signup_from": signup_from,
        "signup_to": signup_to,
        "as_of": as_of,
    }
    from headstart.analytics.discovery import DiscoveryQuery, discover

    query = DiscoveryQuery.from_params(params)
    run_analysis(
        data_dir,
        admin_key,
        ApiRequest("/api/discover", params),
        lambda warehouse, _plan: discover(warehouse, query).to_dict(),
        render_discovery,
        as_json=as_json,
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
