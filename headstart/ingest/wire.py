"""Wire models of the Segment spec messages, validated at the HTTP boundary.

Unknown top-level fields are kept, as Segment keeps them. ``userId`` and ``anonymousId`` may be
strings or integers (the SDKs of typed languages send numbers); JSON ``null`` counts as absent.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

Identifier = StrictStr | StrictInt
Name = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Timestamp = Annotated[StrictStr, Field(max_length=64)]
JsonObject = dict[str, Any]


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    messageId: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    userId: Identifier | None = None
    anonymousId: Identifier | None = None
    timestamp: Timestamp | None = None
    originalTimestamp: Timestamp | None = None
    sentAt: Timestamp | None = None
    context: JsonObject | None = None
    integrations: JsonObject | None = None


class TrackMessage(_Message):
    """A user action: ``event`` names it and ``properties`` describe it."""

    event: Name
    properties: JsonObject | None = None


class IdentifyMessage(_Message):
    """Ties a user to their actions and records ``traits`` about them."""

    traits: JsonObject | None = None


class PageMessage(_Message):
    """A web page view, with the page ``name`` and ``properties`` such as url and referrer."""

    name: Annotated[StrictStr, Field(max_length=256)] | None = None
    category: Annotated[StrictStr, Field(max_length=256)] | None = None
    properties: JsonObject | None = None


class ScreenMessage(PageMessage):
    """A mobile screen view; the same shape as a page view."""


class GroupMessage(_Message):
    """Associates the user with a ``groupId`` (an account or organisation) and its ``traits``."""

    groupId: Identifier
    traits: JsonObject | None = None


class AliasMessage(_Message):
    """Declares that ``previousId`` and ``userId`` are the same user."""

    previousId: Identifier


WIRE_MODELS: dict[str, type[_Message]] = {
    "track": TrackMessage,
    "identify": IdentifyMessage,
    "page": PageMessage,
    "screen": ScreenMessage,
    "group": GroupMessage,
    "alias": AliasMessage,
}
