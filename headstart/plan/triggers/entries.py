"""Rule entries: an event, an absence, a stall, a trait change or a segment."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictStr, model_validator

from headstart.plan.model import EventMatcher, Name
from headstart.plan.triggers.base import Duration, KeyPath, StrictModel, TraitName, one_kind


class Entry(StrictModel):
    """The way a person enters a rule. Exactly one kind:

    - event: ``{event: Signed Up, where: {...}, key: properties.project_id}``.
    - absence: ``{after: {event: Import Started}, missing: {event: Import Finished},
      within: 2h, key: properties.import_id}``: entered when ``missing`` has not happened
      within ``within`` after ``after``, both carrying the same key when one is set.
    - stall: ``{stalled_for: 3d}``: entered when the person has made no progress to the next
      plan milestone within that time of the previous milestone or of sign-up.
    - trait change: ``{trait: plan, from: free, to: pro}``; ``from`` and ``to`` take what
      ``where`` takes, and either may be left out.
    - segment: ``{segment: power_users}``: entered when the person becomes a member.
    """

    event: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    where: dict[str, Any] = Field(default_factory=dict)
    key: KeyPath | None = None
    after: EventMatcher | None = None
    missing: EventMatcher | None = None
    within: Duration | None = None
    stalled_for: Duration | None = None
    trait: TraitName | None = None
    from_: Any = Field(default=None, alias="from")
    to: Any = None
    segment: Name | None = None

    @model_validator(mode="after")
    def _check_kind(self) -> Entry:
        kinds: dict[str, tuple[str, ...]] = {
            "event": ("where", "key"),
            "after": ("missing", "within", "key"),
            "stalled_for": (),
            "trait": ("from_", "to"),
            "segment": (),
        }
        kind = one_kind(self, kinds, "entry")
        if kind == "after":
            missing = [name for name in ("missing", "within") if name not in self.model_fields_set]
            if missing:
                raise ValueError(
                    f"an absence entry needs {' and '.join(missing)}, e.g. "
                    "{after: {event: Import Started}, missing: {event: Import Finished}, within: 2h}"
                )
        if kind == "event":
            EventMatcher(event=self.event or "", where=self.where)  # checks the operators
        return self

    @property
    def kind(self) -> Literal["event", "absence", "stall", "trait", "segment"]:
        if self.event is not None:
            return "event"
        if self.after is not None:
            return "absence"
        if self.stalled_for is not None:
            return "stall"
        if self.trait is not None:
            return "trait"
        return "segment"

    def matcher(self) -> EventMatcher:
        """Return the entry event of an event entry as an ``EventMatcher``."""
        assert self.event is not None
        return EventMatcher(event=self.event, where=self.where)
