"""Load a plan file and report every problem with its file, line and field."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from headstart.errors import PlanError, PlanProblem
from headstart.plan.model import Plan
from headstart.plan.triggers import reference_problems as trigger_reference_problems


def load_plan(path: Path) -> Plan:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError([PlanProblem(str(path), None, "(file)", "file not found")]) from None
    except UnicodeDecodeError:
        raise PlanError(
            [PlanProblem(str(path), None, "(file)", "file is not UTF-8 text")]
        ) from None
    return parse_plan(text, str(path))


def parse_plan(text: str, filename: str = "<plan>") -> Plan:
    """Validate plan YAML; raise ``PlanError`` listing every problem found."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlanError(
            [PlanProblem(filename, line, "(syntax)", f"invalid YAML: {problem}")]
        ) from None
    if not isinstance(data, dict):
        raise PlanError(
            [
                PlanProblem(
                    filename,
                    1,
                    "(top level)",
                    "expected a mapping with signup, milestones and activation",
                )
            ]
        )
    duplicates = _duplicate_keys(filename, root, ())
    if duplicates:
        raise PlanError(duplicates)

    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanError([_problem(filename, root, error) for error in exc.errors()]) from None

    problems = _reference_problems(plan, filename, root)
    if problems:
        raise PlanError(problems)
    return plan


def plan_hash(plan: Plan) -> str:
    """Return a digest of the plan's meaning; formatting and comments do not change it.

    Channel settings, saved funnels, segments and triggers are left out: changing where
    messages go, how the warehouse is queried or which rules run needs no rebuild of state.
    Trigger rules apply to events processed after the change.
    """
    unused = {"channels", "funnels", "segments", "triggers"}
    return hashlib.sha256(plan.model_dump_json(exclude=unused).encode()).hexdigest()[:16]


def _problem(filename: str, root: yaml.Node | None, error: Any) -> PlanProblem:
    location = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    field = _field_name(location) or "(top level)"
    kind = error["type"]
    if kind == "missing":
        message = "is required"
        line = _line(root, location[:-1])
    elif kind == "value_error":
        # The validator's own message already names the value; drop pydantic's prefix.
        message = str(error["ctx"]["error"])
        line = _line(root, location)
    elif kind == "extra_forbidden":
        message = "is not a known field; check the spelling"
        line = _line(root, location, key=True)
    else:
        message = f"{error['msg']}; got {error.get('input')!r}"
        line = _line(root, location)
    return PlanProblem(filename, line, field, message)


def _reference_problems(plan: Plan, filename: str, root: yaml.Node | None) -> list[PlanProblem]:
    problems = []
    names = [milestone.name for milestone in plan.milestones]
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            location: tuple[str | int, ...] = ("milestones", index, "name")
            problems.append(
                PlanProblem(
                    filename,
                    _line(root, location),
                    _field_name(location),
                    f"milestone name {name!r} is used twice; names must be unique",
                )
            )
        seen.add(name)
    for index, name in enumerate(plan.activation.milestones):
        if name not in seen:
            location = ("activation", "milestones", index)
            problems.append(
                PlanProblem(
                    filename,
                    _line(root, location),
                    _field_name(location),
                    f"{name!r} is not a milestone; expected one of {', '.join(names)}",
                )
            )
    for location, message in trigger_reference_problems(plan):
        problems.append(
            PlanProblem(filename, _line(root, location), _field_name(location), message)
        )
    # Imported here: headstart.plan.analytics imports the model, which imports it back.
    from headstart.plan.analytics import reference_problems as analytics_reference_problems

    for location, message in analytics_reference_problems(plan.funnels, plan.segments, names):
        problems.append(
            PlanProblem(filename, _line(root, location), _field_name(location), message)
        )
    return problems


def _duplicate_keys(
    filename: str, node: yaml.Node | None, location: tuple[str | int, ...]
) -> list[PlanProblem]:
    """List keys that appear twice in one mapping, which YAML loaders silently collapse."""
    problems: list[PlanProblem] = []
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems.extend(_duplicate_keys(filename, item, (*location, index)))
    if not isinstance(node, yaml.MappingNode):
        return problems
    first_lines: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = key_node.value
        line = key_node.start_mark.line + 1
        if key in first_lines:
            problems.append(
                PlanProblem(
                    filename,
                    line,
                    _field_name((*location, key)),
                    f"is defined twice (first on line {first_lines[key]}); the second value "
                    "would silently replace the first, so keep one",
                )
            )
        first_lines.setdefault(key, line)
        problems.extend(_duplicate_keys(filename, value_node, (*location, key)))
    return problems


def _field_name(location: tuple[Any, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _line(root: yaml.Node | None, location: tuple[Any, ...], *, key: bool = False) -> int | None:
    """Return the 1-based line of the node at ``location`` (or of its key), or the nearest parent."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in location:
        if isinstance(node, yaml.MappingNode):
            match = next((pair for pair in node.value if pair[0].value == part), None)
            if match is None:
                return line
            key_node, node = match
            line = (key_node if key else node).start_mark.line + 1
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
