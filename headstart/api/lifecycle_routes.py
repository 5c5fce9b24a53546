"""Admin analytics API: retention, time-to-value and milestone discovery.

Each request first syncs the warehouse with what the processor has applied, then runs the
analysis. Parameters are plain query-string values, parsed by the same ``from_params`` that
the CLI uses, so both surfaces accept the same text. The analyses are imported on first
request, so the server starts without loading pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query

from headstart.api.analytics_routes import synced_warehouse
from headstart.api.auth import admin_router
from headstart.runtime import Runtime

if TYPE_CHECKING:
    from headstart.analytics.lifecycle_base import ParamValue


def _text(description: str) -> Any:
    return Query(None, description=description)


def lifecycle_router(runtime: Runtime) -> APIRouter:
    router = admin_router(runtime, prefix="/api", tags=["analytics"], redirect_slashes=True)

    @router.get("/retention", summary="Retention matrix by cohort (N-day, unbounded, bracketed)")
    def get_retention(
        start_event: str | None = _text("Start event; default: the sign-up."),
        start_mode: str | None = _text("first (first occurrence) or recurring (each one)."),
        return_event: list[str] | None = _text("Return event (repeatable); default: any."),
        kind: str | None = _text("n_day, unbounded (day N or later) or bracket."),
        periods: str | None = _text("Periods, e.g. 0-7,14,30 (n_day and unbounded)."),
        brackets: str | None = _text("Day ranges for kind=bracket, e.g. 1-1,2-7,8-30."),
        interval: str | None = _text("day or week."),
        boundary: str | None = _text("rolling (24 h periods) or calendar (local days)."),
        timezone: str | None = _text("IANA zone for calendar days and cohorts; default UTC."),
        cohort: str | None = _text("Cohort by start day, week or month; default week."),
        by: str | None = _text("Cohort by trait:NAME, channel or experiment:ID instead."),
        start_from: str | None = _text("Only entries at or after this ISO-8601 time."),
        start_to: str | None = _text("Only entries before this ISO-8601 time."),
        as_of: str | None = _text("End of the data (ISO-8601); default: the latest event."),
    ) -> dict[str, Any]:
        params: dict[str, ParamValue] = {
            "start_event": start_event,
            "start_mode": start_mode,
            "return_event": return_event,
            "kind": kind,
            "periods": periods,
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
        return run_retention(synced_warehouse(runtime), query).to_dict()

    @router.get("/ttv", summary="Time-to-value per milestone with Kaplan-Meier curves")
    def get_ttv(
        within_days: str | None = _text("N of 'converted within N days'; default: the plan's."),
        by: str | None = _text("Break down by trait:NAME, channel or experiment:ID."),
        goal: list[str] | None = _text("Milestone or activation (repeatable); default: all."),
        signup_from: str | None = _text("Only sign-ups at or after this ISO-8601 time."),
        signup_to: str | None = _text("Only sign-ups before this ISO-8601 time."),
        as_of: str | None = _text("End of the data (ISO-8601); default: the latest event."),
        curve_days: str | None = _text("Days of survival curve points to return; default 30."),
    ) -> dict[str, Any]:
        params: dict[str, ParamValue] = {
            "within_days": within_days,
            "by": by,
            "goal": goal,
            "signup_from": signup_from,
            "signup_to": signup_to,
            "as_of": as_of,
            "curve_days": curve_days,
        }
        from headstart.analytics.ttv import TtvQuery, time_to_value

        query = TtvQuery.from_params(params)
        return time_to_value(synced_warehouse(runtime), query, runtime.plan()).to_dict()

    @router.get("/discover", summary="Early behaviours that predict retention (hypotheses)")
    def get_discover(
        first_days: str | None = _text("Behaviour window D in days after sign-up; default 7."),
        counts: str | None = _text("Minimum counts k to try, e.g. 1,2,3,5."),
        outcome: str | None = _text("active_window, active_after, trait_after or not_churned."),
        retention_day: str | None = _text("Day R of the outcome; default 30."),
        window_days: str | None = _text("Width W of the active_window centred on day R."),
        return_event: list[str] | None = _text("Events that count as activity (repeatable)."),
        outcome_trait: str | None = _text("Timestamp trait for outcome=trait_after."),
        churn_event: str | None = _text("Churn event for outcome=not_churned."),
        split: list[str] | None = _text("EVENT=PROPERTY[,PROPERTY]: candidates per value."),
        exclude_event: list[str] | None = _text("Event never used as a candidate (repeatable)."),
        min_doers: str | None = _text("Minimum doers (and non-doers) of a candidate."),
        min_share: str | None = _text("Minimum share of doers (and non-doers), e.g. 0.01."),
        top: str | None = _text("How many positive and negative candidates to list."),
        signup_from: str | None = _text("Only sign-ups at or after this ISO-8601 time."),
        signup_to: str | None = _text("Only sign-ups before this ISO-8601 time."),
        as_of: str | None = _text("End of the data (ISO-8601); default: the latest event."),
    ) -> dict[str, Any]:
        params: dict[str, ParamValue] = {
            "first_days": first_days,
            "counts": counts,
            "outcome": outcome,
            "retention_day": retention_day,
            "window_days": window_days,
            "return_event": return_event,
            "outcome_trait": outcome_trait,
            "churn_event": churn_event,
            "split": split,
            "exclude_event": exclude_event,
            "min_doers": min_doers,
            "min_share": min_share,
            "top": top,
            "signup_from": signup_from,
            "signup_to": signup_to,
            "as_of": as_of,
        }
        from headstart.analytics.discovery import DiscoveryQuery, discover

        query = DiscoveryQuery.from_params(params)
        return discover(synced_warehouse(runtime), query).to_dict()

    return router
