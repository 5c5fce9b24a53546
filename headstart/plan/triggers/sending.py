"""Limits on sends: quiet hours, frequency caps and the in-app slot."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictStr, model_validator

from headstart.plan.triggers.base import ChannelRef, Duration, LocalTime, StrictModel
from headstart.timeutil import MICROS_PER_SECOND


class QuietHours(StrictModel):
    """Local hours in which sends are delayed or skipped (per rule), e.g. 21:00 to 08:00.

    ``channels`` limits them to some channels; when left out they apply to every channel.
    """

    start: LocalTime
    end: LocalTime
    channels: list[ChannelRef] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end are equal, which leaves no quiet hours; remove it")
        return self


class Cap(StrictModel):
    """At most ``max`` sends per person on ``channel`` (``"*"``: all channels together).

    ``per`` is a rolling window such as ``24h`` (no window of that length contains more than
    ``max`` sends), or ``calendar_day`` in the person's time zone.
    """

    channel: Annotated[StrictStr, Field(min_length=1, max_length=100)] = "*"
    max: Annotated[int, Field(ge=1, le=10_000)]
    per: Literal["calendar_day"] | Duration


class InApp(StrictModel):
    """The in-app slot: at most one in-app message is open per person; the rest queue.

    A message stays open until an ``In-App Message Dismissed`` or ``In-App Message Completed``
    event names it, or ``expire_after`` passes.
    """

    channel: ChannelRef = "in_app"
    expire_after: Duration = 7 * 86_400 * MICROS_PER_SECOND
