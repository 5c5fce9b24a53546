"""``headstart triggers backtest``: history replayed through one rule, nothing sent."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from headstart.cli import triggers as cli_triggers
from headstart.datadir import DataDir
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.triggers.backtest import backtest
from tests.conftest import headstart_command, run_cli
from tests.helpers.pipeline import identify, track
from tests.helpers.triggers import BASE_PLAN, at, to_record

TRIGGERS = """\
triggers:
  fallback_timezone: Europe/Berlin
  quiet_hours: {start: "21:00", end: "08:00"}
  templates:
    stuck: {subject: "Your import {{ key }} is stuck", text: "..."}
  rules:
    - name: import_stuck
      entry:
        after: {event: Import Started}
        missing: {event: Import Finished}
        within: 2h
        key: import_id
      reentry: after_exit
      steps:
        - {send: email, template: stuck}
        - {emit: Import Nudged, properties: {import: "{{ key }}"}}
"""
EXTRA_RULE = """\
    - name: welcome
      entry: {event: Signed Up}
      steps:
        - {send: email, template: stuck}
"""


def started(user: str, when: str, import_id: str) -> dict[str, Any]:
    return track("Import Started", user=user, at=at(when), properties={"import_id": import_id})


HISTORY = [
    *[
        identify(user, traits={"email": f"{user}@example.com"}, at=at("2024-04-01T00:00:00Z"))
        for user in ("u1", "u2", "u3", "u4", "u5")
    ],
    started("u1", "2024-05-01T10:00:00Z", "a"),  # never finished
    started("u2", "2024-05-01T11:00:00Z", "b"),
    track(
        "Import Finished", user="u2", at=at("2024-05-01T11:30:00Z"), properties={"import_id": "b"}
    ),
    started("u3", "2024-04-20T10:00:00Z", "c"),  # before --since
    started("u4", "2024-05-09T23:00:00Z", "d"),  # deadline after --until
    started("u5", "2024-05-02T18:00:00Z", "e"),  # deadline 22:00 Berlin: quiet hours
    track("Signed Up", user="u5", at=at("2024-05-02T18:00:00Z")),
]


def prepare(tmp_path: Path) -> DataDir:
    directory = DataDir.create(tmp_path / "data")
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(BASE_PLAN + TRIGGERS, encoding="utf-8")
    directory.install_plan(plan_file)
    log = SQLiteEventLog(directory.log_path)
    log.append([to_record(raw) for raw in HISTORY])
    log.close()
    return directory


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def test_backtest_cli_json(tmp_path: Path) -> None:
    directory = prepare(tmp_path)
    log_before = digest(directory.log_path)
    result = run_cli(
        "triggers",
        "backtest",
        "import_stuck",
        "--since",
        "2024-05-01",
        "--until",
        "2024-05-10",
        "--json",
        "--data-dir",
        str(directory.root),
    )
    report = json.loads(result.stdout)
    assert [(row["user_id"], row["at"]) for row in report["messages"]] == [
        ("u1", "2024-05-01T12:00:00.000Z"),
        ("u5", "2024-05-03T06:00:00.000Z"),  # 22:00 Berlin is quiet; 08:00 the next morning
    ]
    assert report["messages"][0]["content"]["subject"] == "Your import a is stuck"
    assert report["messages"][0]["recipient"] == "u1@example.com"
    assert report["persons_entered"] == 2
    assert report["events_replayed"] == len(HISTORY)
    assert [event["properties"] for event in report["emitted"]] == [
        {"import": "a"},
        {"import": "e"},
    ]
    assert report["decisions"]["entered"] == 2
    # the live data directory is untouched: same log, and no state or outbox written
    assert digest(directory.log_path) == log_before
    assert not directory.state_path.exists()


def test_backtest_table_output(tmp_path: Path) -> None:
    directory = prepare(tmp_path)
    result = run_cli(
        "triggers",
        "backtest",
        "import_stuck",
        "--since",
        "2024-05-01",
        "--until",
        "2024-05-10",
        "--data-dir",
        str(directory.root),
    )
    assert "Backtest of import_stuck" in result.stdout
    assert "2 persons entered" in result.stdout
    assert "│ u1" in result.stdout
    assert "│ u5" in result.stdout


def test_backtest_plan_file_and_unknown_rule(tmp_path: Path) -> None:
    directory = prepare(tmp_path)
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(BASE_PLAN + TRIGGERS + EXTRA_RULE, encoding="utf-8")
    result = run_cli(
        "triggers",
        "backtest",
        "welcome",
        "--since",
        "2024-05-01",
        "--until",
        "2024-05-10",
        "--plan",
        str(candidate),
        "--json",
        "--data-dir",
        str(directory.root),
    )
    assert [row["user_id"] for row in json.loads(result.stdout)["messages"]] == ["u5"]

    failed = subprocess.run(
        headstart_command(
            "triggers",
            "backtest",
            "welcome",
            "--since",
            "2024-05-01",
            "--data-dir",
            str(directory.root),
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1
    assert "no trigger rule named 'welcome'; known rules: import_stuck" in failed.stderr


def test_backtest_is_repeatable(tmp_path: Path) -> None:
    directory = prepare(tmp_path)
    plan = directory.load_plan()
    assert plan is not None
    window = (at("2024-05-01T00:00:00Z"), at("2024-05-10T00:00:00Z"))
    first = backtest(directory.log_path, plan, "import_stuck", *window)
    second = backtest(directory.log_path, plan, "import_stuck", *window)
    assert first == second
    narrower = backtest(
        directory.log_path, plan, "import_stuck", window[0], at("2024-05-02T00:00:00Z")
    )
    assert [row["user_id"] for row in narrower["messages"]] == ["u1"]


def test_backtest_groups_sends_not_made(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Console(width=200, record=True)
    monkeypatch.setattr(cli_triggers, "console", recorder)
    rows = [
        {
            "decision": "suppressed",
            "reason": "no recipient for channel email",
            "at": f"t{i}",
            "user_id": f"u{i}",
            "person_id": f"p{i}",
        }
        for i in range(3)
    ] + [
        {"decision": "suppressed", "reason": "cap", "at": "t9", "user_id": None, "person_id": "p9"}
    ]

    cli_triggers._render_not_sent(rows)

    lines = [line for line in recorder.export_text().splitlines() if "suppressed" in line]
    assert len(lines) == 2
    assert "no recipient for channel email" in lines[0]
    assert "│ 3 " in lines[0]
    assert "│ t0 " in lines[0]
    assert "p9" in lines[1]
