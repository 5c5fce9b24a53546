"""Compile the plan's ``where`` filters into DuckDB SQL over the warehouse's JSON columns.

The SQL reproduces ``headstart.plan.match`` (the processor's Python matcher), so an analysis
selects the same events the processor matched:

- A value compares as JSON values do: strings equal strings, numbers equal numbers of any
  type (1 equals 1.0), booleans equal only booleans (``true`` is not 1), and ``null`` equals
  only ``null``. A missing key equals nothing.
- ``ne`` and ``not_in`` hold for any present value (``null`` included) that differs.
- ``gt``/``gte``/``lt``/``lte`` compare numbers with numbers and strings with strings (by code
  point); missing, ``null`` and boolean values never pass.
- ``exists: true`` needs a present, non-null value.
- ``contains`` tests a substring of a string or an element of an array.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from headstart.errors import InvalidInput
from headstart.plan.model import EventMatcher

_NUMERIC_TYPES = ("BIGINT", "UBIGINT", "DOUBLE")
_COMPARISONS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def sql_string(text: str) -> str:
    """Quote text as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def json_path(parts: list[str]) -> str:
    """Return a DuckDB JSON path that reads nested object keys, quoted so any key works."""
    quoted = "".join('."' + part.replace("\\", "\\\\").replace('"', '\\"') + '"' for part in parts)
    return "$" + quoted


def field_sql(key: str, *, properties: str = "properties", context: str = "context") -> str:
    """Return the SQL JSON value ``key`` reads on an event, NULL when the key is absent.

    As in ``where``: ``context.a.b`` reads the event context, ``traits.a`` the traits sent
    in ``context.traits``, and any other key the properties; dots reach into nested objects.
    """
    head, _, rest = key.partition(".")
    if head == "context" and rest:
        return f"json_extract({context}, {sql_string(json_path(rest.split('.')))})"
    if head == "traits" and rest:
        path = json_path(["traits", *rest.split(".")])
        return f"json_extract({context}, {sql_string(path)})"
    return f"json_extract({properties}, {sql_string(json_path(key.split('.')))})"


def matcher_sql(
    matcher: EventMatcher,
    *,
    event: str = "event",
    properties: str = "properties",
    context: str = "context",
) -> str:
    """Return a SQL predicate that holds for events matching ``matcher``, name included."""
    clauses = [f"{event} = {sql_string(matcher.event)}"]
    for key, condition in matcher.where.items():
        value = field_sql(key, properties=properties, context=context)
        clauses.append(condition_sql(value, condition, key))
    return "(" + " AND ".join(clauses) + ")"


def condition_sql(value: str, condition: Any, key: str) -> str:
    """Return a SQL predicate for one ``where`` entry on the JSON value expression ``value``."""
    if isinstance(condition, dict):
        tests = [_operator_sql(value, op, operand, key) for op, operand in condition.items()]
        return "(" + " AND ".join(tests) + ")" if tests else "TRUE"
    if isinstance(condition, list):
        return _any_equal(value, condition, key)
    return _equal_sql(value, condition, key)


def _operator_sql(value: str, op: str, operand: Any, key: str) -> str:
    present = f"({value} IS NOT NULL)"
    if op == "eq":
        return _equal_sql(value, operand, key)
    if op == "ne":
        return f"({present} AND NOT coalesce({_equal_sql(value, operand, key)}, FALSE))"
    if op == "in":
        return _any_equal(value, _list_operand(operand, op, key), key)
    if op == "not_in":
        allowed = _list_operand(operand, op, key)
        return f"({present} AND NOT coalesce({_any_equal(value, allowed, key)}, FALSE))"
    if op == "exists":
        has_value = f"({present} AND json_type({value}) <> 'NULL')"
        return has_value if operand else f"(NOT coalesce({has_value}, FALSE))"
    if op == "contains":
        return _contains_sql(value, operand, key)
    if op in _COMPARISONS:
        return _compare_sql(value, _COMPARISONS[op], operand, key)
    raise InvalidInput(f"filter on {key!r} uses unknown operator {op!r}")


