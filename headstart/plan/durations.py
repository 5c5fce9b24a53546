"""Durations in a plan, written as a number and a unit: ``90s``, ``15m``, ``2h``, ``3d``, ``1w``."""

from __future__ import annotations

import re
from typing import Any

from headstart.timeutil import MICROS_PER_SECOND

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
# The maximum wait, window, cooldown or look-back period a plan may set.
MAX_DURATION_US = 3650 * 86_400 * MICROS_PER_SECOND


def parse_duration(value: Any) -> int:
    """Parse ``"90s"``, ``"15m"``, ``"2h"``, ``"3d"`` or ``"1w"`` into microseconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value  # already parsed, e.g. a model built in Python
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected a duration such as 90s, 15m, 2h, 3d or 1w; got {value!r}")
    micros = round(float(match.group(1)) * UNITS[match.group(2)] * MICROS_PER_SECOND)
    if micros <= 0 or micros > MAX_DURATION_US:
        raise ValueError(f"duration {value!r} must be above zero and at most 3650d")
    return micros


def format_duration(micros: int) -> str:
    """Format microseconds in the largest whole unit of ``parse_duration``: ``2h``, ``90s``."""
    seconds = micros // MICROS_PER_SECOND
    for unit in ("w", "d", "h", "m"):
        size = UNITS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
