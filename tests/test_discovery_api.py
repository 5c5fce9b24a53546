"""Milestone discovery over the REST API and the CLI on a real server.

The journey is tests.helpers.lifecycle_scenario. With a one-day behaviour window and
"active on day 2 or later" as the outcome, ann is retained (she opens the app at 50 h); ann
and cid created a project on their first day.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import HeadstartServer, run_cli
from tests.helpers.lifecycle_scenario import get_json, scenario_server

PARAMS = {
    "first_days": "1",
    "outcome": "active_after",
    "retention_day": "2",
    "min_doers": "1",
    "min_share": "0",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadstartServer]:
    yield from scenario_server(tmp_path_factory)


def test_rest_ranks_candidates(server: HeadstartServer) -> None:
    payload = get_json(server, "/api/discover", PARAMS)
    assert payload["population"] == 3
    assert payload["retained"] == 1
    top = payload["top_positive"][0]
    assert top["behaviour"] == "Project Created, once in the first 1 days"
    assert top["doers"] == 2
    assert top["doers_retained"] == 1
    assert "experiment" in payload["caveat"]
    assert "LOW_SAMPLE" in payload["codes"]
    assert payload["plan_snippet"].startswith("# Suggested by headstart discover")


def test_rest_rejects_bad_split(server: HeadstartServer) -> None:
    with server.admin_client() as admin:
        response = admin.get("/api/discover", params={"split": "Badge Awarded"})
    assert response.status_code == 400
    assert "is not EVENT=PROPERTY" in response.json()["message"]


def test_cli_json_through_server_matches_rest(server: HeadstartServer) -> None:
    expected = get_json(server, "/api/discover", PARAMS)
    args = [f"--{name.replace('_', '-')}={value}" for name, value in PARAMS.items()]
    result = run_cli("discover", "-d", str(server.data.root), *args, "--json")
    assert json.loads(result.stdout) == expected


def test_cli_table_states_caveat(server: HeadstartServer) -> None:
    args = [f"--{name.replace('_', '-')}={value}" for name, value in PARAMS.items()]
    result = run_cli("discover", "-d", str(server.data.root), *args)
    assert "Project Created" in result.stdout
    assert "hypotheses" in result.stdout
