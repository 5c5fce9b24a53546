"""``headstart segments``: the plan's segment sizes, one segment's members, or one membership."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from headstart.cli.analytics_render import render_members, render_membership, render_segments
from headstart.cli.common import DEFAULT_DATA_DIR, DataDirOption, JsonOption
from headstart.cli.remote import AdminKeyOption, ApiRequest, AsOfOption, parse_as_of, run_analysis
from headstart.datadir import DataDir
from headstart.errors import InvalidInput, NotFound
from headstart.plan.model import Plan

DATA = Path(DEFAULT_DATA_DIR)


def segments_command(
    name: Annotated[
        str | None, typer.Argument(help="Show this segment's members instead of all sizes.")
    ] = None,
    person: Annotated[
        str | None,
        typer.Option(help="With NAME: whether this person (id, user id or anonymous id) is in."),
    ] = None,
    limit: Annotated[int, typer.Option(help="How many members to list.")] = 50,
    as_of: AsOfOption = None,
    data_dir: DataDirOption = DATA,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the plan's segments with their sizes, or one segment's members."""
    params: dict[str, Any] = {"as_of": as_of}
    if name is None:
        if person is not None:
            raise InvalidInput("--person needs a segment NAME")
        run_analysis(
            data_dir,
            admin_key,
            ApiRequest("/api/segments", params),
            lambda warehouse, plan: _local_sizes(warehouse, plan, params),
            render_segments,
            as_json=as_json,
        )
        return
    if person is not None:
        run_analysis(
            data_dir,
            admin_key,
            ApiRequest(f"/api/segments/{name}/persons/{person}", params),
            lambda warehouse, plan: _local_membership(
                warehouse, plan, name, person, params, data_dir
            ),
            render_membership,
            as_json=as_json,
        )
        return
    params["limit"] = limit
    run_analysis(
        data_dir,
        admin_key,
        ApiRequest(f"/api/segments/{name}", params),
        lambda warehouse, plan: _local_members(warehouse, plan, name, params),
        render_members,
        as_json=as_json,
    )


def _plan_segments(plan: Plan | None) -> list[Any]:
    return list(plan.segments) if plan is not None else []


def _local_sizes(warehouse: Any, plan: Plan | None, params: dict[str, Any]) -> dict[str, Any]:
    from headstart.analytics.funnels import records
    from headstart.analytics.segments import segment_sizes

    sizes = segment_sizes(warehouse, _plan_segments(plan), as_of=parse_as_of(params.get("as_of")))
    return {"segments": records(sizes)}


def _local_members(
    warehouse: Any, plan: Plan | None, name: str, params: dict[str, Any]
) -> dict[str, Any]:
    from headstart.analytics.segments import find_segment, segment_members
    from headstart.api.analytics_routes import segment_members_view

    spec = find_segment(_plan_segments(plan), name)
    members = segment_members(warehouse, spec, as_of=parse_as_of(params.get("as_of")))
    return segment_members_view(spec, members, params["limit"])


def _local_membership(
    warehouse: Any,
    plan: Plan | None,
    name: str,
    identifier: str,
    params: dict[str, Any],
    data_dir: Path,
) -> dict[str, Any]:
    from headstart.analytics.segments import find_segment, in_segment
    from headstart.state.store import StateStore

    spec = find_segment(_plan_segments(plan), name)
    store = StateStore(DataDir.existing(data_dir).state_path)
    try:
        person_id = store.find_person_id(identifier)
    finally:
        store.close()
    if person_id is None:
        raise NotFound(f"no person has the identifier {identifier!r}")
    member = in_segment(warehouse, spec, person_id, as_of=parse_as_of(params.get("as_of")))
    return {"segment": name, "person_id": person_id, "member": member}
