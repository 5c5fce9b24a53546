"""Retention over the REST API and the CLI, on a real server and then on the bare directory.

The journey is tests.helpers.lifecycle_scenario: day 0 retention is 2 of 3 persons, days 1
and 2 are 1 of 3.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import ADMIN_KEY, HeadstartServer, headstart_command, run_cli
from tests.helpers.lifecycle_scenario import get_json, scenario_server

PARAMS = {"periods": "0-2", "cohort": "week"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadstartServer]:
    yield from scenario_server(tmp_path_factory)


def cells(payload: dict[str, object]) -> dict[tuple[str, str], tuple[int, int]]:
    return {
        (cell["cohort"], cell["column"]): (cell["observable"], cell["retained"])  # type: ignore[index]
        for cell in payload["cells"]  # type: ignore[attr-defined]
    }


def test_rest_returns_cells(server: HeadstartServer) -> None:
    payload = get_json(server, "/api/retention", PARAMS)
    assert cells(payload) == {
        ("2024-03-04", "day 0"): (3, 2),
        ("2024-03-04", "day 1"): (3, 1),
        ("2024-03-04", "day 2"): (3, 1),
        ("(all)", "day 0"): (3, 2),
        ("(all)", "day 1"): (3, 1),
        ("(all)", "day 2"): (3, 1),
    }
    assert payload["as_of"] == "2024-05-03T10:00:00.000Z"
    assert payload["definition"]["start"] == "sign-up"


def test_rest_repeated_return_events(server: HeadstartServer) -> None:
    params = [("periods", "0"), ("return_event", "Project Created"), ("return_event", "Open")]
    payload = get_json(server, "/api/retention", params)
    assert cells(payload)[("2024-03-04", "day 0")] == (3, 2)
    assert payload["definition"]["return_events"] == ["Project Created", "Open"]


def test_rest_needs_admin_key(server: HeadstartServer) -> None:
    with server.client() as client:
        response = client.get("/api/retention")
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"timezone": "Nowhere/Town"}, "timezone='Nowhere/Town' is not an IANA time zone"),
        ({"periods": "1-x"}, "periods='1-x' is not a list of numbers"),
        ({"as_of": "yesterday"}, "as_of='yesterday' is not an ISO-8601 time"),
        ({"by": "country"}, "by='country' is not a breakdown"),
    ],
    ids=["zone", "periods", "as-of", "by"],
)
def test_rest_rejects_bad_parameter(
    server: HeadstartServer, params: dict[str, str], message: str
) -> None:
    with server.admin_client() as admin:
        response = admin.get("/api/retention", params=params)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert message in response.json()["message"]


def test_cli_json_through_server_matches_rest(server: HeadstartServer) -> None:
    expected = get_json(server, "/api/retention", PARAMS)
    result = run_cli("retention", "-d", str(server.data.root), "--periods", "0-2", "--json")
    assert json.loads(result.stdout) == expected


def test_cli_table_through_server(server: HeadstartServer) -> None:
    result = run_cli("retention", "-d", str(server.data.root), "--periods", "0-2")
    assert "2024-03-04" in result.stdout
    assert "66.7%" in result.stdout
    assert "33.3%" in result.stdout


def test_cli_without_admin_key_explains(server: HeadstartServer) -> None:
    env = {key: value for key, value in os.environ.items() if key != "HEADSTART_ADMIN_KEY"}
    result = subprocess.run(
        headstart_command("retention", "-d", str(server.data.root)),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert "--admin-key" in result.stderr


def test_cli_on_directory_matches_server(server: HeadstartServer) -> None:
    # Runs last in this module: it stops the server and opens the directory directly.
    expected = get_json(server, "/api/retention", PARAMS)
    server.stop()
    result = run_cli(
        "retention", "-d", str(server.data.root), "--periods", "0-2", "--json", admin_key=ADMIN_KEY
    )
    assert json.loads(result.stdout) == expected
