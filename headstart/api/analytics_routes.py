"""Admin analytics API: funnels, friction points and segments.

Each request first syncs the warehouse with what the processor has applied (with
``wait=true``, after waiting for the processor to apply everything logged so far), then runs
the analysis. Saved funnels and segments come from the installed plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from headstart.api.auth import admin_router
from headstart.errors import InvalidInput, NotFound
from headstart.plan.analytics import FunnelSpec, SegmentSpec
from headstart.runtime import Runtime
from headstart.timeutil import parse_iso

if TYPE_CHECKING:
    import pandas as pd

    from headstart.analytics.warehouse import Warehouse

AsOf = Annotated[
    str | None,
    Query(description="ISO-8601 instant the analysis is as of; default: the latest event."),
]
Wait = Annotated[
    bool,
    Query(description="First wait (up to 10 s) until every event logged so far is processed."),
]
PersonsStep = Annotated[
    int | None, Query(ge=1, description="List the units at (or dropped after) this step.")
]
PersonsStatus = Annotated[
    Literal["reached", "dropped"],
    Query(description="reached: reached the step; dropped: reached it and not the next one."),
]
PersonsLimit = Annotated[int, Query(ge=1, le=100_000, description="How many units to list.")]
FrictionStep = Annotated[int, Query(ge=1, description="The step whose drop-offs to explain.")]
FrictionMode = Annotated[
    Literal["between", "next"],
    Query(description="between: every event until the next step; next: the first event."),
]


@dataclass(frozen=True)
class FunnelQuery:
    """Query parameters of a funnel run: as-of instant, whether to wait, which units to list."""

    as_of: str | None
    wait: bool
    persons_step: int | None
    persons_status: Literal["reached", "dropped"]
    persons_limit: int


def funnel_query(
    as_of: AsOf = None,
    wait: Wait = False,
    persons_step: PersonsStep = None,
    persons_status: PersonsStatus = "reached",
    persons_limit: PersonsLimit = 100,
) -> FunnelQuery:
    return FunnelQuery(as_of, wait, persons_step, persons_status, persons_limit)


@dataclass(frozen=True)
class FrictionQuery:
    """Query parameters of a friction run: step, mode, as-of instant and whether to wait."""

    step: int
    mode: Literal["between", "next"]
    as_of: str | None
    wait: bool


def friction_query(
    step: FrictionStep,
    mode: FrictionMode = "between",
    as_of: AsOf = None,
    wait: Wait = False,
) -> FrictionQuery:
    return FrictionQuery(step, mode, as_of, wait)


FunnelParams = Annotated[FunnelQuery, Depends(funnel_query)]
FrictionParams = Annotated[FrictionQuery, Depends(friction_query)]


def synced_warehouse(runtime: Runtime, *, wait: bool = False) -> Warehouse:
    """Sync the server's warehouse with the processed state and return it.

    With ``wait``, first wait (up to 10 s) for the processor to apply everything logged so far.
    """
    if wait:
        runtime.wait_for_processor()
    warehouse = runtime.warehouse()
    warehouse.sync()
    return warehouse


def analytics_router(runtime: Runtime) -> APIRouter:
    router = admin_router(runtime, prefix="/api", tags=["analytics"])

    def saved_funnels() -> list[FunnelSpec]:
        plan = runtime.plan()
        return list(plan.funnels) if plan is not None else []

    def saved_funnel(name: str) -> FunnelSpec:
        funnels = saved_funnels()
        for spec in funnels:
            if spec.name == name:
                return spec
        known = ", ".join(spec.name or "" for spec in funnels) or "none"
        raise NotFound(
            f"funnel {name!r} is not saved in the plan's funnels (saved: {known})",
            code="unknown_funnel",
        )

    def segments() -> list[SegmentSpec]:
        plan = runtime.plan()
        return list(plan.segments) if plan is not None else []

    def funnel(spec: FunnelSpec, query: FunnelQuery) -> dict[str, Any]:
        from headstart.analytics.funnels import PersonSelection, run_funnel

        selection = None
        if query.persons_step is not None:
            selection = PersonSelection(
                query.persons_step, query.persons_status, query.persons_limit
            )
        result = run_funnel(
            synced_warehouse(runtime, wait=query.wait),
            spec,
            as_of=_instant(query.as_of, "as_of"),
            segments=segments(),
            persons=selection,
        )
        return result.to_dict()

    def friction(spec: FunnelSpec, query: FrictionQuery) -> dict[str, Any]:
        from headstart.analytics.friction import friction_points

        result = friction_points(
            synced_warehouse(runtime, wait=query.wait),
            spec,
            query.step,
            mode=query.mode,
            as_of=_instant(query.as_of, "as_of"),
            segments=segments(),
        )
        return result.to_dict()

    @router.post("/funnels", summary="Run a funnel given as a FunnelSpec")
    def post_funnel(spec: FunnelSpec, query: FunnelParams) -> dict[str, Any]:
        return funnel(spec, query)

    @router.get("/funnels", summary="The funnels saved in the plan")
    def list_funnels() -> dict[str, Any]:
        funnels = saved_funnels()
        return {"funnels": [spec.model_dump(mode="json", by_alias=True) for spec in funnels]}

    @router.get("/funnels/{name}", summary="Run a funnel saved in the plan")
    def get_funnel(name: str, query: FunnelParams) -> dict[str, Any]:
        return funnel(saved_funnel(name), query)

    @router.post("/friction", summary="Events after a step of a funnel given as a FunnelSpec")
    def post_friction(spec: FunnelSpec, query: FrictionParams) -> dict[str, Any]:
        return friction(spec, query)

    @router.get("/funnels/{name}/friction", summary="Events after a step of a saved funnel")
    def get_friction(name: str, query: FrictionParams) -> dict[str, Any]:
        return friction(saved_funnel(name), query)

    @router.get("/segments", summary="The plan's segments with their sizes")
    def list_segments(as_of: AsOf = None, wait: Wait = False) -> dict[str, Any]:
        from headstart.analytics.funnels import records
        from headstart.analytics.segments import segment_sizes

        sizes = segment_sizes(
            synced_warehouse(runtime, wait=wait), segments(), as_of=_instant(as_of, "as_of")
        )
        return {"segments": records(sizes)}

    @router.get("/segments/{name}", summary="A segment's definition, size and members")
    def get_segment(
        name: str,
        as_of: AsOf = None,
        wait: Wait = False,
        limit: Annotated[int, Query(ge=1, le=100_000, description="How many members.")] = 100,
    ) -> dict[str, Any]:
        from headstart.analytics.segments import find_segment, segment_members

        spec = find_segment(segments(), name)
        members = segment_members(
            synced_warehouse(runtime, wait=wait), spec, as_of=_instant(as_of, "as_of")
        )
        return segment_members_view(spec, members, limit)

    @router.get(
        "/segments/{name}/persons/{identifier}",
        summary="Whether one person (person id, user id or anonymous id) is in a segment",
    )
    def get_membership(
        name: str, identifier: str, as_of: AsOf = None, wait: Wait = False
    ) -> dict[str, Any]:
        from headstart.analytics.segments import find_segment, in_segment

        spec = find_segment(segments(), name)
        warehouse = synced_warehouse(runtime, wait=wait)
        person_id = runtime.state.find_person_id(identifier)
        if person_id is None:
            raise NotFound(f"no person has the identifier {identifier!r}", code="unknown_person")
        member = in_segment(warehouse, spec, person_id, as_of=_instant(as_of, "as_of"))
        return {"segment": name, "person_id": person_id, "member": member}

    return router


def segment_members_view(spec: SegmentSpec, members: pd.DataFrame, limit: int) -> dict[str, Any]:
    """Build the JSON of a segment's definition, its size and its first ``limit`` members."""
    from headstart.analytics.funnels import records

    return {
        "segment": {
            **spec.model_dump(mode="json", exclude={"conditions"}),
            "conditions": [
                condition.model_dump(mode="json", by_alias=True, exclude_unset=True)
                for condition in spec.conditions
            ],
        },
        "persons": len(members),
        "members": records(members.head(limit)),
    }


def _instant(value: str | None, field: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise InvalidInput(
            f"{field}={value!r} is not an ISO-8601 time; send e.g. 2024-05-01T00:00:00Z"
        ) from None
