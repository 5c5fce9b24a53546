"""Wire models of the Segment spec messages, validated at the HTTP boundary.

Unknown top-level fields are kept, as Segment keeps them. ``userId`` and ``anonymousId`` may be
strings or integers (the SDKs of typed languages send numbers); JSON ``null`` counts as absent.
"""

from __future__ import annotations

from collections.abc import Callable
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


def _text(max_length: int, min_length: int = 0) -> Callable[[Any], bool]:
    return lambda value: type(value) is str and min_length <= len(value) <= max_length


def _identifier(value: Any) -> bool:
    return type(value) is str or type(value) is int


def _object(value: Any) -> bool:
    return type(value) is dict


_COMMON: dict[str, Callable[[Any], bool]] = {
    "messageId": _text(256, 1),
    "userId": _identifier,
    "anonymousId": _identifier,
    "timestamp": _text(64),
    "originalTimestamp": _text(64),
    "sentAt": _text(64),
    "context": _object,
    "integrations": _object,
}
_OWN: dict[str, dict[str, Callable[[Any], bool]]] = {
    "track": {"event": _text(256, 1), "properties": _object},
    "identify": {"traits": _object},
    "page": {"name": _text(256), "category": _text(256), "properties": _object},
    "screen": {"name": _text(256), "category": _text(256), "properties": _object},
    "group": {"groupId": _identifier, "traits": _object},
    "alias": {"previousId": _identifier},
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "track": ("event",),
    "group": ("groupId",),
    "alias": ("previousId",),
}
_CHECKS = {kind: {**_COMMON, **own} for kind, own in _OWN.items()}


def passes_fast_check(kind: str, raw: dict[str, Any]) -> bool:
    """Return True when ``raw`` certainly satisfies ``WIRE_MODELS[kind]``.

    This check runs for every event and costs a few microseconds, against tens for a full
    pydantic validation. It is at least as strict as the models: when it returns False, the
    caller validates with the model, which either accepts the message or explains the error.
    A property test keeps the two in agreement.
    """
    for name in _REQUIRED.get(kind, ()):
        if raw.get(name) is None:
            return False
    checks = _CHECKS[kind]
    for name, value in raw.items():
        check = checks.get(name)
        if check is not None and value is not None and not check(value):
            return False
    return True
