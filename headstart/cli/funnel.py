"""``headstart funnel``: a funnel or its friction points, from the server or the directory.

The funnel comes from ``--step`` options, a saved funnel (``--name``) or a spec file
(``--spec``). An ad-hoc funnel is posted to ``/api/funnels`` or ``/api/friction``, and a saved
one is read from ``/api/funnels/NAME``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
import yaml
from pydantic import ValidationError

from headstart.cli.analytics_render import render_friction, render_funnel
from headstart.cli.common import DEFAULT_DATA_DIR, DataDirOption, JsonOption
from headstart.cli.remote import AdminKeyOption, ApiRequest, AsOfOption, parse_as_of, run_analysis
from headstart.errors import InvalidInput, NotFound
from headstart.plan.analytics import FunnelSpec
from headstart.plan.model import Plan

DATA = Path(DEFAULT_DATA_DIR)


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
    order: Annotated[str | None, typer.Option(help="ordered (the default), strict or any.")] = None,
    window: Annotated[
        str | None,
        typer.Option(help="Conversion window from the entry, e.g. 30m, 12h, 7d (default), 2w."),
    ] = None,
    entry: Annotated[
        str | None,
        typer.Option(
            help="first (the default): one attempt per unit; any: every step-1 event, best counts."
        ),
    ] = None,
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
    if friction_after is not None:
        mode = _choice(friction_mode, ("between", "next"), "--friction-mode")
        params.update(step=friction_after, mode=mode)
        path = "/api/friction" if spec is not None else f"/api/funnels/{name}/friction"
        local, render = _local_friction, render_friction
    else:
        if persons is not None:
            persons_step, persons_status = _selection(persons)
            params.update(
                persons_step=persons_step, persons_status=persons_status, persons_limit=limit
            )
        path = "/api/funnels" if spec is not None else f"/api/funnels/{name}"
        local, render = _local_funnel, render_funnel
    # An ad-hoc funnel travels as the request body, and a saved one is named in the path.
    request = (
        ApiRequest(path, params)
        if spec is None
        else ApiRequest(path, params, "POST", spec.model_dump(mode="json", by_alias=True))
    )
    run_analysis(
        data_dir,
        admin_key,
        request,
        lambda warehouse, plan: local(warehouse, plan, _chosen(plan, spec, name), params),
        render,
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
    if name is not None or spec_file is not None:
        given = [key for key, value in options.items() if value]
        if where:
            given.insert(0, "where")
        if given:
            flags = ", ".join(f"--{key.replace('_', '-')}" for key in given)
            raise InvalidInput(
                f"{flags} cannot change a funnel given by --name or --spec; change the saved "
                "definition, or give the steps with --step"
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
        problems = "; ".join(_problem(error) for error in exc.errors())
        raise InvalidInput(f"invalid funnel in {origin}: {problems}") from None


def _problem(error: Any) -> str:
    """Name the field, then the validator's own message or pydantic's with the given value."""
    field = ".".join(str(part) for part in error["loc"]) or "funnel"
    if error["type"] == "value_error":
        return f"{field}: {error['ctx']['error']}"
    return f"{field}: {error['msg']}; got {error.get('input')!r}"


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
    return index, key.strip(), _value(value)


def _value(text: str) -> Any:
    """Read a filter value as YAML, except that only true and false are booleans.

    YAML 1.1 also reads yes, no, on and off as booleans, which would turn a country code
    such as NO or a survey answer into false.
    """
    try:
        parsed = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        return text
    if isinstance(parsed, bool) and text.strip().lower() not in ("true", "false"):
        return text
    return parsed


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


def _chosen(plan: Plan | None, spec: FunnelSpec | None, name: str | None) -> FunnelSpec:
    """Return the ad-hoc ``spec``, or without one the funnel saved in the plan as ``name``."""
    return spec if spec is not None else _saved(plan, name)


def _saved(plan: Plan | None, name: str | None) -> FunnelSpec:
    funnels = plan.funnels if plan is not None else []
    for spec in funnels:
        if spec.name == name:
            return spec
    known = ", ".join(spec.name or "" for spec in funnels) or "none"
    raise NotFound(f"funnel {name!r} is not saved in the plan's funnels (saved: {known})")


def _local_funnel(
    warehouse: Any, plan: Plan | None, spec: FunnelSpec, params: dict[str, Any]
) -> dict[str, Any]:
    from headstart.analytics.funnels import PersonSelection, run_funnel

    selection = None
    if params.get("persons_step") is not None:
        selection = PersonSelection(
            params["persons_step"], params["persons_status"], params["persons_limit"]
        )
    result = run_funnel(
        warehouse,
        spec,
        as_of=parse_as_of(params.get("as_of")),
        segments=plan.segments if plan is not None else (),
        persons=selection,
    )
    return result.to_dict()


def _local_friction(
    warehouse: Any, plan: Plan | None, spec: FunnelSpec, params: dict[str, Any]
) -> dict[str, Any]:
    from headstart.analytics.friction import friction_points

    result = friction_points(
        warehouse,
        spec,
        params["step"],
        mode=params["mode"],
        as_of=parse_as_of(params.get("as_of")),
        segments=plan.segments if plan is not None else (),
    )
    return result.to_dict()
