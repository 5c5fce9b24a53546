"""Time-to-value over the REST API and the CLI on a real server.

The journey is tests.helpers.lifecycle_scenario: ann creates a project 2 hours after signing
up (activated at 26 h), cid after 5 hours, bob never.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import HeadstartServer, run_cli
from tests.helpers.lifecycle_scenario import get_json, scenario_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadstartServer]:
    yield from scenario_server(tmp_path_factory)


def summary(payload: dict[str, object]) -> dict[tuple[str, str], dict[str, object]]:
    return {(row["goal"], row["group"]): row for row in payload["summary"]}  # type: ignore[attr-defined,index]


def test_rest_uses_plan_goals(server: HeadstartServer) -> None:
    payload = get_json(server, "/api/ttv")
    rows = summary(payload)
    assert [goal for goal, _ in rows] == [
        "created_project",
        "invited_teammate",
        "viewed_pricing",
        "activation",
    ]
    created = rows[("created_project", "(all)")]
    assert created["signups"] == 3
    assert created["converted"] == 2
    assert created["median_hours"] == 3.5
    assert created["km_median_hours"] == 5.0
    activation = rows[("activation", "(all)")]
    assert activation["converted"] == 1
    assert activation["median_hours"] == 26.0
    assert payload["definition"]["within_days"] == 14


def test_rest_curve_points(server: HeadstartServer) -> None:
    payload = get_json(server, "/api/ttv", {"goal": "created_project", "curve_days": "2"})
    points = [(p["day"], round(p["survival"], 6)) for p in payload["curve"]]
    # Nobody has converted at hour 0; by day 1 ann (2 h) and cid (5 h) have.
    assert points == [(0, 1.0), (1, round(1 / 3, 6)), (2, round(1 / 3, 6))]


def test_rest_unknown_goal_is_invalid(server: HeadstartServer) -> None:
    with server.admin_client() as admin:
        response = admin.get("/api/ttv", params={"goal": "flying"})
    assert response.status_code == 400
    assert "'flying', which is not a milestone" in response.json()["message"]


def test_cli_json_through_server_matches_rest(server: HeadstartServer) -> None:
    expected = get_json(server, "/api/ttv", {"within_days": "7.0", "by": "channel"})
    result = run_cli(
        "ttv", "-d", str(server.data.root), "--within-days", "7", "--by", "channel", "--json"
    )
    assert json.loads(result.stdout) == expected


def test_cli_table_through_server(server: HeadstartServer) -> None:
    result = run_cli("ttv", "-d", str(server.data.root))
    assert "created_project" in result.stdout
    assert "3.5h" in result.stdout
