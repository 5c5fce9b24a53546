"""``headstart funnel`` and ``headstart segments``.

With a server running on the data directory, a command calls its REST API (``/api/funnels``,
``/api/friction``, ``/api/segments``) with the admin key, because the server has the
warehouse file open. Otherwise it catches up the processor, syncs ``analytics.duckdb`` and runs
the analysis in this process. Both paths return the same JSON, which ``--json`` prints as is
and the default view renders as tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from headstart.cli.common import DEFAULT_DATA_DIR, DataDirOption, JsonOption
from headstart.cli.remote import (
    AdminKeyOption,
    ApiRequest,
    AsOfOption,
    parse_as_of,
    run_analysis,
)
from headstart.datadir import DataDir
from headstart.errors import InvalidInput, NotFound
from headstart.plan.analytics import FunnelSpec
from headstart.plan.model import Plan

DATA = Path(DEFAULT_DATA_DIR)


def register(app: typer.Typer) -> None:
    """Add the funnel and segments commands to ``app``."""
    app.command("funnel")(funnel_command)
    app.command("segments")(segments_command)


# ---- funnel -----------------------------------------------------------------------------------


def funnel_command(
    step: Annotated[
        list[str] | None,
        typer.Option("--step", help="Step event name, in order (repeat for each step)."),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            help="Filter STEP:KEY=VALUE on step number STEP, e.g. 2:name=Pricing (repeatable)."
            " VALUE is read as YAML, so 3 is a number and true a boolean."
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Run the funnel saved in the plan by this name.")
    ] = None,
    spec_file: Annotated[
        Path | None, typer.Option("--spec", help="Read the funnel from a YAML or JSON file.")
    ] = None,
    order: Annotated[str, typer.Option(help="ordered, strict or any.")] = "ordered",
    window: Annotated[
        str, typer.Option(help="Conversion window from the entry, e.g. 30m, 12h, 7d, 2w.")
    ] = "7d",
    entry: Annotated[
        str,
        typer.Option(help="first: one attempt per unit; any: every step-1 event, best counts."),
    ] = "first",
    start: Annotated[
        str | None, typer.Option(help="Entries at or after this ISO-8601 time.")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Entries before this ISO-8601 time.")] = None,
    hold: Annotated[
        list[str] | None,
        typer.Option(help="Property every step must share, e.g. project_id (repeatable)."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(help="Exclusion EVENT or EVENT@I-J (between steps I and J) (repeatable)."),
    ] = None,
    breakdown: Annotated[
        str | None,
        typer.Option(
            help="BY:KEY with BY one of trait, property, campaign, experiment, segment,"
            " e.g. campaign:source."
        ),
    ] = None,
    attribution: Annotated[
        str | None,
        typer.Option(help="first_touch, last_touch or per_step (property, campaign, experiment)."),
    ] = None,
    persons: Annotated[
        str | None,
        typer.Option(
            help="List units: STEP (reached it) or STEP:dropped (reached it, not the next)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(help="How many units --persons lists.")] = 50,
    friction_after: Annotated[
        int | None,
        typer.Option(help="Show what units did after this step, dropped against converted."),
    ] = None,
    friction_mode: Annotated[
        str, typer.Option(help="between: every event until the next step; next: the first.")
    ] = "between",
    as_of: AsOfOption = None,
    data_dir: DataDirOption = DATA,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a funnel: units per step, conversion, drop-off and time to convert."""
    spec = _spec_from_options(
        step,
        where,
        name,
        spec_file,
        {
            "order": order,
            "window": window,
            "entry": entry,
            "start": start,
            "end": end,
            "hold_constant": hold or [],
            "exclusions": [_exclusion(text) for text in exclude or []],
            "breakdown": _breakdown(breakdown, attribution),
        },
    )
    params: dict[str, Any] = {"as_of": as_of}
    body = None if spec is None else spec.model_dump(mode="json", by_alias=True)
    if friction_after is not None:
        mode = _choice(friction_mode, ("between", "next"), "--friction-mode")
        params.update(step=friction_after, mode=mode)
        path = "/api/friction" if spec is not None else f"/api/funnels/{name}/friction"
        run_analysis(
            data_dir,
            admin_key,
            ApiRequest(path, params, "POST" if spec is not None else "GET", body),
            lambda warehouse, plan: _local_friction(warehouse, plan, spec, name, params),
            render_friction,
            as_json=as_json,
        )
        return
    if persons is not None:
        persons_step, persons_status = _selection(persons)
        params.update(persons_step=persons_step, persons_status=persons_status, persons_limit=limit)
    path = "/api/funnels" if spec is not None else f"/api/funnels/{name}"
    run_analysis(
        data_dir,
        admin_key,
        ApiRequest(path, params, "POST" if spec is not None else "GET", body),
        lambda warehouse, plan: _local_funnel(warehouse, plan, spec, name, params),
        render_funnel,
        as_json=as_json,
    )


def _spec_from_options(
    steps: list[str] | None,
    where: list[str] | None,
    name: str | None,
    spec_file: Path | None,
    options: dict[str, Any],
) -> FunnelSpec | None:
    """Build the ad-hoc spec from the options; None when ``--name`` picks a saved funnel."""
    sources = [given for given in (steps, name, spec_file) if given]
    if len(sources) != 1:
        raise InvalidInput(
            "give the funnel one way: --step for each step, --name SAVED, or --spec FILE"
        )
    if name is not None:
        return None
    if spec_file is not None:
        return _spec_file(spec_file)
    filters: dict[int, dict[str, Any]] = {}
    for text in where or []:
        index, key, value = _where(text, len(steps or []))
        filters.setdefault(index, {})[key] = value
    data = {
        "steps": [
            {"event": event, "where": filters.get(index, {})}
            for index, event in enumerate(steps or [], start=1)
        ],
        **{key: value for key, value in options.items() if value is not None},
    }
    return _validated(data, "the options")


