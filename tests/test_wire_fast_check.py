"""The fast pre-check of wire messages never accepts what the pydantic models reject."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headstart.ingest.wire import WIRE_MODELS, passes_fast_check

FIELDS = [
    "messageId",
    "userId",
    "anonymousId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "context",
    "integrations",
    "event",
    "properties",
    "traits",
    "name",
    "category",
    "groupId",
    "previousId",
    "extra",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.text(min_size=250, max_size=300),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=2), st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=4,
)
messages = st.dictionaries(st.sampled_from(FIELDS), values, max_size=8)


@pytest.mark.parametrize("kind", sorted(WIRE_MODELS))
@settings(max_examples=120, deadline=None)
@given(raw=messages)
def test_fast_check_implies_model_accepts(kind, raw):
    if passes_fast_check(kind, raw):
        WIRE_MODELS[kind].model_validate(raw)


TYPICAL = {
    "track": {"event": "Signed Up", "userId": 42, "properties": {"plan": "pro"}},
    "identify": {"userId": "u1", "traits": {"email": "a@example.com"}},
    "page": {"anonymousId": "a1", "name": "Pricing", "properties": {"path": "/pricing"}},
    "screen": {"anonymousId": "a1", "name": "Home"},
    "group": {"userId": "u1", "groupId": 7, "traits": {"name": "Acme"}},
    "alias": {"userId": "u1", "previousId": "a1"},
}


@pytest.mark.parametrize("kind", sorted(TYPICAL))
def test_typical_messages_take_fast_path(kind):
    assert passes_fast_check(
        kind,
        {**TYPICAL[kind], "messageId": "m1", "timestamp": "2024-01-01T00:00:00Z", "context": {}},
    )


@pytest.mark.parametrize("kind", ["track", "group", "alias"])
def test_missing_required_field_fails_fast_check(kind):
    required = {"track": "event", "group": "groupId", "alias": "previousId"}[kind]
    message = {key: value for key, value in TYPICAL[kind].items() if key != required}
    assert not passes_fast_check(kind, message)


def test_boolean_user_id_fails_fast_check():
    assert not passes_fast_check("track", {"event": "x", "userId": True})
