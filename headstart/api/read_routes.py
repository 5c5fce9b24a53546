"""Admin read API: persons, the onboarding report and processing status."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from headstart.api.auth import admin_router
from headstart.api.persons import person_view
from headstart.errors import InvalidInput, NotFound
from headstart.onboarding.report import build_report, load_cohort
from headstart.runtime import Runtime
from headstart.timeutil import parse_iso


def read_router(runtime: Runtime) -> APIRouter:
    router = admin_router(runtime, prefix="/api", tags=["admin"])

    def settle(wait: bool) -> None:
        if wait:
            runtime.wait_for_processor()

    @router.get("/persons/{identifier}", summary="A person with traits and onboarding state")
    def get_person(
        identifier: str,
        wait: Annotated[
            bool,
            Query(
                description="Wait (up to 10 s) until every event logged "
                "before this request is processed."
            ),
        ] = False,
        recent: Annotated[
            int, Query(ge=0, le=50, description="How many of the newest events to include.")
        ] = 20,
    ) -> dict[str, Any]:
        settle(wait)
        return person_view(runtime.state, runtime.log, runtime.plan(), identifier, recent)

    @router.get("/report", summary="Onboarding report: milestones, activation, TTV, drop-off")
    def get_report(
        signup_from: Annotated[str | None, Query(description="ISO-8601, inclusive")] = None,
        signup_to: Annotated[str | None, Query(description="ISO-8601, exclusive")] = None,
        wait: bool = False,
    ) -> dict[str, Any]:
        settle(wait)
        plan = runtime.plan()
        if plan is None:
            raise NotFound(
                "no onboarding plan is installed; run `headstart plan apply FILE`", code="no_plan"
            )
        cohort = load_cohort(
            runtime.state, _instant(signup_from, "signup_from"), _instant(signup_to, "signup_to")
        )
        return build_report(plan, cohort, runtime.clock.now_us())

    @router.get("/status", summary="Log head and processor offset")
    def get_status() -> dict[str, Any]:
        head = runtime.log.head()
        offset = runtime.state.offset()
        return {
            "log_head": head,
            "processed": offset,
            "lag": head - offset,
            "plan_installed": runtime.plan() is not None,
        }

    return router


def _instant(value: str | None, field: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise InvalidInput(f"{field}={value!r} is not an ISO-8601 timestamp") from None
