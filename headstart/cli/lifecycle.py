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
from typing import TYPE_CHECKING, Annotated

import typer

from headstart.cli.common import DEFAULT_DATA_DIR, DataDirOption, JsonOption
from headstart.cli.lifecycle_render import render_discovery, render_retention, render_ttv
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
SignupFromOption = Annotated[
    str | None, typer.Option(help="Only sign-ups at or after this ISO-8601 time.")
]
SignupToOption = Annotated[
    str | None, typer.Option(help="Only sign-ups before this ISO-8601 time.")
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
    signup_from: SignupFromOption = None,
    signup_to: SignupToOption = None,
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
    signup_from: SignupFromOption = None,
    signup_to: SignupToOption = None,
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
