"""Segments trigger rules can use, from ``triggers.segments`` and the plan's ``segments``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from headstart.plan.triggers.conditions import Condition

if TYPE_CHECKING:
    from headstart.plan.model import Plan


def segment_definitions(plan: Plan) -> dict[str, list[Condition]]:
    """Return every segment trigger rules may use: ``triggers.segments``, then the plan's
    ``segments`` that can be evaluated from the person profile (others are left out)."""
    found: dict[str, list[Condition]] = {}
    for spec in getattr(plan, "segments", []):
        try:
            found[spec.name] = shared_segment_conditions(spec)
        except ValueError:
            continue
    if plan.triggers is not None:
        found.update(plan.triggers.segments)
    return found


def shared_segment_conditions(spec: Any) -> list[Condition]:
    """Translate a segment from the plan's ``segments:`` into trigger conditions.

    Trait, milestone and activation tests translate directly, and ``did``/``did_not``
    without ``where`` or ``within`` become event counts. The profile keeps counts per event
    name but no per-event history, so the processor cannot evaluate property filters or time
    windows. Such a segment raises ``ValueError`` with the reason.
    """
    conditions: list[Condition] = []
    for condition in spec.conditions:
        kind = condition.kind
        if kind in ("did", "did_not"):
            if condition.where or condition.within is not None:
                raise ValueError(
                    f"segment {spec.name!r} filters events by 'where' or 'within', which trigger "
                    "rules cannot evaluate in the processor; define a segment under "
                    "triggers.segments with counts, traits and milestones instead"
                )
            operator = "gte" if kind == "did" else "lt"
            event = condition.did or condition.did_not
            conditions.append(
                Condition.model_validate({"count": event, "is": {operator: condition.at_least}})
            )
        elif kind == "trait":
            fields: dict[str, Any] = {"trait": condition.trait}
            if "is_" in condition.model_fields_set:
                fields["is"] = condition.is_
            conditions.append(Condition.model_validate(fields))
        elif kind == "milestone":
            conditions.append(Condition(milestone=condition.milestone, reached=condition.reached))
        else:
            conditions.append(Condition(activated=condition.activated))
    if spec.match == "any":
        return [Condition(any=conditions)]
    return conditions
