"""Identity resolution and profiles through the real processor, log and state store.

Each case sends Segment messages through ingest validation into a SQLite event log, runs the
processor and reads the derived state back. Persons are named by their identifiers, as
``user_id:VALUE`` and ``anonymous_id:VALUE``, because person ids are internal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from headstart.api.persons import person_view
from headstart.plan.load import parse_plan
from headstart.plan.model import Plan
from tests.helpers.pipeline import Pipeline, alias, identify, instant, track

PLAN_TEXT = """\
signup:
  event: Signed Up
milestones:
  - name: created_project
    event: Project Created
activation:
  milestones: [created_project]
  within_days: 7
"""
PLAN = parse_plan(PLAN_TEXT)


def plan_with_identity(identity: str) -> Plan:
    return parse_plan(PLAN_TEXT + identity)


Merge = tuple[str, str, str]  # (reason, identifier kind, identifier value) of the link


@dataclass(frozen=True)
class IdentityCase:
    id: str
    messages: list[dict[str, Any]]
    persons: list[set[str]]
    # Per person, named by one of its identifiers: the merge log, warning codes, event counts.
    merges: dict[str, list[Merge]] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    plan: Plan = PLAN


IDENTITY_CASES = [
    IdentityCase(
        id="anonymous-then-identify",
        messages=[
            track("Opened App", anon="phone", hours=1),
            identify("alice", "phone", hours=2),
        ],
        persons=[{"user_id:alice", "anonymous_id:phone"}],
        counts={"user_id:alice": {"Opened App": 1}},
    ),
    IdentityCase(
        id="identify-then-anonymous",
        messages=[
            identify("alice", "phone", hours=1),
            track("Opened App", anon="phone", hours=2),
        ],
        persons=[{"user_id:alice", "anonymous_id:phone"}],
        counts={"user_id:alice": {"Opened App": 1}},
    ),
    IdentityCase(
        id="known-user-identifies-on-new-device",
        messages=[
            track("Opened App", user="alice", hours=1),
            track("Opened App", anon="laptop", hours=2),
            identify("alice", "laptop", hours=3),
        ],
        persons=[{"user_id:alice", "anonymous_id:laptop"}],
        merges={"user_id:alice": [("identify", "anonymous_id", "laptop")]},
        counts={"user_id:alice": {"Opened App": 2}},
    ),
    IdentityCase(
        id="event-with-both-ids",
        messages=[
            track("Opened App", user="alice", hours=1),
            track("Opened App", anon="phone", hours=2),
            track("Project Created", user="alice", anon="phone", hours=3),
        ],
        persons=[{"user_id:alice", "anonymous_id:phone"}],
        merges={"user_id:alice": [("track", "anonymous_id", "phone")]},
        counts={"user_id:alice": {"Opened App": 2, "Project Created": 1}},
    ),
    IdentityCase(
        id="alias-anonymous-to-new-user",
        messages=[
            track("Opened App", anon="phone", hours=1),
            alias("phone", "alice", hours=2),
            track("Opened App", user="alice", hours=3),
        ],
        persons=[{"user_id:alice", "anonymous_id:phone"}],
        counts={"user_id:alice": {"Opened App": 2}},
    ),
    IdentityCase(
        id="alias-anonymous-to-known-user",
        messages=[
            track("Opened App", user="alice", hours=1),
            track("Opened App", anon="phone", hours=2),
            alias("phone", "alice", hours=3),
        ],
        persons=[{"user_id:alice", "anonymous_id:phone"}],
        merges={"user_id:alice": [("alias", "anonymous_id", "phone")]},
    ),
    IdentityCase(
        id="alias-before-any-event",
        messages=[
            alias("phone", "alice", hours=1),
            track("Opened App", anon="phone", hours=2),
            track("Opened App", user="alice", hours=3),
        ],
        persons=[{"user_id:alice", "anonymous_id:phone"}],
        counts={"user_id:alice": {"Opened App": 2}},
    ),
    IdentityCase(
        id="alias-with-its-own-anonymous-id",
        messages=[
            track("Opened App", anon="phone", hours=1),
            track("Opened App", anon="laptop", hours=2),
            alias("phone", "alice", anon="laptop", hours=3),
        ],
        persons=[{"user_id:alice", "anonymous_id:phone", "anonymous_id:laptop"}],
        merges={"user_id:alice": [("alias", "anonymous_id", "laptop")]},
    ),
    IdentityCase(
        id="alias-between-user-ids-is-refused",
        messages=[
            track("Opened App", user="alice", hours=1),
            track("Opened App", user="bob", hours=2),
            alias("alice", "bob", hours=3),
        ],
        persons=[{"user_id:alice"}, {"user_id:bob"}],
        warnings={"user_id:alice": ["identity_conflict"], "user_id:bob": ["identity_conflict"]},
    ),
    IdentityCase(
        id="alias-from-user-id-to-new-user-id-is-refused",
        messages=[
            track("Opened App", user="alice", hours=1),
            alias("alice", "carol", hours=2),
        ],
        persons=[{"user_id:alice"}, {"user_id:carol"}],
        warnings={"user_id:alice": ["identity_conflict"], "user_id:carol": ["identity_conflict"]},
    ),
    IdentityCase(
        id="second-user-on-same-device-is-refused",
        messages=[
            identify("alice", "phone", hours=1),
            identify("bob", "phone", hours=2),
            track("Clicked", user="bob", anon="phone", hours=3),
            track("Opened App", anon="phone", hours=4),
        ],
        persons=[{"user_id:alice", "anonymous_id:phone"}, {"user_id:bob"}],
        # The second conflicting event counts up the same warning instead of adding one.
        warnings={"user_id:alice": ["identity_conflict"], "user_id:bob": ["identity_conflict"]},
        counts={"user_id:alice": {"Opened App": 1}, "user_id:bob": {"Clicked": 1}},
    ),
    IdentityCase(
        id="alias-onto-other-users-device-is-refused",
        messages=[
            identify("alice", "phone", hours=1),
            track("Opened App", user="bob", hours=2),
            alias("phone", "bob", hours=3),
        ],
        persons=[{"user_id:alice", "anonymous_id:phone"}, {"user_id:bob"}],
        warnings={"user_id:alice": ["identity_conflict"], "user_id:bob": ["identity_conflict"]},
    ),
    IdentityCase(
        id="blocklisted-anonymous-id-joins-nobody",
        messages=[
            identify("alice", "undefined", hours=1),
            identify("bob", "undefined", hours=2),
            track("Opened App", user="bob", anon="00000000-0000-0000-0000-000000000000", hours=3),
            track("Opened App", user="alice", anon=" Anonymous ", hours=4),
        ],
        persons=[{"user_id:alice"}, {"user_id:bob"}],
        counts={"user_id:alice": {"Opened App": 1}, "user_id:bob": {"Opened App": 1}},
    ),
    IdentityCase(
        id="blocklisted-user-id-leaves-anonymous-person",
        messages=[
            track("Opened App", user="null", anon="phone", hours=1),
            track("Opened App", user="0", anon="laptop", hours=2),
            identify("-1", "laptop", hours=3),
        ],
        persons=[{"anonymous_id:phone"}, {"anonymous_id:laptop"}],
    ),
    IdentityCase(
        id="only-blocklisted-ids-makes-no-person",
        messages=[
            track("Opened App", user="undefined", anon="null", hours=1),
            alias("guest", "NaN", hours=2),
        ],
        persons=[],
    ),
    IdentityCase(
        id="alias-with-blocklisted-previous-id",
        messages=[
            track("Opened App", anon="anonymous", hours=1),
            alias("anonymous", "alice", hours=2),
            alias("anonymous", "bob", hours=3),
        ],
        persons=[{"user_id:alice"}, {"user_id:bob"}],
    ),
    IdentityCase(
        id="custom-blocklist",
        messages=[
            identify("alice", "shared-kiosk", hours=1),
            identify("bob", "Shared-Kiosk ", hours=2),
            track("Opened App", anon="shared-kiosk", hours=3),
        ],
        persons=[{"user_id:alice"}, {"user_id:bob"}],
        plan=plan_with_identity("identity:\n  blocklist: [SHARED-KIOSK]\n"),
    ),
    IdentityCase(
        id="default-blocklist-switched-off",
        messages=[
            identify("alice", "guest", hours=1),
            identify("bob", "kiosk", hours=2),
        ],
        persons=[{"user_id:alice", "anonymous_id:guest"}, {"user_id:bob"}],
        plan=plan_with_identity(
            "identity:\n  use_default_blocklist: false\n  blocklist: [kiosk]\n"
        ),
    ),
    IdentityCase(
        id="three-devices-one-person",
        messages=[
            track("Opened App", anon="phone", hours=1),
            track("Opened App", anon="laptop", hours=2),
            track("Opened App", anon="tablet", hours=3),
            identify("alice", "phone", hours=4),
            identify("alice", "laptop", hours=5),
            track("Project Created", user="alice", anon="tablet", hours=6),
        ],
        persons=[
            {"user_id:alice", "anonymous_id:phone", "anonymous_id:laptop", "anonymous_id:tablet"}
        ],
        merges={
            "user_id:alice": [
                ("identify", "anonymous_id", "laptop"),
                ("track", "anonymous_id", "tablet"),
            ]
        },
        counts={"user_id:alice": {"Opened App": 3, "Project Created": 1}},
    ),
    IdentityCase(
        id="separate-users-stay-separate",
        messages=[
            identify("alice", "phone", hours=1),
            identify("bob", "laptop", hours=2),
            track("Opened App", anon="phone", hours=3),
        ],
        persons=[{"user_id:alice", "anonymous_id:phone"}, {"user_id:bob", "anonymous_id:laptop"}],
        counts={"user_id:alice": {"Opened App": 1}, "user_id:bob": {}},
    ),
]


@pytest.mark.parametrize("batch_size", [1, 100], ids=["batch-1", "batch-100"])
@pytest.mark.parametrize("case", IDENTITY_CASES, ids=lambda case: case.id)
def test_identity_case(case: IdentityCase, batch_size: int, tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, case.plan, batch_size=batch_size)
    pipeline.send(*case.messages)

    persons = pipeline.persons()
    assert sorted(map(sorted, persons)) == sorted(map(sorted, case.persons))

    for identifiers in case.persons:
        # Expectations are keyed by the person's user id, or its first identifier without one.
        users = [identifier for identifier in identifiers if identifier.startswith("user_id:")]
        key = users[0] if users else min(identifiers)
        person_id = pipeline.store.find_person_id(key)
        assert person_id is not None, key
        for identifier in identifiers:
            assert pipeline.store.find_person_id(identifier) == person_id, identifier

        merges = [
            (entry["reason"], entry["detail"]["link"]["kind"], entry["detail"]["link"]["value"])
            for entry in pipeline.store.merges_of(person_id)
        ]
        assert merges == case.merges.get(key, []), key
        warnings = [warning["code"] for warning in pipeline.store.warnings_of(person_id)]
        assert warnings == case.warnings.get(key, []), key
        if key in case.counts:
            assert persons[frozenset(identifiers)].event_counts == case.counts[key], key


def test_conflict_warning_names_both_user_ids(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, PLAN)
    pipeline.send(
        identify("alice", "phone", hours=1),
        identify("bob", "phone", hours=2, message_id="second-identify"),
    )
    alice = pipeline.store.find_person_id("alice") or ""
    bob = pipeline.store.find_person_id("bob") or ""
    [warning] = pipeline.store.warnings_of(alice)

    assert pipeline.store.warnings_of(bob) == [warning]
    assert warning["at"] == instant(2)
    assert "'phone'" in warning["message"]
    assert "'alice'" in warning["message"]
    assert "'bob'" in warning["message"]
    assert "second-identify" in warning["message"]


def test_merge_log_detail(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, PLAN)
    pipeline.send(track("Opened App", user="alice", hours=1))
    pipeline.send(track("Opened App", anon="laptop", hours=2))
    laptop = pipeline.store.find_person_id("laptop")
    pipeline.send(identify("alice", "laptop", hours=3, message_id="join-laptop"))

    alice = pipeline.store.find_person_id("alice")
    [entry] = pipeline.store.merges_of(alice or "")
    assert entry["survivor"] == alice
    assert entry["merged"] == laptop
    assert entry["at"] == instant(3)
    assert entry["detail"]["survivor_user_id"] == "alice"
    assert entry["detail"]["merged_user_id"] is None
    assert entry["detail"]["merged_anonymous_ids"] == ["laptop"]
    assert entry["detail"]["message_id"] == "join-laptop"
    assert pipeline.store.merges_of(laptop or "") == [entry]


def test_lookup_by_any_id_after_repeated_merges(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, PLAN, batch_size=2)
    pipeline.send(
        track("Opened App", anon="phone", hours=1),
        track("Opened App", anon="laptop", hours=2),
        track("Opened App", anon="tablet", hours=3),
    )
    before = [pipeline.store.find_person_id(device) for device in ("phone", "laptop", "tablet")]
    assert None not in before
    assert len(set(before)) == 3

    pipeline.send(identify("alice", "phone", hours=4))
    pipeline.send(identify("alice", "laptop", hours=5))
    pipeline.send(alias("tablet", "alice", hours=6))

    person_id = pipeline.store.find_person_id("alice")
    assert person_id is not None
    lookups = [
        "alice",
        "user_id:alice",
        "phone",
        "anonymous_id:laptop",
        "tablet",
        person_id,
        *(old for old in before if old is not None),
    ]
    for identifier in lookups:
        assert pipeline.store.find_person_id(identifier) == person_id, identifier
    assert pipeline.store.find_person_id("user_id:phone") is None
    assert pipeline.store.find_person_id("nobody") is None
    assert len(pipeline.persons()) == 1
    assert len(pipeline.store.merges_of(person_id)) == 2


def test_cross_device_timeline(tmp_path: Path) -> None:
    # Two anonymous devices that later identify as the same user become one person whose
    # timeline contains the events of both devices, newest first.
    pipeline = Pipeline(tmp_path, PLAN)
    pipeline.send(
        track("Opened App", anon="phone", hours=1, message_id="phone-1"),
        track("Signed Up", anon="laptop", hours=2, message_id="laptop-1"),
        track("Project Created", anon="phone", hours=3, message_id="phone-2"),
        identify("alice", "phone", hours=4, message_id="identify-phone"),
        identify("alice", "laptop", hours=5, message_id="identify-laptop"),
    )

    view = person_view(pipeline.store, pipeline.log, PLAN, "alice")
    timeline = [event["message_id"] for event in view["recent_events"]]
    assert timeline == ["identify-laptop", "identify-phone", "phone-2", "laptop-1", "phone-1"]
    assert view["onboarding"]["signup_at"] == "2024-03-01T02:00:00.000Z"
    assert view["onboarding"]["activated"] is True
    assert {item["value"] for item in view["identifiers"]} == {"alice", "phone", "laptop"}


# ---- profile: traits and first/last seen --------------------------------------------------


@dataclass(frozen=True)
class TraitCase:
    id: str
    messages: list[dict[str, Any]]
    traits: dict[str, tuple[Any, int]]


def _context(traits: dict[str, Any]) -> dict[str, Any]:
    return {"context": {"traits": traits}}


TRAIT_CASES = [
    TraitCase(
        id="later-identify-wins",
        messages=[
            identify("alice", hours=1, traits={"plan": "free", "role": "dev"}),
            identify("alice", hours=2, traits={"plan": "pro"}),
        ],
        traits={"plan": ("pro", instant(2)), "role": ("dev", instant(1))},
    ),
    TraitCase(
        id="late-arriving-older-value-loses",
        messages=[
            identify("alice", hours=2, traits={"plan": "pro"}),
            identify("alice", hours=1, traits={"plan": "free"}),
        ],
        traits={"plan": ("pro", instant(2))},
    ),
    TraitCase(
        id="equal-time-later-sequence-wins",
        messages=[
            identify("alice", hours=1, traits={"plan": "free"}),
            identify("alice", hours=1, traits={"plan": "pro"}),
        ],
        traits={"plan": ("pro", instant(1))},
    ),
    TraitCase(
        id="context-traits-on-track",
        messages=[
            identify("alice", hours=1, traits={"plan": "free"}),
            track("Upgraded", user="alice", hours=2, **_context({"plan": "team"})),
        ],
        traits={"plan": ("team", instant(2))},
    ),
    TraitCase(
        id="group-traits-are-not-person-traits",
        messages=[
            identify("alice", hours=1, traits={"plan": "free"}),
            {
                "type": "group",
                "userId": "alice",
                "groupId": "acme",
                "messageId": "group-1",
                "timestamp": "2024-03-01T02:00:00Z",
                "traits": {"plan": "enterprise"},
            },
        ],
        traits={"plan": ("free", instant(1))},
    ),
    TraitCase(
        id="merge-keeps-newest-trait",
        messages=[
            track("Opened App", anon="phone", hours=3, **_context({"plan": "pro"})),
            identify("alice", hours=1, traits={"plan": "free", "role": "dev"}),
            identify("alice", "phone", hours=4, traits={}),
        ],
        traits={"plan": ("pro", instant(3)), "role": ("dev", instant(1))},
    ),
    TraitCase(
        id="merge-tie-keeps-higher-sequence-survivor",
        messages=[
            track("Opened App", anon="phone", hours=1, **_context({"plan": "free"})),
            track("Opened App", user="alice", hours=1, **_context({"plan": "pro"})),
            identify("alice", "phone", hours=2),
        ],
        traits={"plan": ("pro", instant(1))},
    ),
    TraitCase(
        id="merge-tie-keeps-higher-sequence-merged",
        messages=[
            track("Opened App", user="alice", hours=1, **_context({"plan": "pro"})),
            track("Opened App", anon="phone", hours=1, **_context({"plan": "free"})),
            identify("alice", "phone", hours=2),
        ],
        traits={"plan": ("free", instant(1))},
    ),
]


@pytest.mark.parametrize("case", TRAIT_CASES, ids=lambda case: case.id)
def test_traits(case: TraitCase, tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, PLAN)
    pipeline.send(*case.messages)
    assert pipeline.person("alice").traits == case.traits


def test_first_and_last_seen_across_devices(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, PLAN, batch_size=1)
    pipeline.send(
        track("Opened App", user="alice", hours=5),
        track("Opened App", anon="laptop", hours=9),
        track("Opened App", anon="phone", hours=-2),
        identify("alice", "phone", hours=3),
        alias("laptop", "alice", hours=4),
    )
    alice = pipeline.person("alice")
    assert alice.first_seen == instant(-2)
    assert alice.last_seen == instant(9)
    assert pipeline.person("phone") == alice
    assert pipeline.person("laptop") == alice


def test_repeated_conflict_counts_up(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, PLAN)
    pipeline.send(
        identify("alice", "phone", hours=1),
        identify("bob", "phone", hours=2, message_id="first-conflict"),
        track("Clicked", user="bob", anon="phone", hours=3),
        track("Clicked", user="bob", anon="phone", hours=4),
    )
    alice = pipeline.store.find_person_id("alice") or ""
    [warning] = pipeline.store.warnings_of(alice)

    assert warning["count"] == 3
    assert "first-conflict" in warning["message"]
    assert warning["last_seq"] > warning["seq"]


def test_placeholder_ids_stay_in_the_log(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, PLAN)
    pipeline.send(track("Clicked", user="undefined", anon="laptop", hours=1))

    [(user_id, anonymous_id)] = pipeline.log.connection.execute(
        "SELECT user_id, anonymous_id FROM events"
    ).fetchall()
    person = pipeline.store.find_person_id("laptop") or ""

    assert (user_id, anonymous_id) == ("undefined", "laptop")
    assert pipeline.store.identifiers_of(person) == [("anonymous_id", "laptop")]


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param(
            [track("Visited", anon="kiosk", hours=1), alias("kiosk", "bob", hours=2)],
            id="known-anonymous-id",
        ),
        pytest.param([alias("kiosk", "bob", hours=2)], id="both-ids-new"),
    ],
)
def test_alias_respects_separation(tmp_path: Path, messages: list[dict[str, Any]]) -> None:
    pipeline = Pipeline(tmp_path, PLAN)
    pipeline.processor.use_plan(PLAN, [(("anonymous_id", "kiosk"), ("user_id", "bob"))])
    pipeline.send(*messages)

    bob = pipeline.store.find_person_id("bob") or ""
    assert pipeline.store.identifiers_of(bob) == [("user_id", "bob")]
    assert pipeline.store.find_person_id("kiosk") != bob