def _list_operand(operand: Any, op: str, key: str) -> list[Any]:
    if not isinstance(operand, list):
        raise InvalidInput(
            f"filter on {key!r}: {op} needs a list of values, e.g. {{{op}: [a, b]}}; "
            f"got {operand!r}"
        )
    return operand


def _any_equal(value: str, allowed: list[Any], key: str) -> str:
    if not allowed:
        return "FALSE"
    return "(" + " OR ".join(_equal_sql(value, item, key) for item in allowed) + ")"


def _equal_sql(value: str, operand: Any, key: str) -> str:
    """Return SQL for Python ``decoded_json == operand``; false when the key is missing."""
    kind = f"json_type({value})"
    if operand is None:
        return f"coalesce({kind} = 'NULL', FALSE)"
    if isinstance(operand, str):
        return f"coalesce({kind} = 'VARCHAR' AND ({value} ->> '$') = {sql_string(operand)}, FALSE)"
    if isinstance(operand, bool):
        text = "true" if operand else "false"
        return f"coalesce({kind} = 'BOOLEAN' AND {value}::VARCHAR = '{text}', FALSE)"
    if isinstance(operand, int | float):
        number = _number(operand, key)
        return f"coalesce({_numeric_sql(value, '=', number)}, FALSE)"
    # NOTE: lists and objects compare as minified JSON text, so key order matters and 1 and
    # 1.0 differ inside them, unlike Python's ==.
    text = orjson.dumps(operand).decode()
    return f"coalesce({value}::VARCHAR = json({sql_string(text)})::VARCHAR, FALSE)"


def _numeric_sql(value: str, op: str, number: int | float) -> str:
    """Compare a JSON number with ``number``; any other JSON type compares false."""
    kind = f"json_type({value})"
    branches = []
    if isinstance(number, int):
        branches.append(f"WHEN 'BIGINT' THEN {value}::HUGEINT {op} {number}")
        branches.append(f"WHEN 'UBIGINT' THEN {value}::HUGEINT {op} {number}")
    else:
        branches.append(f"WHEN 'BIGINT' THEN {value}::DOUBLE {op} {number!r}")
        branches.append(f"WHEN 'UBIGINT' THEN {value}::DOUBLE {op} {number!r}")
    branches.append(f"WHEN 'DOUBLE' THEN {value}::DOUBLE {op} {float(number)!r}")
    return f"(CASE {kind} {' '.join(branches)} ELSE FALSE END)"


def _compare_sql(value: str, op: str, operand: Any, key: str) -> str:
    if isinstance(operand, str):
        return (
            f"coalesce(json_type({value}) = 'VARCHAR' AND ({value} ->> '$') {op} "
            f"{sql_string(operand)}, FALSE)"
        )
    if isinstance(operand, bool | int | float):
        number = _number(operand, key)
        return f"coalesce({_numeric_sql(value, op, number)}, FALSE)"
    # Plan validation allows only numbers and strings here; anything else matches nothing.
    return "FALSE"


def _contains_sql(value: str, operand: Any, key: str) -> str:
    kind = f"json_type({value})"
    element_equal = _equal_sql("element", operand, key)
    in_array = (
        f"len(list_filter(json_extract({value}, '$[*]'), lambda element: {element_equal})) > 0"
    )
    if isinstance(operand, str):
        in_text = f"contains({value} ->> '$', {sql_string(operand)})"
        return (
            f"coalesce(CASE {kind} WHEN 'VARCHAR' THEN {in_text} "
            f"WHEN 'ARRAY' THEN {in_array} ELSE FALSE END, FALSE)"
        )
    return f"coalesce({kind} = 'ARRAY' AND {in_array}, FALSE)"


def _number(operand: bool | int | float, key: str) -> int | float:
    if isinstance(operand, bool):
        return int(operand)
    if isinstance(operand, float) and not math.isfinite(operand):
        raise InvalidInput(f"filter on {key!r} compares with {operand!r}; use a finite number")
    return operand
