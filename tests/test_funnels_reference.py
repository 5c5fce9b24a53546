"""A plain-Python reference implementation of funnels, and tests of the reference itself.

The funnel tests compare the SQL engine with this code. It shares no code with the engine
except the spec model and ``headstart.plan.match`` (the processor's filter semantics, which
the engine's SQL must reproduce). It walks each unit's events in ``(ts, seq)`` order.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson

from headstart.events import LoggedEvent
from headstart.plan.analytics import FunnelSpec
from headstart.plan.match import compile_matcher
from headstart.plan.model import EventMatcher

NONE = "(none)"
CAMPAIGN_PARAMETERS = {
    "source": "utm_source",
    "medium": "utm_medium",
    "name": "utm_campaign",
    "term": "utm_term",
    "content": "utm_content",
}
BUCKET_UPPER_S = (60, 300, 900, 3600, 4 * 3600, 86_400, 3 * 86_400, 7 * 86_400, 14 * 86_400)
BUCKET_UPPER_S += (30 * 86_400,)
Key = tuple[int, int]


@dataclass(frozen=True)
class Event:
    """One warehouse row as the reference sees it."""

    seq: int
    person_id: str
    event: str | None
    ts: int
    properties: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    type: str = "track"

    @property
    def key(self) -> Key:
        return (self.ts, self.seq)

    def logged(self) -> LoggedEvent:
        body = {"properties": self.properties, "context": self.context}
        return LoggedEvent(
            self.seq, "src", f"m{self.seq}", "track", self.event, None, None, self.ts, 0, body
        )  # type: ignore[arg-type]


def as_row(event: Event) -> dict[str, Any]:
    """Return the event as a ``load_events`` row."""
    return {
        "seq": event.seq,
        "person_id": event.person_id,
        "event": event.event,
        "type": event.type,
        "ts": event.ts,
        "properties": event.properties,
        "context": event.context,
    }


def matcher_test(matcher: EventMatcher) -> Callable[[Event], bool]:
    predicate = compile_matcher(matcher)
    return lambda event: event.event == matcher.event and predicate(event.logged())


_MISSING = object()


def read_field(event: Event, key: str) -> Any:
    """Read a ``where`` key from an event: context.*, traits.* (context.traits) or properties."""
    head, _, rest = key.partition(".")
    if head == "context" and rest:
        value: Any = event.context
        parts = rest.split(".")
    elif head == "traits" and rest:
        value = event.context.get("traits", _MISSING)
        parts = rest.split(".")
    else:
        value = event.properties
        parts = key.split(".")
    for part in parts:
        if not isinstance(value, dict):
            return _MISSING
        value = value.get(part, _MISSING)
    return value


def json_text(value: Any) -> str | None:
    """Render a JSON value as SQL ``->>`` does: strings bare, null and missing as None."""
    if value is _MISSING or value is None:
        return None
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


@dataclass
class Unit:
    """The reference result for one counting unit."""

    person_id: str
    held: tuple[str, ...]
    depth: int
    excluded: bool
    keys: list[Key | None]
    deadline: int
    values: list[str | None]

    def time(self, step: int) -> int | None:
        key = self.keys[step - 1]
        return None if key is None else key[0]

    def value(self, step: int) -> str | None:
        """The breakdown value counted at ``step`` (one value unless attribution is per step)."""
        if len(self.values) == 1:
            return self.values[0]
        return self.values[step - 1]


class ReferenceFunnel:
    def __init__(
        self,
        spec: FunnelSpec,
        events: Iterable[Event],
        *,
        traits: dict[str, dict[str, Any]] | None = None,
        segment_members: set[str] | None = None,
    ):
        self.spec = spec
        self.traits = traits or {}
        self.segment_members = segment_members or set()
        self.by_person: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            self.by_person[event.person_id].append(event)
        for person_events in self.by_person.values():
            person_events.sort(key=lambda event: event.key)
        self.step_tests = [matcher_test(step) for step in spec.steps]
        self.exclusion_tests = [matcher_test(exclusion) for exclusion in spec.exclusions]

    # ---- units and attempts -------------------------------------------------------------

    def held_values(self, event: Event) -> tuple[str, ...] | None:
        values = []
        for key in self.spec.hold_constant:
            value = read_field(event, key)
            if value is _MISSING or value is None:
                return None
            values.append(orjson.dumps(value).decode())
        return tuple(values)

    def units(self) -> list[Unit]:
        found = []
        for person_id in sorted(self.by_person):
            events = self.by_person[person_id]
            entries: dict[tuple[str, ...], list[Event]] = defaultdict(list)
            for event in events:
                held = self.held_values(event)
                if held is None or not self.step_tests[0](event) or not self.in_range(event):
                    continue
                entries[held].append(event)
            for held in sorted(entries):
                candidates = entries[held] if self.spec.entry == "any" else entries[held][:1]
                attempts = [self.attempt(person_id, held, entry) for entry in candidates]
                attempts.sort(key=lambda unit: (unit.excluded, -unit.depth, unit.keys[0]))
                found.append(attempts[0])
        return found

    def in_range(self, event: Event) -> bool:
        start, end = self.spec.start_us, self.spec.end_us
        return (start is None or event.ts >= start) and (end is None or event.ts < end)

    def unit_events(self, person_id: str, held: tuple[str, ...]) -> list[Event]:
        return [e for e in self.by_person[person_id] if self.held_values(e) == held]

    def attempt(self, person_id: str, held: tuple[str, ...], entry: Event) -> Unit:
        deadline = entry.ts + self.spec.window_us
        events = self.unit_events(person_id, held)
        if self.spec.order == "any":
            keys = self.any_order_keys(events, entry, deadline)
        elif self.spec.order == "strict":
            keys = self.strict_keys(person_id, held, entry, deadline)
        else:
            keys = self.ordered_keys(events, entry, deadline)
        depth = next((index for index, key in enumerate(keys) if key is None), len(keys))
        unit = Unit(person_id, held, depth, False, keys, deadline, [])
        unit.excluded = self.is_excluded(events, unit)
        unit.values = self.breakdown_values(person_id, unit, events, entry)
        return unit

    def ordered_keys(self, events: list[Event], entry: Event, deadline: int) -> list[Key | None]:
        keys: list[Key | None] = [entry.key]
        position = entry.key
        for test in self.step_tests[1:]:
            match = next(
                (e for e in events if e.key > position and e.ts <= deadline and test(e)), None
            )
            if match is None:
                break
            keys.append(match.key)
            position = match.key
        return keys + [None] * (len(self.step_tests) - len(keys))

    def strict_keys(
        self, person_id: str, held: tuple[str, ...], entry: Event, deadline: int
    ) -> list[Key | None]:
        tracked = [e for e in self.by_person[person_id] if e.event is not None]
        keys: list[Key | None] = [entry.key]
        index = tracked.index(entry)
        for test in self.step_tests[1:]:
            index += 1
            if index >= len(tracked):
                break
            candidate = tracked[index]
            if not (
                test(candidate) and candidate.ts <= deadline and self.held_values(candidate) == held
            ):
                break
            keys.append(candidate.key)
        return keys + [None] * (len(self.step_tests) - len(keys))

    def any_order_keys(self, events: list[Event], entry: Event, deadline: int) -> list[Key | None]:
        firsts = []
        for test in self.step_tests[1:]:
            match = next(
                (e for e in events if e.key > entry.key and e.ts <= deadline and test(e)), None
            )
            firsts.append(None if match is None else match.key)
        keys: list[Key | None] = [entry.key]
        for step in range(2, len(self.step_tests) + 1):
            found = firsts[: step - 1]
            keys.append(None if None in found else max(k for k in found if k is not None))
        return keys

    def is_excluded(self, events: list[Event], unit: Unit) -> bool:
        for exclusion, test in zip(self.spec.exclusions, self.exclusion_tests, strict=True):
            first, last = self.spec.exclusion_span(exclusion)
            after, before = unit.keys[first - 1], unit.keys[last - 1]
            if after is None:
                continue
            for event in events:
                if not test(event) or event.key <= after:
                    continue
                if (before is None and event.ts <= unit.deadline) or (
                    before is not None and event.key < before
                ):
                    return True
        return False

    # ---- breakdown values ---------------------------------------------------------------

    def breakdown_values(
        self, person_id: str, unit: Unit, events: list[Event], entry: Event
    ) -> list[str | None]:
        breakdown = self.spec.breakdown
        if breakdown is None:
            return [None]
        if breakdown.by == "trait":
            value = json_text(self.trait(person_id, breakdown.key))
            return [value or NONE]
        if breakdown.by == "segment":
            inside = person_id in self.segment_members
            return [breakdown.key if inside else f"not {breakdown.key}"]
        if breakdown.by == "property":
            by_key = {event.key: event for event in events}
            step_values = [
                None if key is None else json_text(read_field(by_key[key], breakdown.key)) or NONE
                for key in unit.keys
            ]
            return self.attributed(step_values, unit)
        touches = self.touches(person_id)
        step_values = []
        for key in unit.keys:
            earlier = [
                value for touch_key, value in touches if key is not None and touch_key <= key
            ]
            step_values.append(None if key is None else (earlier[-1] if earlier else NONE))
        attribution = breakdown.attributed_by
        if attribution == "first_touch":
            return [touches[0][1] if touches else NONE]
        return self.attributed(step_values, unit)

    def attributed(self, step_values: list[str | None], unit: Unit) -> list[str | None]:
        attribution = self.spec.breakdown.attributed_by if self.spec.breakdown else "first_touch"
        if attribution == "per_step":
            return step_values
        if attribution == "first_touch":
            return [step_values[0]]
        return [step_values[unit.depth - 1]]

    def trait(self, person_id: str, key: str) -> Any:
        value: Any = self.traits.get(person_id, {})
        for part in key.split("."):
            if not isinstance(value, dict):
                return _MISSING
            value = value.get(part, _MISSING)
        return value

    def touches(self, person_id: str) -> list[tuple[Key, str]]:
        breakdown = self.spec.breakdown
        assert breakdown is not None
        found = []
        for event in self.by_person[person_id]:
            value = self.touch_value(event, breakdown.by, breakdown.key)
            if value is not None:
                found.append((event.key, value))
        return found

    @staticmethod
    def touch_value(event: Event, kind: str, key: str) -> str | None:
        if kind == "campaign":
            campaign = event.context.get("campaign")
            value = json_text(campaign.get(key, _MISSING)) if isinstance(campaign, dict) else None
            if value:
                return value
            value = json_text(event.properties.get(CAMPAIGN_PARAMETERS[key], _MISSING))
            if value:
                return value
            page = event.context.get("page")
            urls = (
                page.get("url") if isinstance(page, dict) else None,
                event.properties.get("url"),
            )
            for url in urls:
                found = ReferenceFunnel.url_parameter(url, CAMPAIGN_PARAMETERS[key])
                if found:
                    return found
            return None
        if event.event != "Experiment Viewed":
            return None
        ids = (
            json_text(event.properties.get("experiment_id")),
            json_text(event.properties.get("experiment_name")),
        )
        if key not in ids:
            return None
        variation = json_text(event.properties.get("variation_name"))
        if variation is not None:
            return variation
        return json_text(event.properties.get("variation_id"))

    @staticmethod
    def url_parameter(url: Any, name: str) -> str | None:
        """Return the first ``name=`` query parameter of ``url``, percent-decoded."""
        if not isinstance(url, str):
            return None
        marker = name + "="
        for start in range(len(url)):
            if url[start] in "?&" and url.startswith(marker, start + 1):
                raw = url[start + 1 + len(marker) :]
                for stop, character in enumerate(raw):
                    if character in "&#":
                        raw = raw[:stop]
                        break
                return unquote(raw) or None
        return None


# ---- aggregates ---------------------------------------------------------------------------


def step_counts(units: Sequence[Unit], steps: int) -> dict[tuple[int, str | None], int]:
    """Return {(step, breakdown value or None for overall): units reaching it}."""
    counts: dict[tuple[int, str | None], int] = defaultdict(int)
    for unit in units:
        if unit.excluded:
            continue
        for step in range(1, unit.depth + 1):
            counts[(step, None)] += 1
            value = unit.value(step)
            if value is not None:
                counts[(step, value)] += 1
    return dict(counts)


def in_progress(units: Sequence[Unit], steps: int, as_of: int) -> dict[tuple[int, str | None], int]:
    """Return {(step, value): units that stopped before ``step`` with the window still open}."""
    counts: dict[tuple[int, str | None], int] = defaultdict(int)
    for unit in units:
        if unit.excluded or unit.depth >= steps or unit.deadline <= as_of:
            continue
        counts[(unit.depth + 1, None)] += 1
        value = unit.value(unit.depth)
        if value is not None:
            counts[(unit.depth + 1, value)] += 1
    return dict(counts)


def median_times(units: Sequence[Unit], steps: int) -> dict[int, tuple[float | None, float | None]]:
    """Return {step: (median µs from the previous step, median µs from the entry)}."""
    result: dict[int, tuple[float | None, float | None]] = {}
    for step in range(1, steps + 1):
        reached = [u for u in units if not u.excluded and u.depth >= step]
        if not reached:
            result[step] = (None, None)
            continue
        if step == 1:
            result[step] = (None, 0.0)
            continue
        previous = [u.time(step) - u.time(step - 1) for u in reached]  # type: ignore[operator]
        entry = [u.time(step) - u.time(1) for u in reached]  # type: ignore[operator]
        result[step] = (float(statistics.median(previous)), float(statistics.median(entry)))
    return result


def histogram(units: Sequence[Unit], steps: int) -> dict[tuple[int, int], int]:
    """Return {(step, bucket index): units} of the time from the previous step."""
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for unit in units:
        if unit.excluded:
            continue
        for step in range(2, unit.depth + 1):
            seconds = (unit.time(step) - unit.time(step - 1)) / 1_000_000  # type: ignore[operator]
            bucket = next(
                (index for index, upper in enumerate(BUCKET_UPPER_S) if seconds < upper),
                len(BUCKET_UPPER_S),
            )
            counts[(step, bucket)] += 1
    return dict(counts)


# ---- tests of the reference itself --------------------------------------------------------

HOUR = 3_600_000_000


def spec_of(*names: str, **options: Any) -> FunnelSpec:
    return FunnelSpec.model_validate({"steps": [{"event": n} for n in names], **options})


def test_reference_ordered_skips_other_events() -> None:
    events = [
        Event(1, "p", "A", 0),
        Event(2, "p", "X", HOUR),
        Event(3, "p", "B", 2 * HOUR),
    ]
    [unit] = ReferenceFunnel(spec_of("A", "B"), events).units()
    assert unit.depth == 2
    assert unit.keys == [(0, 1), (2 * HOUR, 3)]


def test_reference_strict_stops_at_other_event() -> None:
    events = [
        Event(1, "p", "A", 0),
        Event(2, "p", "X", HOUR),
        Event(3, "p", "B", 2 * HOUR),
    ]
    [unit] = ReferenceFunnel(spec_of("A", "B", order="strict"), events).units()
    assert unit.depth == 1


def test_reference_any_order_completion_key() -> None:
    events = [
        Event(1, "p", "A", 0),
        Event(2, "p", "C", HOUR),
        Event(3, "p", "B", 2 * HOUR),
    ]
    [unit] = ReferenceFunnel(spec_of("A", "B", "C", order="any"), events).units()
    assert unit.depth == 3
    assert unit.keys == [(0, 1), (2 * HOUR, 3), (2 * HOUR, 3)]


def test_reference_campaign_from_page_url() -> None:
    event = Event(
        1, "p", "A", 0, context={"page": {"url": "https://x.test/?a=1&utm_source=mail%20x#top"}}
    )
    assert ReferenceFunnel.touch_value(event, "campaign", "source") == "mail x"
