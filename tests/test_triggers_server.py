"""Trigger rules in a real ``headstart serve``: events over HTTP, timers on the system clock,
emitted events through the log, decisions in the person view and the CLI; the documented plan."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from headstart.plan.load import parse_plan
from headstart.triggers.journey import Journey
from tests.conftest import (
    DEFAULT_PLAN,
    HeadstartServer,
    make_data_dir,
    run_cli,
    wait_until,
    wait_until_processed,
)
from tests.helpers.pipeline import identify, track
from tests.helpers.triggers import TriggerWorld, at, plan_with

DOCS = Path(__file__).resolve().parent.parent / "docs" / "triggers.md"

LIVE_PLAN = (
    DEFAULT_PLAN
    + """\
channels:
  in_app:
    type: in_app
    identity_secret_env: HEADSTART_TEST_TRIGGER_SECRET
triggers:
  fallback_timezone: UTC
  templates:
    hello: {title: "Hello {{ traits.name }}", body: "Start with a project."}
  rules:
    - name: welcome
      entry: {event: Signed Up}
      steps:
        - {send: in_app, template: hello}
        - wait: 2s
        - {set_trait: welcomed, value: true}
        - {id: again, send: in_app, template: hello}
"""
)


def outbox_rows(state_path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(state_path, timeout=30)
    try:
        return [
            (str(rule), str(step))
            for rule, step in conn.execute("SELECT rule, step FROM outbox ORDER BY outbox_id")
        ]
    finally:
        conn.close()


def test_live_server_runs_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADSTART_TEST_TRIGGER_SECRET", "not-a-real-secret")
    data = make_data_dir(tmp_path / "data", plan=LIVE_PLAN)
    server = HeadstartServer(data).start()
    try:
        with server.client() as client, server.admin_client() as admin:
            batch = [
                {"type": "identify", "userId": "ada", "traits": {"name": "Ada"}},
                {"type": "track", "userId": "ada", "event": "Signed Up"},
            ]
            response = client.post("/v1/batch", json={"batch": batch}, auth=(data.write_key, ""))
            assert response.status_code == 200, response.text
            wait_until_processed(admin)
            view = admin.get("/api/persons/ada").json()
            kinds = [row["kind"] for row in view["decisions"]]
            assert kinds[-1] == "entered"
            assert "waiting" in kinds
            # On a slow machine the 2 s wait may already be over here.
            assert view["enrollments"][0]["rule"] == "welcome"
            assert view["enrollments"][0]["status"] in ("active", "completed")

            # the 2 s wait fires on the server's clock; the trait arrives through the log
            def welcomed() -> bool:
                person = admin.get("/api/persons/ada").json()
                return person["traits"].get("welcomed") is True

            wait_until(welcomed, 60, "the timer did not fire or the trait was not set")
            wait_until(
                lambda: any(
                    row["kind"] == "queued"
                    for row in admin.get("/api/persons/ada").json()["decisions"]
                ),
                60,
                "the second in-app message was not queued behind the first",
            )
    finally:
        server.stop()
    assert outbox_rows(data.state_path) == [("welcome", "1")]

    result = run_cli("person", "ada", "--json", "--data-dir", str(data.root))
    decisions = json.loads(result.stdout)["decisions"]
    assert [row["kind"] for row in reversed(decisions)] == [
        "entered",
        "waiting",
        "enqueued",
        "sent",
        "trait_set",
        "completed",
        "queued",
    ]
    sent = next(row for row in decisions if row["kind"] == "sent")
    enqueued = next(row for row in decisions if row["kind"] == "enqueued")
    assert enqueued["delivery"]["status"] == "sent"
    assert enqueued["delivery"]["attempts"] == 1
    assert sent["at"] == enqueued["delivery"]["sent_at"]
    assert sent["detail"]["outbox_id"] == enqueued["detail"]["outbox_id"]
    table = run_cli("person", "ada", "--data-dir", str(data.root))
    assert "Trigger decisions" in table.stdout


def documented_plan() -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    complete = [block for block in blocks if block.startswith("version: 1")]
    assert len(complete) == 1, "docs/triggers.md should hold one complete plan example"
    return complete[0]


def test_documented_plan_checks(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(documented_plan(), encoding="utf-8")
    result = run_cli("plan", "check", str(plan_file))
    assert "valid" in result.stdout
    plan = parse_plan(documented_plan())
    assert plan.triggers is not None
    assert {rule.entry.kind for rule in plan.triggers.rules} == {
        "event",
        "absence",
        "stall",
        "trait",
        "segment",
    }


def test_engine_error_stops_one_person(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = """\
triggers:
  fallback_timezone: UTC
  templates:
    note: {text: "hi"}
  rules:
    - name: hello
      entry: {event: Signed Up}
      steps:
        - {send: email, template: note}
"""
    start = at("2024-05-06T10:00:00Z")
    world = TriggerWorld(tmp_path / "data", plan_with(rules), start)
    original = Journey._act

    def failing(
        self: Journey, rule: Any, enrollment: Any, step: Any, facts: Any, *rest: Any
    ) -> None:
        if facts.person.user_id == "broken":
            raise RuntimeError("simulated bug")
        original(self, rule, enrollment, step, facts, *rest)

    monkeypatch.setattr(Journey, "_act", failing)
    world.send(
        identify("broken", traits={"email": "b@example.com"}, at=start),
        track("Signed Up", user="broken", at=start + 1),
        identify("fine", traits={"email": "f@example.com"}, at=start + 2),
        track("Signed Up", user="fine", at=start + 3),
    )
    assert [row.payload["user_id"] for row in world.outbox()] == ["fine"]
    errors = world.decisions("error")
    assert [row.reason for row in errors] == ["engine error: RuntimeError: simulated bug"]
    assert world.enrollments() == [("hello", "", "exited"), ("hello", "", "completed")]
    assert world.processor.offset == world.log.head()
