"""Field types and checks shared by the models of the ``triggers:`` section.

Entries, steps and conditions are written as small mappings whose first key names their
kind. ``one_kind`` checks that such a mapping contains the keys of exactly one kind, so a stray
key is reported instead of ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr

from headstart.plan.durations import parse_duration

_LOCAL_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _check_local_time(value: Any) -> str:
    if not isinstance(value, str) or _LOCAL_TIME.match(value) is None:
        raise ValueError(f"expected a local time of day as HH:MM, e.g. 09:00; got {value!r}")
    return value


def _check_zone(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected an IANA time zone such as Europe/Berlin; got {value!r}")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not an IANA time zone; use a name such as Europe/Berlin or UTC"
        ) from None
    return value


Duration = Annotated[int, BeforeValidator(parse_duration)]
LocalTime = Annotated[str, BeforeValidator(_check_local_time)]
ZoneName = Annotated[str, BeforeValidator(_check_zone)]
ChannelRef = Annotated[
    StrictStr, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")
]
TraitName = Annotated[StrictStr, Field(min_length=1, max_length=200)]
KeyPath = Annotated[StrictStr, Field(min_length=1, max_length=200)]


def local_time_parts(value: str) -> tuple[int, int]:
    """Return (hour, minute) of an ``HH:MM`` string that passed validation."""
    hour, minute = value.split(":")
    return int(hour), int(minute)


class StrictModel(BaseModel):
    """Base of the trigger models: frozen, and an unknown key is a validation error."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _given(model: BaseModel, *names: str) -> list[str]:
    return [name for name in names if name in model.model_fields_set]


def first_given(model: BaseModel, names: tuple[str, ...], default: str) -> str:
    """Return the first of ``names`` the plan sets on ``model``, else ``default``."""
    return next(iter(_given(model, *names)), default)


def one_kind(model: BaseModel, kinds: dict[str, tuple[str, ...]], what: str) -> str:
    """Return the kind whose key is set; raise when none or several are, or keys are mixed.

    ``kinds`` maps each kind's key to the other keys that kind allows.
    """
    found = _given(model, *kinds)
    if len(found) != 1:
        listed = ", ".join(_shown(model, kind) for kind in kinds)
        got = f"got {', '.join(_shown(model, kind) for kind in found)}" if found else "got none"
        raise ValueError(f"each {what} needs exactly one of {listed}; {got}")
    kind = found[0]
    allowed = {kind, *kinds[kind]}
    for name in model.model_fields_set:
        if name not in allowed:
            raise ValueError(
                f"{_shown(model, name)!r} does not belong in a {_shown(model, kind)!r} {what};"
                " remove it"
            )
    return kind


def _shown(model: BaseModel, name: str) -> str:
    """Return a field's name as a plan spells it (``if`` rather than ``if_``)."""
    return type(model).model_fields[name].alias or name
