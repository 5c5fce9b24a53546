"""Conditions on the person's profile, used by rules, branches, exits, goals and segments."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictStr, model_validator

from headstart.plan.model import Name
from headstart.plan.triggers.base import StrictModel, TraitName, first_given, one_kind


class Condition(StrictModel):
    """A test on the person's profile, evaluated when it matters.

    - ``{trait: plan, is: pro}``: ``is`` takes what ``where`` takes (a value, a list of
      values, or operators such as ``{gte: 3}``); without ``is`` the trait must be set.
    - ``{milestone: created_project}`` (``reached: false`` for the opposite).
    - ``{activated: true}``, ``{signed_up: true}``.
    - ``{count: Project Created, is: {gte: 3}}``: how often the person did an event.
    - ``{segment: power_users}`` (``member: false`` for the opposite).
    - ``{any: [...]}`` holds when one of the listed conditions does; ``{not: {...}}`` negates.
    """

    trait: TraitName | None = None
    milestone: Name | None = None
    activated: bool | None = None
    signed_up: bool | None = None
    count: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    segment: Name | None = None
    any: Annotated[list[Condition], Field(min_length=1)] | None = None
    not_: Condition | None = Field(default=None, alias="not")
    is_: Any = Field(default=None, alias="is")
    reached: bool = True
    member: bool = True

    @model_validator(mode="after")
    def _check_kind(self) -> Condition:
        kinds: dict[str, tuple[str, ...]] = {
            "trait": ("is_",),
            "milestone": ("reached",),
            "activated": (),
            "signed_up": (),
            "count": ("is_",),
            "segment": ("member",),
            "any": (),
            "not_": (),
        }
        kind = one_kind(self, kinds, "condition")
        if kind == "count" and "is_" not in self.model_fields_set:
            raise ValueError(
                "a count condition needs 'is', e.g. {count: Project Created, is: {gte: 3}}"
            )
        return self

    @property
    def kind(self) -> str:
        names = ("trait", "milestone", "activated", "signed_up", "count", "segment", "any")
        return first_given(self, names, "not")


Condition.model_rebuild()
