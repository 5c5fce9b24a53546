"""The onboarding plan's schema.

Field names are snake_case, as YAML configuration usually is. Unknown fields are errors, so a
typo such as ``min_cout`` is reported instead of ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from headstart.plan.channels import Channels

DEFAULT_BLOCKLIST: tuple[str, ...] = (
    "",
    "null",
    "none",
    "nil",
    "undefined",
    "anonymous",
    "anon",
    "guest",
    "unknown",
    "0",
    "-1",
    "nan",
    "[object object]",
    "00000000-0000-0000-0000-000000000000",
    "{}",
)

FilterOperator = Literal["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "contains"]
OPERATORS: tuple[str, ...] = (
    "eq",
    "ne",
    "in",
    "not_in",
    "gt",
    "gte",
    "lt",
    "lte",
    "exists",
    "contains",
)
EventType = Literal["track", "page", "screen"]
Name = Annotated[StrictStr, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventMatcher(_Strict):
    """An event, by name, with optional property filters.

    ``where`` maps a property to a value (equality), a list (one of), or an operator object
    such as ``{gte: 3}``. A key that starts with ``context.`` or ``traits.`` looks there
    instead of in ``properties``; dots reach into nested objects.
    """

    event: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    where: dict[str, Any] = Field(default_factory=dict)

    @field_validator("where")
    @classmethod
    def _check_operators(cls, where: dict[str, Any]) -> dict[str, Any]:
        for key, condition in where.items():
            if not isinstance(condition, dict):
                continue
            unknown = [op for op in condition if op not in OPERATORS]
            if unknown:
                raise ValueError(
                    f"filter on {key!r} uses unknown operator {unknown[0]!r}; "
                    f"expected one of {', '.join(OPERATORS)}"
                )
            if not condition:
                raise ValueError(
                    f"filter on {key!r} has no operator; write a value, a list, or one of "
                    f"{', '.join(OPERATORS)} such as {{eq: VALUE}}"
                )
            for op, operand in condition.items():
                expected = _expected_operand(op, operand)
                if expected is not None:
                    raise ValueError(f"filter on {key!r}: {op} needs {expected}, got {operand!r}")
        return where


def _expected_operand(op: str, operand: Any) -> str | None:
    """Return what ``op`` needs when ``operand`` does not fit it, or None when it fits.

    Without this check a plan such as ``{in: 3}`` loads, and then every event it is
    tested against fails with a TypeError.
    """
    if op in ("in", "not_in"):
        return None if isinstance(operand, list) else "a list, such as [a, b]"
    if op == "exists":
        return None if isinstance(operand, bool) else "true or false"
    if op in ("gt", "gte", "lt", "lte"):
        comparable = isinstance(operand, (int, float, str)) and not isinstance(operand, bool)
        return None if comparable else "a number or a string (quote dates)"
    if op == "contains":
        return None if isinstance(operand, (str, int, float)) else "a string or a number"
    return None


class Milestone(EventMatcher):
    """A named onboarding step, reached at the ``min_count``-th matching event."""

    name: Name
    # Strict, because YAML reads `yes` as true and pydantic would turn it into 1.
    min_count: Annotated[int, Field(ge=1, le=10_000, strict=True)] = 1
    description: str | None = None


class Activation(_Strict):
    """A person is activated once every listed milestone is reached within ``within_days``."""

    milestones: Annotated[list[Name], Field(min_length=1)]
    within_days: Annotated[float, Field(gt=0, le=3650, strict=True)]


class Identity(_Strict):
    """Identity resolution settings: ids that must never merge persons."""

    blocklist: list[StrictStr] = Field(default_factory=list)
    use_default_blocklist: bool = True

    def blocked(self) -> frozenset[str]:
        base = set(DEFAULT_BLOCKLIST) if self.use_default_blocklist else set()
        return frozenset(base | {value.strip().lower() for value in self.blocklist})


# Imported here, not at the top, because these models build on EventMatcher and Name above.
from headstart.plan.analytics import SavedFunnels, SavedSegments  # noqa: E402
from headstart.plan.triggers import Triggers  # noqa: E402


class Plan(_Strict):
    """The whole onboarding plan."""

    version: Literal[1] = 1
    name: str | None = None
    signup: EventMatcher
    milestones: Annotated[list[Milestone], Field(min_length=1, max_length=50)]
    activation: Activation
    identity: Identity = Field(default_factory=Identity)
    channels: Channels = Field(default_factory=dict)
    triggers: Triggers | None = None
    funnels: SavedFunnels = Field(default_factory=list)
    segments: SavedSegments = Field(default_factory=list)

    def milestone(self, name: str) -> Milestone:
        for milestone in self.milestones:
            if milestone.name == name:
                return milestone
        raise KeyError(name)
