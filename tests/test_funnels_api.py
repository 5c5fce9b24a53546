"""Funnels and segments end to end: ingest over HTTP, identity merges, REST and the CLI.

A real ``headstart serve`` runs on 127.0.0.1 with a plan that saves a funnel and a segment.
Events go in through ``/v1/batch`` on a historical source, including a person who starts the
funnel on a phone, continues on a laptop and is merged by an identify call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from headstart.analytics.funnels import run_funnel
from headstart.analytics.warehouse import Warehouse
from headstart.datadir import DataDir
from headstart.plan.analytics import FunnelSpec
from tests.conftest import DEFAULT_PLAN, HeadstartDir, HeadstartServer, make_data_dir, run_cli
from tests.helpers.pipeline import T0, Pipeline, identify, iso, track

HOUR = 3_600_000_000

PLAN = (
    DEFAULT_PLAN
    + """\
funnels:
  - name: onboarding
    steps:
      - event: Signed Up
      - event: Project Created
      - event: Teammate Invited
    window: 1d
    breakdown: {by: campaign, key: source}
segments:
  - name: builders
    description: Created a project
    conditions:
      - did: Project Created
"""
)


def event(kind: str, at: int, message_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "timestamp": iso(at), "messageId": message_id, **fields}


EVENTS = [
    # ann starts on her phone, anonymously, from an ad ...
    event(
        "track",
        T0,
        "ann-1",
        event="Signed Up",
        anonymousId="ann-phone",
        context={"campaign": {"source": "ads"}},
    ),
    # ... creates a project on her laptop, signed in ...
    event("track", T0 + HOUR, "ann-2", event="Project Created", userId="ann"),
    # ... and signs in on the phone, which merges the two.
    event("identify", T0 + 2 * HOUR, "ann-3", userId="ann", anonymousId="ann-phone"),
    event("track", T0, "bob-1", event="Signed Up", userId="bob"),
    event("track", T0 + HOUR, "bob-2", event="Import Failed", userId="bob"),
    event("track", T0, "cid-1", event="Signed Up", userId="cid"),
    event("track", T0 + HOUR, "cid-2", event="Project Created", userId="cid"),
    event("track", T0 + 2 * HOUR, "cid-3", event="Teammate Invited", userId="cid"),
    # A late event moves the data's end past everyone's window.
    event("track", T0 + 72 * HOUR, "cid-4", event="Opened App", userId="cid"),
]

AD_HOC = {
    "steps": [{"event": "Signed Up"}, {"event": "Project Created"}, {"event": "Teammate Invited"}],
    "window": "1d",
}


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[HeadstartServer, HeadstartDir]]:
    data = make_data_dir(tmp_path_factory.mktemp("analytics") / "data", plan=PLAN)
    key = data.add_source("backfill", historical=True)
    server = HeadstartServer(data).start()
    try:
        with server.client() as http:
            response = http.post("/v1/batch", json={"batch": EVENTS}, auth=(key, ""))
            assert response.status_code == 200, response.text
        yield server, data
    finally:
        server.stop()


@pytest.fixture
def admin(live: tuple[HeadstartServer, HeadstartDir]) -> Iterator[httpx.Client]:
    with live[0].admin_client() as http:
        yield http


def person_id(admin: httpx.Client, identifier: str) -> str:
    response = admin.get(f"/api/persons/{identifier}", params={"wait": "true"})
    assert response.status_code == 200, response.text
    return str(response.json()["person_id"])


def test_post_funnel_counts_merged_person(admin: httpx.Client) -> None:
    response = admin.post(
        "/api/funnels",
        json=AD_HOC,
        params={"wait": "true", "persons_step": 2, "persons_status": "reached"},
    )

    assert response.status_code == 200, response.text
    result = response.json()
    assert [row["units"] for row in result["steps"]] == [3, 2, 1]
    listed = {row["person_id"] for row in result["persons"]}
    assert listed == {person_id(admin, "ann"), person_id(admin, "cid")}
    assert result["as_of"] == "2024-03-04T00:00:00.000Z"


def test_saved_funnel_with_campaign_breakdown(admin: httpx.Client) -> None:
    response = admin.get("/api/funnels/onboarding", params={"wait": "true"})

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["spec"]["breakdown"]["attribution"] == "first_touch"
    by_value = {
        (row["breakdown"], row["step"]): row["units"] for row in result["breakdown"] if row["units"]
    }
    assert by_value == {
        ("ads", 1): 1,
        ("ads", 2): 1,
        ("(none)", 1): 2,
        ("(none)", 2): 1,
        ("(none)", 3): 1,
    }


def test_saved_funnels_listed(admin: httpx.Client) -> None:
    response = admin.get("/api/funnels")

    assert response.status_code == 200
    assert [spec["name"] for spec in response.json()["funnels"]] == ["onboarding"]


def test_friction_after_signup(admin: httpx.Client) -> None:
    response = admin.get("/api/funnels/onboarding/friction", params={"step": 1, "wait": "true"})

    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["dropped"], result["converted"]) == (1, 2)
    failed = next(row for row in result["events"] if row["event"] == "Import Failed")
    assert failed["dropped_share"] == 1.0
    assert failed["error_like"] is True


def test_segments_sizes_members_and_membership(admin: httpx.Client) -> None:
    sizes = admin.get("/api/segments", params={"wait": "true"}).json()["segments"]
    members = admin.get("/api/segments/builders").json()
    ann = admin.get("/api/segments/builders/persons/ann").json()
    bob = admin.get("/api/segments/builders/persons/bob").json()

    assert [(row["segment"], row["persons"]) for row in sizes] == [("builders", 2)]
    assert members["persons"] == 2
    assert members["segment"]["conditions"] == [{"did": "Project Created"}]
    assert ann == {"segment": "builders", "person_id": person_id(admin, "ann"), "member": True}
    assert bob["member"] is False


ERRORS = {
    "unknown-funnel": ("GET", "/api/funnels/missing", None, 404, "unknown_funnel"),
    "unknown-segment": ("GET", "/api/segments/missing", None, 404, "unknown_segment"),
    "one-step": ("POST", "/api/funnels", {"steps": [{"event": "A"}]}, 400, "invalid"),
    "bad-as-of": ("GET", "/api/funnels/onboarding?as_of=soon", None, 400, "invalid"),
    "friction-last-step": ("GET", "/api/funnels/onboarding/friction?step=3", None, 400, "invalid"),
    "unknown-person": ("GET", "/api/segments/builders/persons/nobody", None, 404, "unknown_person"),
}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"), ERRORS.values(), ids=ERRORS.keys()
)
def test_analytics_errors(
    admin: httpx.Client, method: str, path: str, body: Any, status: int, code: str
) -> None:
    response = admin.request(method, path, json=body)

    assert response.status_code == status, response.text
    assert response.json()["code"] == code


def test_post_body_read_as_json_without_header(admin: httpx.Client) -> None:
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    response = admin.post("/api/funnels", content=json.dumps(AD_HOC), headers=form_type)

    assert response.status_code == 200, response.text
    assert response.json()["steps"][0]["units"] >= 1


def test_analytics_needs_admin_key(live: tuple[HeadstartServer, HeadstartDir]) -> None:
    with live[0].client() as http:
        response = http.post("/api/funnels", json=AD_HOC)

    assert response.status_code == 401


def test_cli_uses_running_server(
    live: tuple[HeadstartServer, HeadstartDir], admin: httpx.Client
) -> None:
    _, data = live
    through_rest = admin.get("/api/funnels/onboarding", params={"wait": "true"}).json()

    output = run_cli("funnel", "--name", "onboarding", "--json", "--data-dir", str(data.root))

    assert json.loads(output.stdout) == through_rest


# ---- without a server -------------------------------------------------------------------------


def test_cli_opens_directory_without_server(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "data", plan=PLAN)
    lines = "\n".join(json.dumps(message) for message in EVENTS)
    (tmp_path / "events.ndjson").write_text(lines + "\n", encoding="utf-8")
    run_cli("import", str(tmp_path / "events.ndjson"), "--data-dir", str(data.root))

    funnel = run_cli(
        "funnel",
        "--step",
        "Signed Up",
        "--step",
        "Project Created",
        "--where",
        "2:plan=pro",
        "--window",
        "1d",
        "--json",
        "--data-dir",
        str(data.root),
    )
    segments = run_cli("segments", "--json", "--data-dir", str(data.root))
    table = run_cli("funnel", "--name", "onboarding", "--data-dir", str(data.root))

    steps = json.loads(funnel.stdout)["steps"]
    assert [row["units"] for row in steps] == [3, 0]
    assert json.loads(funnel.stdout)["spec"]["steps"][1]["where"] == {"plan": "pro"}
    assert json.loads(segments.stdout)["segments"][0]["persons"] == 2
    assert "Teammate Invited" in table.stdout
    assert "ads" in table.stdout


def test_person_merged_mid_funnel_after_sync(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path)
    warehouse = Warehouse.open(DataDir(tmp_path))
    spec = FunnelSpec.model_validate(
        {"steps": [{"event": "Signed Up"}, {"event": "Project Created"}], "window": "1d"}
    )
    pipeline.send(
        track("Signed Up", anon="phone", at=T0),
        track("Project Created", user="ann", at=T0 + HOUR),
    )
    warehouse.sync()
    before = run_funnel(warehouse, spec)

    pipeline.send(identify("ann", "phone", at=T0 + 2 * HOUR))
    warehouse.sync()
    after = run_funnel(warehouse, spec)

    assert list(before.steps["units"]) == [1, 0]
    assert list(after.steps["units"]) == [1, 1]
    assert after.steps["median_s_from_previous"].iloc[1] == 3600.0
