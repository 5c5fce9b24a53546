"""The steps of a rule: waits, actions (sends, webhooks, traits, emitted events) and branches."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictStr, model_validator

from headstart.plan.model import EventMatcher, Name
from headstart.plan.triggers.base import (
    ChannelRef,
    Duration,
    LocalTime,
    StrictModel,
    TraitName,
    first_given,
    one_kind,
)
from headstart.plan.triggers.conditions import Condition


class Step(StrictModel):
    """One step of a rule. Exactly one kind:

    - ``{wait: 2h}``: a fixed delay.
    - ``{wait_until: "09:00"}``: the next 09:00 in the person's time zone.
    - ``{wait_for: {event: Import Finished, where: {...}}, timeout: 1d, on_event: [...],
      on_timeout: [...]}``: waits for the event (with the rule's correlation key when
      ``same_key`` is true) or the timeout, then runs the matching branch.
    - ``{send: email, template: welcome}``: a message on a channel; ``to`` overrides the
      recipient with a template expression.
    - ``{set_trait: nudged, value: true}``: sets a trait through an identify call.
    - ``{webhook: crm, template: ...}``: a signed POST through the ``webhook`` channel.
    - ``{emit: Trial Nudged, properties: {...}}``: appends a track event to the log.
    - ``{if: [conditions], then: [...], else: [...]}``: a branch on conditions.

    ``id`` names the step in decisions and idempotency keys; it defaults to its position.
    """

    id: Name | None = None
    wait: Duration | None = None
    wait_until: LocalTime | None = None
    wait_for: WaitForEvent | None = None
    timeout: Duration | None = None
    on_event: list[Step] = Field(default_factory=list)
    on_timeout: list[Step] = Field(default_factory=list)
    send: ChannelRef | None = None
    template: Name | None = None
    to: Annotated[StrictStr, Field(min_length=1, max_length=1000)] | None = None
    set_trait: TraitName | None = None
    value: Any = None
    webhook: Name | None = None
    channel: ChannelRef | None = None
    emit: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    if_: Annotated[list[Condition], Field(min_length=1)] | None = Field(default=None, alias="if")
    then: list[Step] = Field(default_factory=list)
    else_: list[Step] = Field(default_factory=list, alias="else")

    @model_validator(mode="after")
    def _check_kind(self) -> Step:
        kinds: dict[str, tuple[str, ...]] = {
            "wait": ("id",),
            "wait_until": ("id",),
            "wait_for": ("id", "timeout", "on_event", "on_timeout"),
            "send": ("id", "template", "to"),
            "set_trait": ("id", "value"),
            "webhook": ("id", "template", "channel"),
            "emit": ("id", "properties"),
            "if_": ("id", "then", "else_"),
        }
        kind = one_kind(self, kinds, "step")
        if kind == "wait_for" and self.timeout is None:
            raise ValueError("a wait_for step needs a timeout, e.g. timeout: 1d")
        if kind == "send" and self.template is None:
            raise ValueError("a send step needs a template, e.g. {send: email, template: welcome}")
        if kind == "set_trait" and "value" not in self.model_fields_set:
            raise ValueError(
                "a set_trait step needs a value, e.g. {set_trait: nudged, value: true}"
            )
        return self

    @property
    def kind(self) -> str:
        names = ("wait", "wait_until", "wait_for", "send", "set_trait", "webhook", "emit")
        return first_given(self, names, "if")


class WaitForEvent(EventMatcher):
    """The event a ``wait_for`` step waits for; ``same_key`` requires the rule's key to match."""

    same_key: bool = True


Step.model_rebuild()


def step_identifier(step: Step, prefix: str, index: int) -> str:
    """Return a step's id: its own ``id``, else its 1-based position such as ``2.on_event.1``."""
    return step.id if step.id is not None else f"{prefix}{index + 1}"
