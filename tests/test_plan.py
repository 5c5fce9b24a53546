"""The plan file: loading, validation errors with their line and field, and ``where`` filters."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from headstart.errors import PlanError
from headstart.events import LoggedEvent
from headstart.plan.load import load_plan, parse_plan, plan_hash
from headstart.plan.match import compile_matcher
from headstart.plan.model import EventMatcher

# Line numbers in the cases below refer to this file.
VALID = """\
version: 1
name: Team onboarding
signup:
  event: Signed Up
  where:
    source: {in: [web, ios]}
milestones:
  - name: created_project
    event: Project Created
    description: First project
  - name: invited_team
    event: Invite Sent
    min_count: 2
    where:
      seats: {gte: 2}
      context.traits.role: admin
activation:
  milestones: [created_project, invited_team]
  within_days: 7
identity:
  blocklist: [Kiosk]
"""


def test_valid_plan_fields() -> None:
    plan = parse_plan(VALID, "plan.yaml")

    assert plan.name == "Team onboarding"
    assert plan.signup.event == "Signed Up"
    assert plan.signup.where == {"source": {"in": ["web", "ios"]}}
    assert [m.name for m in plan.milestones] == ["created_project", "invited_team"]
    assert [m.min_count for m in plan.milestones] == [1, 2]
    assert plan.milestones[0].description == "First project"
    assert plan.milestones[1].where == {"seats": {"gte": 2}, "context.traits.role": "admin"}
    assert plan.activation.milestones == ["created_project", "invited_team"]
    assert plan.activation.within_days == 7.0
    assert "kiosk" in plan.identity.blocked()
    assert "undefined" in plan.identity.blocked()


def test_minimal_flow_style_plan() -> None:
    plan = parse_plan(
        "signup: {event: Signed Up}\n"
        "milestones: [{name: first_report, event: Report Viewed}]\n"
        "activation: {milestones: [first_report], within_days: 0.5}\n"
    )
    assert plan.version == 1
    assert plan.name is None
    assert plan.signup.where == {}
    assert plan.milestones[0].min_count == 1
    assert plan.activation.within_days == 0.5
    assert {"null", "0", "-1"} <= plan.identity.blocked()


def test_default_blocklist_can_be_switched_off() -> None:
    plan = parse_plan(VALID + "  use_default_blocklist: false\n")
    assert plan.identity.blocked() == frozenset({"kiosk"})


@dataclass(frozen=True)
class InvalidCase:
    id: str
    text: str
    # (line, field, part of the message) for every problem, in the order reported
    problems: list[tuple[int | None, str, str]]


def edit(old: str, new: str) -> str:
    assert VALID.count(old) == 1, old
    return VALID.replace(old, new)


INVALID_CASES = [
    InvalidCase(
        "missing-signup",
        edit("signup:\n  event: Signed Up\n  where:\n    source: {in: [web, ios]}\n", ""),
        [(1, "signup", "is required")],
    ),
    InvalidCase(
        "signup-not-a-mapping",
        edit(
            "signup:\n  event: Signed Up\n  where:\n    source: {in: [web, ios]}\n", "signup: x\n"
        ),
        [(3, "signup", "valid dictionary")],
    ),
    InvalidCase(
        "missing-milestone-event",
        edit("    event: Invite Sent\n", ""),
        [(11, "milestones[1].event", "is required")],
    ),
    InvalidCase(
        "min-count-zero",
        edit("min_count: 2", "min_count: 0"),
        [(13, "milestones[1].min_count", "greater than or equal to 1; got 0")],
    ),
    InvalidCase(
        "min-count-fraction",
        edit("min_count: 2", "min_count: 2.5"),
        [(13, "milestones[1].min_count", "valid integer; got 2.5")],
    ),
    InvalidCase(
        "min-count-yes",
        edit("min_count: 2", "min_count: yes"),
        [(13, "milestones[1].min_count", "valid integer; got True")],
    ),
    InvalidCase(
        "misspelt-field",
        edit("min_count: 2", "min_cout: 2"),
        [(13, "milestones[1].min_cout", "is not a known field; check the spelling")],
    ),
    InvalidCase(
        "misspelt-section",
        edit("activation:", "activaton:"),
        [
            (1, "activation", "is required"),
            (17, "activaton", "is not a known field"),
        ],
    ),
    InvalidCase(
        "milestone-name-with-space",
        edit("name: invited_team", "name: invited team").replace(
            "[created_project, invited_team]", "[created_project]"
        ),
        [(11, "milestones[1].name", "should match pattern")],
    ),
    InvalidCase(
        "duplicate-milestone-name",
        edit("name: invited_team", "name: created_project").replace(
            "[created_project, invited_team]", "[created_project]"
        ),
        [(11, "milestones[1].name", "'created_project' is used twice")],
    ),
    InvalidCase(
        "no-milestones",
        "signup: {event: A}\nmilestones: []\nactivation: {milestones: [a], within_days: 1}\n",
        [(2, "milestones", "at least 1 item")],
    ),
    InvalidCase(
        "activation-names-unknown-milestone",
        edit("[created_project, invited_team]", "[created_project, invite_team]"),
        [
            (
                18,
                "activation.milestones[1]",
                "'invite_team' is not a milestone; expected one of created_project, invited_team",
            )
        ],
    ),
    InvalidCase(
        "activation-without-milestones",
        edit("[created_project, invited_team]", "[]"),
        [(18, "activation.milestones", "at least 1 item")],
    ),
    InvalidCase(
        "within-days-negative",
        edit("within_days: 7", "within_days: -1"),
        [(19, "activation.within_days", "greater than 0; got -1")],
    ),
    InvalidCase(
        "within-days-text",
        edit("within_days: 7", "within_days: a week"),
        [(19, "activation.within_days", "valid number")],
    ),
    InvalidCase(
        "within-days-true",
        edit("within_days: 7", "within_days: true"),
        [(19, "activation.within_days", "valid number; got True")],
    ),
    InvalidCase(
        "within-days-over-ten-years",
        edit("within_days: 7", "within_days: 4000"),
        [(19, "activation.within_days", "less than or equal to 3650")],
    ),
    InvalidCase(
        "unknown-operator",
        edit("{gte: 2}", "{atleast: 2}"),
        [(15, "milestones[1].where", "unknown operator 'atleast'; expected one of eq, ne, in")],
    ),
    InvalidCase(
        "in-needs-a-list",
        edit("{in: [web, ios]}", "{in: web}"),
        [(6, "signup.where", "filter on 'source': in needs a list")],
    ),
    InvalidCase(
        "exists-needs-a-boolean",
        edit("{gte: 2}", "{exists: sometimes}"),
        [(15, "milestones[1].where", "exists needs true or false, got 'sometimes'")],
    ),
    InvalidCase(
        "comparison-with-unquoted-date",
        edit("{gte: 2}", "{gte: 2024-01-31}"),
        [(15, "milestones[1].where", "gte needs a number or a string (quote dates)")],
    ),
    InvalidCase(
        "comparison-with-list",
        edit("{gte: 2}", "{lt: [3]}"),
        [(15, "milestones[1].where", "lt needs a number or a string")],
    ),
    InvalidCase(
        "empty-operator-object",
        edit("{gte: 2}", "{}"),
        [(15, "milestones[1].where", "filter on 'seats' has no operator")],
    ),
    InvalidCase(
        "where-not-a-mapping",
        edit(
            "    where:\n      seats: {gte: 2}\n      context.traits.role: admin\n",
            "    where: [seats]\n",
        ),
        [(14, "milestones[1].where", "valid dictionary")],
    ),
    InvalidCase(
        "unsupported-version",
        edit("version: 1", "version: 2"),
        [(1, "version", "Input should be 1; got 2")],
    ),
    InvalidCase(
        "blocklist-entry-not-text",
        edit("[Kiosk]", "[Kiosk, 0]"),
        [(21, "identity.blocklist[1]", "valid string; got 0")],
    ),
    InvalidCase(
        "duplicate-key-in-milestone",
        edit("    min_count: 2\n", "    min_count: 2\n    min_count: 3\n"),
        [(14, "milestones[1].min_count", "is defined twice (first on line 13)")],
    ),
    InvalidCase(
        "duplicate-top-level-section",
        VALID + "signup:\n  event: Account Created\n",
        [(22, "signup", "is defined twice (first on line 3)")],
    ),
    InvalidCase(
        "unclosed-bracket",
        edit("    event: Project Created", "    event: [Project Created"),
        [(10, "(syntax)", "invalid YAML")],
    ),
    InvalidCase(
        "tab-indentation",
        edit("  event: Signed Up", "\tevent: Signed Up"),
        [(4, "(syntax)", "invalid YAML")],
    ),
    InvalidCase("empty-file", "", [(1, "(top level)", "expected a mapping")]),
    InvalidCase("top-level-list", "- signup\n", [(1, "(top level)", "expected a mapping")]),
]


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda case: case.id)
def test_invalid_plan(case: InvalidCase) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(case.text, "plan.yaml")

    problems = caught.value.problems
    assert [(p.line, p.field) for p in problems] == [(line, f) for line, f, _ in case.problems]
    for problem, (_, _, expected) in zip(problems, case.problems, strict=True):
        assert problem.file == "plan.yaml"
        assert expected in problem.message
    assert caught.value.code == "invalid_plan"
    assert caught.value.status == 400


def test_problem_text_names_file_line_and_field() -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(edit("min_count: 2", "min_count: 0"), "plans/team.yaml")
    assert str(caught.value) == (
        "plans/team.yaml:13: milestones[1].min_count: "
        "Input should be greater than or equal to 1; got 0"
    )


def test_load_plan_file_problems(tmp_path: Path) -> None:
    with pytest.raises(PlanError) as missing:
        load_plan(tmp_path / "absent.yaml")
    assert [(p.line, p.field, p.message) for p in missing.value.problems] == [
        (None, "(file)", "file not found")
    ]

    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: Onboarding für Teams\n".encode("latin-1"))
    with pytest.raises(PlanError) as undecodable:
        load_plan(latin1)
    assert undecodable.value.problems[0].message == "file is not UTF-8 text"

    good = tmp_path / "plan.yaml"
    good.write_text(VALID, encoding="utf-8")
    assert load_plan(good) == parse_plan(VALID)


def test_plan_hash_ignores_formatting() -> None:
    reformatted = "# comment\n" + VALID.replace(
        "source: {in: [web, ios]}", "source:\n      in:\n        - web\n        - ios"
    )
    assert parse_plan(reformatted) == parse_plan(VALID)
    assert plan_hash(parse_plan(reformatted)) == plan_hash(parse_plan(VALID))
    assert plan_hash(parse_plan(edit("min_count: 2", "min_count: 3"))) != plan_hash(
        parse_plan(VALID)
    )


# ---- `headstart plan check` -----------------------------------------------------------------


def plan_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headstart.cli.main", "plan", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_plan_check_valid(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(VALID, encoding="utf-8")

    result = plan_check(path)

    assert result.returncode == 0, result.stderr
    assert "valid; 2 milestones" in result.stdout
    assert "activation = created_project + invited_team within 7 days" in result.stdout
    assert "0 segments, 0 funnels, 0 channels, 0 trigger rules" in result.stdout


def test_plan_check_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(edit("activation:", "activaton:").replace("min_count: 2", "min_count: 0"))

    result = plan_check(path)

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "invalid plan"
    assert f"{path}:13: milestones[1].min_count: " in lines[1]
    assert f"{path}:1: activation: is required" in lines[2]
    assert f"{path}:17: activaton: is not a known field" in lines[3]


def test_plan_check_missing_file(tmp_path: Path) -> None:
    result = plan_check(tmp_path / "absent.yaml")
    assert result.returncode == 2
    assert f"{tmp_path / 'absent.yaml'}: (file): file not found" in result.stderr


def test_plan_check_prints_brackets_verbatim(tmp_path: Path) -> None:
    # A quoted value such as "[/x]" must be printed as written, not read as terminal markup.
    path = tmp_path / "plan.yaml"
    path.write_text(edit("name: created_project", 'name: "[/x]"'))

    result = plan_check(path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}:8: milestones[0].name: " in result.stderr
    assert "got '[/x]'" in result.stderr


# ---- `where` filters --------------------------------------------------------------------------


def event(properties: dict[str, Any], **body: Any) -> LoggedEvent:
    return LoggedEvent(
        seq=1,
        source_id="src",
        message_id="m1",
        type="track",
        event="Clicked",
        user_id="u1",
        anonymous_id=None,
        timestamp=0,
        received_at=0,
        body={"properties": properties, **body},
    )


@dataclass(frozen=True)
class FilterCase:
    id: str
    where: dict[str, Any]
    matching: list[dict[str, Any]]
    not_matching: list[dict[str, Any]]


FILTER_CASES = [
    FilterCase("equal", {"plan": "pro"}, [{"plan": "pro"}], [{"plan": "Pro"}, {}]),
    FilterCase(
        "one-of-list", {"plan": ["pro", "team"]}, [{"plan": "team"}], [{"plan": "free"}, {}]
    ),
    FilterCase(
        "eq-operator", {"seats": {"eq": 3}}, [{"seats": 3}, {"seats": 3.0}], [{"seats": "3"}]
    ),
    FilterCase(
        "ne-needs-the-field", {"plan": {"ne": "free"}}, [{"plan": "pro"}], [{"plan": "free"}, {}]
    ),
    FilterCase("in", {"plan": {"in": ["a", "b"]}}, [{"plan": "a"}], [{"plan": "c"}, {}]),
    FilterCase(
        "not-in-needs-the-field", {"plan": {"not_in": ["a"]}}, [{"plan": "b"}], [{"plan": "a"}, {}]
    ),
    FilterCase("exists", {"coupon": {"exists": True}}, [{"coupon": ""}], [{"coupon": None}, {}]),
    FilterCase(
        "not-exists", {"coupon": {"exists": False}}, [{}, {"coupon": None}], [{"coupon": "X"}]
    ),
    FilterCase(
        "contains",
        {"tags": {"contains": "beta"}},
        [{"tags": ["beta", "x"]}, {"tags": "in-beta"}],
        [{"tags": ["alpha"]}, {"tags": 5}, {}],
    ),
    FilterCase(
        "contains-number-in-text-is-false",
        {"tags": {"contains": 3}},
        [{"tags": [1, 3]}],
        [{"tags": "v3"}, {"tags": "3"}],
    ),
    FilterCase(
        "range",
        {"seats": {"gte": 2, "lt": 5}},
        [{"seats": 2}, {"seats": 4.5}],
        [{"seats": 5}, {"seats": 1}, {"seats": "3"}, {"seats": True}, {"seats": None}, {}],
    ),
    FilterCase(
        "string-comparison",
        {"day": {"gt": "2024-01-31"}},
        [{"day": "2024-02-01"}],
        [{"day": "2024-01-01"}, {"day": 20240201}],
    ),
    FilterCase(
        "nested-property",
        {"cart.total": {"gt": 100}},
        [{"cart": {"total": 150}}],
        [{"cart": {"total": 50}}, {"cart": 150}, {}],
    ),
    FilterCase("every-condition-holds", {"a": 1, "b": 2}, [{"a": 1, "b": 2}], [{"a": 1}, {"b": 2}]),
]


@pytest.mark.parametrize("case", FILTER_CASES, ids=lambda case: case.id)
def test_where_filter(case: FilterCase) -> None:
    matches = compile_matcher(EventMatcher(event="Clicked", where=case.where))
    for properties in case.matching:
        assert matches(event(properties)), properties
    for properties in case.not_matching:
        assert not matches(event(properties)), properties


def test_where_reads_context_and_traits() -> None:
    matches = compile_matcher(
        EventMatcher(
            event="Clicked",
            where={"context.campaign.source": "ads", "traits.role": {"in": ["admin"]}},
        )
    )
    context = {"campaign": {"source": "ads"}, "traits": {"role": "admin"}}
    assert matches(event({}, context=context))
    assert not matches(event({}, context={**context, "traits": {"role": "dev"}}))
    assert not matches(event({"context": context}))
