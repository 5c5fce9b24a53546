"""Compile the plan's event matchers into predicates over logged events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headstart.events import LoggedEvent
from headstart.plan.model import EventMatcher

Predicate = Callable[[LoggedEvent], bool]
_MISSING = object()
# What readers return for an absent field.
MISSING = _MISSING


def compile_matcher(matcher: EventMatcher) -> Predicate:
    """Return a predicate that is true when every ``where`` condition holds for an event.

    The event name is not checked here: callers index matchers by name first.
    """
    checks = [_compile_condition(key, condition) for key, condition in matcher.where.items()]
    if not checks:
        return _always
    return lambda event: all(check(event) for check in checks)


def _always(event: LoggedEvent) -> bool:
    return True


def _compile_condition(key: str, condition: Any) -> Predicate:
    read = _reader(key)
    if isinstance(condition, dict):
        tests = [_operator(op, operand) for op, operand in condition.items()]
        return lambda event: all(test(read(event)) for test in tests)
    if isinstance(condition, list):
        allowed = condition
        return lambda event: _member(read(event), allowed)
    expected = condition
    return lambda event: _same(read(event), expected)


def value_test(condition: Any) -> Callable[[Any], bool]:
    """Return a test of one value with ``where`` semantics: a value, a list or operators.

    A value that is absent must be passed as ``MISSING``, so ``{exists: false}`` holds for it.
    """
    if isinstance(condition, dict):
        tests = [_operator(op, operand) for op, operand in condition.items()]
        return lambda value: all(test(value) for test in tests)
    if isinstance(condition, list):
        allowed = condition
        return lambda value: _member(value, allowed)
    expected = condition
    return lambda value: _same(value, expected)


def field_reader(key: str) -> Callable[[LoggedEvent], Any]:
    """Return a function that reads ``key`` from an event as ``where`` does, or ``MISSING``."""
    return _reader(key)


def _reader(key: str) -> Callable[[LoggedEvent], Any]:
    """Return a function that reads ``key`` from an event, or ``_MISSING``."""
    head, _, rest = key.partition(".")
    if head == "context" and rest:
        return _path_reader(lambda event: event.body.get("context"), rest.split("."))
    if head == "traits" and rest:
        return _path_reader(lambda event: event.traits, rest.split("."))
    return _path_reader(lambda event: event.properties, key.split("."))


def _path_reader(
    root: Callable[[LoggedEvent], Any], parts: list[str]
) -> Callable[[LoggedEvent], Any]:
    def read(event: LoggedEvent) -> Any:
        value = root(event)
        for part in parts:
            if not isinstance(value, dict):
                return _MISSING
            value = value.get(part, _MISSING)
        return value

    return read


def _operator(op: str, operand: Any) -> Callable[[Any], bool]:
    if op == "eq":
        return lambda value: _same(value, operand)
    if op == "ne":
        return lambda value: value is not _MISSING and not _same(value, operand)
    if op == "in":
        return lambda value: _member(value, operand)
    if op == "not_in":
        return lambda value: value is not _MISSING and not _member(value, operand)
    if op == "exists":
        return lambda value: (value is not _MISSING and value is not None) == bool(operand)
    if op == "contains":
        return lambda value: _contains(value, operand)
    return _comparison(op, operand)


def _contains(value: Any, operand: Any) -> bool:
    """Substring test for strings, membership test for lists; False for other values."""
    if isinstance(value, str):
        return isinstance(operand, str) and operand in value
    return isinstance(value, list) and _member(operand, value)


def _same(value: Any, expected: Any) -> bool:
    """Compare as JSON does: ``true`` never equals ``1``, unlike Python's ``True == 1``."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value == expected
    return bool(value == expected)


def _member(value: Any, allowed: Any) -> bool:
    return any(_same(value, candidate) for candidate in allowed)


def _comparison(op: str, operand: Any) -> Callable[[Any], bool]:
    def compare(value: Any) -> bool:
        if value is _MISSING or value is None or isinstance(value, bool):
            return False
        try:
            if op == "gt":
                return bool(value > operand)
            if op == "gte":
                return bool(value >= operand)
            if op == "lt":
                return bool(value < operand)
            return bool(value <= operand)
        except TypeError:
            return False

    return compare