def _spec_file(path: Path) -> FunnelSpec:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"--spec {path}: file not found") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"--spec {path}: invalid YAML or JSON: {exc}") from None
    return _validated(data, str(path))


def _validated(data: Any, origin: str) -> FunnelSpec:
    try:
        return FunnelSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'funnel'}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidInput(f"invalid funnel in {origin}: {problems}") from None


def _where(text: str, steps: int) -> tuple[int, str, Any]:
    """Parse ``STEP:KEY=VALUE`` into (step, key, value read as YAML)."""
    head, separator, value = text.partition("=")
    number, colon, key = head.partition(":")
    if not separator or not colon or not key or not number.strip().isdigit():
        raise InvalidInput(
            f"--where {text!r} is not STEP:KEY=VALUE; write e.g. --where 2:name=Pricing"
        )
    index = int(number)
    if not 1 <= index <= steps:
        raise InvalidInput(f"--where {text!r} names step {index}; there are {steps} steps")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    return index, key.strip(), parsed


def _exclusion(text: str) -> dict[str, Any]:
    event, at, span = text.rpartition("@") if "@" in text else (text, "", "")
    if not at:
        return {"event": text}
    first, dash, last = span.partition("-")
    if not dash or not first.isdigit() or not last.isdigit():
        raise InvalidInput(f"--exclude {text!r} is not EVENT@I-J; write e.g. 'Error@1-2'")
    return {"event": event, "between": [int(first), int(last)]}


def _breakdown(text: str | None, attribution: str | None) -> dict[str, Any] | None:
    if text is None:
        if attribution is not None:
            raise InvalidInput("--attribution needs --breakdown")
        return None
    by, colon, key = text.partition(":")
    if not colon or not key:
        raise InvalidInput(f"--breakdown {text!r} is not BY:KEY; write e.g. campaign:source")
    found: dict[str, Any] = {"by": by, "key": key}
    if attribution is not None:
        found["attribution"] = attribution
    return found


def _selection(text: str) -> tuple[int, Literal["reached", "dropped"]]:
    number, _, status = text.partition(":")
    if not number.isdigit() or status not in ("", "reached", "dropped"):
        raise InvalidInput(f"--persons {text!r} is not STEP or STEP:dropped; write e.g. 2:dropped")
    return int(number), "dropped" if status == "dropped" else "reached"


def _choice(value: str, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        raise InvalidInput(f"{option} {value!r} is not one of {', '.join(choices)}")
    return value


def _saved(plan: Plan | None, name: str | None) -> FunnelSpec:
    funnels = plan.funnels if plan is not None else []
    for spec in funnels:
        if spec.name == name:
            return spec
    known = ", ".join(spec.name or "" for spec in funnels) or "none"
    raise NotFound(f"funnel {name!r} is not saved in the plan's funnels (saved: {known})")


def _local_funnel(
    warehouse: Any,
    plan: Plan | None,
    spec: FunnelSpec | None,
    name: str | None,
    params: dict[str, Any],
) -> dict[str, Any]:
    from headstart.analytics.funnels import PersonSelection, run_funnel

    chosen = spec if spec is not None else _saved(plan, name)
    selection = None
    if params.get("persons_step") is not None:
        selection = PersonSelection(
            params["persons_step"], params["persons_status"], params["persons_limit"]
        )
    result = run_funnel(
        warehouse,
        chosen,
        as_of=parse_as_of(params.get("as_of")),
        segments=plan.segments if plan is not None else (),
        persons=selection,
    )
    return result.to_dict()


def _local_friction(
    warehouse: Any,
    plan: Plan | None,
    spec: FunnelSpec | None,
    name: str | None,
    params: dict[str, Any],
) -> dict[str, Any]:
    from headstart.analytics.friction import friction_points

    chosen = spec if spec is not None else _saved(plan, name)
    result = friction_points(
        warehouse,
        chosen,
        params["step"],
        mode=params["mode"],
        as_of=parse_as_of(params.get("as_of")),
        segments=plan.segments if plan is not None else (),
    )
    return result.to_dict()


# ---- segments ---------------------------------------------------------------------------------


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
    from headstart.analytics.funnels import records
    from headstart.analytics.segments import find_segment, segment_members

    spec = find_segment(_plan_segments(plan), name)
    members = segment_members(warehouse, spec, as_of=parse_as_of(params.get("as_of")))
    return {
        "segment": {
            **spec.model_dump(mode="json", exclude={"conditions"}),
            "conditions": [
                condition.model_dump(mode="json", by_alias=True, exclude_unset=True)
                for condition in spec.conditions
            ],
        },
        "persons": len(members),
        "members": records(members.head(params["limit"])),
    }


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
    store = StateStore(DataDir.create(data_dir).state_path)
    try:
        person_id = store.find_person_id(identifier)
    finally:
        store.close()
    if person_id is None:
        raise NotFound(f"no person has the identifier {identifier!r}")
    member = in_segment(warehouse, spec, person_id, as_of=parse_as_of(params.get("as_of")))
    return {"segment": name, "person_id": person_id, "member": member}


# ---- rendering --------------------------------------------------------------------------------


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
