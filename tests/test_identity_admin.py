"""Admin merges and separations, through the CLI (no server) and the HTTP API."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from conftest import HeadstartServer, run_cli, wait_until, wait_until_processed

HISTORY = [
    {
        "type": "track",
        "event": "Signed Up",
        "anonymousId": "laptop",
        "timestamp": "2024-01-01T00:00:00Z",
    },
    {
        "type": "identify",
        "userId": "alice",
        "anonymousId": "laptop",
        "timestamp": "2024-01-01T00:01:00Z",
    },
    {
        "type": "track",
        "event": "Project Created",
        "anonymousId": "shared-pc",
        "timestamp": "2024-01-01T00:02:00Z",
    },
    {
        "type": "identify",
        "userId": "alice",
        "anonymousId": "shared-pc",
        "timestamp": "2024-01-01T00:03:00Z",
    },
    {
        "type": "identify",
        "userId": "alice-work",
        "anonymousId": "phone",
        "timestamp": "2024-01-01T00:04:00Z",
    },
]


def import_history(data: Path, tmp_path: Path) -> None:
    source = tmp_path / "history.ndjson"
    source.write_text("\n".join(json.dumps(line) for line in HISTORY) + "\n")
    run_cli("import", str(source), "--data-dir", str(data))


def person(data: Path, identifier: str) -> dict:
    result = run_cli("person", identifier, "--data-dir", str(data), "--json")
    return json.loads(result.stdout)


def identifiers(view: dict) -> set[str]:
    return {f"{item['kind']}:{item['value']}" for item in view["identifiers"]}


def test_admin_merge_joins_two_user_ids(data_dir, tmp_path):
    import_history(data_dir.root, tmp_path)
    assert (
        person(data_dir.root, "alice")["person_id"]
        != person(data_dir.root, "alice-work")["person_id"]
    )

    other = person(data_dir.root, "alice-work")["person_id"]
    output = run_cli(
        "admin",
        "merge",
        "alice",
        "alice-work",
        "--reason",
        "two accounts",
        "--data-dir",
        str(data_dir.root),
    ).stdout

    assert (
        f"merged user_id:alice-work, person {other} (user_id alice-work), into alice"
        in " ".join(output.split())
    )
    merged = person(data_dir.root, "alice-work")
    assert merged["person_id"] == person(data_dir.root, "alice")["person_id"]
    assert merged["user_id"] == "alice"
    assert identifiers(merged) == {
        "anonymous_id:laptop",
        "anonymous_id:shared-pc",
        "anonymous_id:phone",
        "user_id:alice",
        "user_id:alice-work",
    }
    admin_merges = [m for m in merged["merges"] if m["reason"] == "admin"]
    assert len(admin_merges) == 1
    assert admin_merges[0]["detail"]["reason"] == "two accounts"


def test_separation_undoes_an_automatic_merge(data_dir, tmp_path):
    import_history(data_dir.root, tmp_path)
    before = person(data_dir.root, "alice")
    assert before["onboarding"]["milestones"][0]["reached"] is True

    run_cli(
        "admin",
        "separate",
        "anonymous_id:shared-pc",
        "user_id:alice",
        "--reason",
        "shared computer",
        "--data-dir",
        str(data_dir.root),
    )

    after = person(data_dir.root, "alice")
    assert identifiers(after) == {"anonymous_id:laptop", "user_id:alice"}
    assert after["onboarding"]["milestones"][0]["reached"] is False
    assert [w["code"] for w in after["warnings"]] == ["identity_separated"]
    apart = person(data_dir.root, "shared-pc")
    assert apart["person_id"] != after["person_id"]
    assert apart["event_counts"] == {"Project Created": 1}


def test_separation_wins_over_admin_merge(data_dir, tmp_path):
    import_history(data_dir.root, tmp_path)
    run_cli("admin", "merge", "alice", "alice-work", "--data-dir", str(data_dir.root))
    run_cli("admin", "separate", "alice", "alice-work", "--data-dir", str(data_dir.root))

    assert (
        person(data_dir.root, "alice")["person_id"]
        != person(data_dir.root, "alice-work")["person_id"]
    )


def test_merge_and_separate_over_http(data_dir):
    server = HeadstartServer(data_dir).start()
    try:
        with server.client(auth=(data_dir.write_key, "")) as client, server.admin_client() as admin:
            for message in HISTORY:
                response = client.post(
                    "/v1/batch",
                    json={"batch": [message]},
                    headers={"X-Headstart-Historical": "true"},
                )
                assert response.status_code == 200, response.text
            wait_until_processed(admin)

            merged = admin.post(
                "/api/identity/merges",
                json={"into": "alice", "other": "alice-work", "reason": "same"},
            )
            assert merged.status_code == 200, merged.text
            view = admin.get("/api/persons/alice-work").json()
            assert "user_id:alice" in identifiers(view)

            separated = admin.post(
                "/api/identity/separations", json={"first": "alice", "second": "alice-work"}
            )
            assert separated.status_code == 200, separated.text

            def apart() -> bool:
                # While state is rebuilt from the log, the person may not exist yet.
                response = admin.get("/api/persons/alice-work")
                if response.status_code == 404:
                    return False
                return "user_id:alice" not in identifiers(response.json())

            wait_until(apart, 30, "the separation was not applied by the running server")

            unknown = admin.post("/api/identity/merges", json={"into": "nobody", "other": "alice"})
            assert unknown.status_code == 404
            assert unknown.json()["code"] == "person_not_found"
            anonymous = httpx.post(
                f"{server.url}/api/identity/merges", json={"into": "alice", "other": "alice-work"}
            )
            assert anonymous.status_code == 401
    finally:
        server.stop()
