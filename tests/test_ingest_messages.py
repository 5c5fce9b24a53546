"""Ingest error messages name the field, the value and the fix, one problem each."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from headstart.errors import HeadstartError
from headstart.ingest.normalize import IngestContext, normalize
from headstart.timeutil import parse_iso

CTX = IngestContext(source_id="web", received_at=parse_iso("2024-05-06T10:00:00Z"))


def rejection(raw: Any, message_type: str | None = "track") -> HeadstartError:
    with pytest.raises(HeadstartError) as caught:
        normalize(raw, message_type, CTX)
    return caught.value


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param({"a": 1}, "{'a': 1}", id="object"),
        pytest.param(1.5, "1.5", id="float"),
        pytest.param(["u1"], "['u1']", id="list"),
    ],
)
def test_wrong_id_type_is_one_problem(value: Any, shown: str) -> None:
    error = rejection({"userId": value, "event": "Signed Up"})
    assert error.code == "invalid_event"
    assert error.message == f"userId={shown}: expected a string or an integer"


def test_batch_event_without_type() -> None:
    error = rejection({"userId": "u1", "event": "Signed Up"}, None)
    assert error.message.startswith("type is missing; a batch event needs one of track,")


def test_oversize_event_reports_its_size() -> None:
    raw = {"userId": "u1", "event": "Signed Up", "properties": {"blob": "x" * 40_000}}
    error = rejection(raw)
    assert error.code == "event_too_large"
    assert error.message.startswith(
        f"event is {len(orjson.dumps(raw))} bytes as compact JSON, over the limit of 32768 bytes"
    )
