"""The analytics warehouse: copy from log and state, merges, person refresh and rebuilds.

Every test runs the real processor over a real log and state in tmp_path, syncs a real DuckDB
file, and compares the warehouse with what the state and log say directly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from headstart.analytics.warehouse import (
    Warehouse,
    create_schema,
    load_events,
    load_milestones,
    load_persons,
)
from headstart.datadir import DataDir, DirectoryBusy
from headstart.plan.load import parse_plan
from tests.helpers.pipeline import T0, Pipeline, alias, identify, message, track
from tests.helpers.triggers import TriggerWorld, at, plan_with

HOUR = 3_600_000_000

PLAN = parse_plan(
    """\
signup:
  event: Signed Up
milestones:
  - name: created_project
    event: Project Created
activation:
  milestones: [created_project]
  within_days: 7
"""
)
OTHER_PLAN = parse_plan(
    """\
signup:
  event: Signed Up
milestones:
  - name: created_project
    event: Project Created
    min_count: 2
activation:
  milestones: [created_project]
  within_days: 7
"""
)


def open_pipeline(root: Path, plan: Any = PLAN) -> tuple[Pipeline, Warehouse]:
    pipeline = Pipeline(root, plan)
    return pipeline, Warehouse.open(DataDir(root))


def events_by_message(warehouse: Warehouse) -> dict[str, tuple[Any, ...]]:
    rows = warehouse.conn.execute(
        "SELECT message_id, person_id, type, event, epoch_us(ts), properties->>'$.plan',"
        " context->>'$.campaign.source' FROM events"
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


def table(warehouse: Warehouse, sql: str) -> list[tuple[Any, ...]]:
    return sorted(warehouse.conn.execute(sql).fetchall(), key=repr)


def snapshot(warehouse: Warehouse) -> dict[str, list[tuple[Any, ...]]]:
    """Return every warehouse table's rows, sorted, for comparing two warehouses."""
    return {
        "events": table(
            warehouse,
            "SELECT seq, person_id, type, event, ts, properties::VARCHAR, context::VARCHAR,"
            " user_id, anonymous_id, message_id FROM events",
        ),
        "persons": table(
            warehouse,
            "SELECT person_id, user_id, first_seen, last_seen, signup_at, activated_at,"
            " traits::VARCHAR FROM persons",
        ),
        "milestones": table(warehouse, "SELECT * FROM milestones"),
    }


# ---- copying events ---------------------------------------------------------------------------


def test_sync_copies_applied_events(tmp_path: Path) -> None:
    pipeline, warehouse = open_pipeline(tmp_path)
    pipeline.send(
        track(
            "Signed Up",
            user="ann",
            hours=1,
            message_id="signup",
            properties={"plan": "pro"},
            context={"campaign": {"source": "newsletter"}},
        ),
        message("page", user="ann", hours=2, message_id="page", name="Pricing"),
        message("screen", user="ann", hours=3, message_id="screen", name="Home"),
        identify("ann", hours=4, message_id="identify", traits={"plan": "pro"}),
    )

    report = warehouse.sync()

    person_id = pipeline.store.find_person_id("ann")
    assert report.events == 4
    assert report.rebuilt is True
    rows = events_by_message(warehouse)
    assert rows["signup"] == (person_id, "track", "Signed Up", T0 + HOUR, "pro", "newsletter")
    assert rows["page"] == (person_id, "page", "Page Viewed", T0 + 2 * HOUR, None, None)
    assert rows["screen"] == (person_id, "screen", "Screen Viewed", T0 + 3 * HOUR, None, None)
    assert rows["identify"] == (person_id, "identify", None, T0 + 4 * HOUR, None, None)
    page_name = warehouse.conn.execute(
        "SELECT properties->>'$.name' FROM events WHERE message_id = 'page'"
    ).fetchone()
    assert page_name == ("Pricing",)


def test_sync_stops_at_processed_offset(tmp_path: Path) -> None:
    pipeline, warehouse = open_pipeline(tmp_path)
    pipeline.send(track("Signed Up", user="ann", hours=1))
    pipeline.append([track("Project Created", user="ann", hours=2)])

    first = warehouse.sync()
    assert first.offset == 1
    assert first.events == 1

    pipeline.process()
    second = warehouse.sync()
    assert second.offset == 2
    assert second.events == 1
    assert second.rebuilt is False
    count = warehouse.conn.execute("SELECT count(*) FROM events").fetchone()
    assert count == (2,)


def test_sync_without_changes_copies_nothing(tmp_path: Path) -> None:
    pipeline, warehouse = open_pipeline(tmp_path)
    pipeline.send(track("Signed Up", user="ann", hours=1))
    warehouse.sync()

    report = warehouse.sync()

    assert (report.events, report.persons, report.merges, report.rebuilt) == (0, 0, 0, False)


def test_sync_skips_events_without_person(tmp_path: Path) -> None:
    pipeline, warehouse = open_pipeline(tmp_path)
    pipeline.send(
        track("Signed Up", anon="guest", hours=1, message_id="placeholder"),
        track("Signed Up", anon="device-1", hours=2, message_id="real"),
    )

    warehouse.sync()

    assert set(events_by_message(warehouse)) == {"real"}


def test_sync_without_state_file(tmp_path: Path) -> None:
    warehouse = Warehouse.open(DataDir.create(tmp_path))

    report = warehouse.sync()

    assert (report.offset, report.events) == (0, 0)


# ---- merges -----------------------------------------------------------------------------------


def test_merge_repoints_synced_events(tmp_path: Path) -> None:
    pipeline, warehouse = open_pipeline(tmp_path)
    pipeline.send(
        track("Signed Up", anon="phone", hours=1, message_id="on-phone"),
        track("Project Created", user="ann", hours=2, message_id="on-laptop"),
    )
    warehouse.sync()
    phone_person = pipeline.store.find_person_id("phone")
    assert events_by_message(warehouse)["on-phone"][0] == phone_person

    pipeline.send(identify("ann", "phone", hours=3, message_id="link"))
    report = warehouse.sync()

    ann = pipeline.store.find_person_id("ann")
    assert report.merges == 1
    assert {row[0] for row in events_by_message(warehouse).values()} == {ann}
    persons = table(warehouse, "SELECT person_id FROM persons")
    assert persons == [(ann,)]


def test_chained_merges_reach_last_survivor(tmp_path: Path) -> None:
    pipeline, warehouse = open_pipeline(tmp_path)
    pipeline.send(
        track("Signed Up", anon="phone", hours=1, message_id="phone"),
        track("Signed Up", anon="tablet", hours=1, message_id="tablet"),
    )
    warehouse.sync()
    pipeline.send(
        alias("phone", "ann", hours=2, message_id="alias-phone"),
        alias("tablet", "ann", hours=3, message_id="alias-tablet"),
    )
    warehouse.sync()

    ann = pipeline.store.find_person_id("ann")
    assert {row[0] for row in events_by_message(warehouse).values()} == {ann}
    assert table(warehouse, "SELECT person_id FROM persons") == [(ann,)]


# ---- persons and milestones -------------------------------------------------------------------


def test_persons_and_milestones_follow_state(tmp_path: Path) -> None:
    pipeline, warehouse = open_pipeline(tmp_path)
    pipeline.send(
        identify("ann", hours=0, traits={"plan": "free", "company": "Acme"}),
        track("Signed Up", user="ann", hours=1),
    )
    warehouse.sync()
    pipeline.send(
        identify("ann", hours=5, traits={"plan": "pro"}),
        track("Project Created", user="ann", hours=6),
    )
    warehouse.sync()

    ann = pipeline.store.find_person_id("ann")
    row = warehouse.conn.execute(
        "SELECT user_id, epoch_us(first_seen), epoch_us(last_seen), epoch_us(signup_at),"
        " epoch_us(activated_at), traits->>'$.plan', traits->>'$.company' FROM persons"
        " WHERE person_id = ?",
        [ann],
    ).fetchone()
    assert row == ("ann", T0, T0 + 6 * HOUR, T0 + HOUR, T0 + 6 * HOUR, "pro", "Acme")
    milestones = table(
        warehouse, "SELECT person_id, milestone, epoch_us(reached_at) FROM milestones"
    )
    assert milestones == [(ann, "created_project", T0 + 6 * HOUR)]


# ---- incremental equals full ------------------------------------------------------------------

JOURNEY = [
    track("Signed Up", anon="phone", hours=1, context={"campaign": {"source": "ads"}}),
    track("Project Created", anon="laptop", hours=2),
    identify("ann", "phone", hours=3, traits={"plan": "free"}),
    track("Project Created", user="ann", hours=4, properties={"plan": "free"}),
    alias("laptop", "ann", hours=5),
    track("Signed Up", user="bob", hours=6),
    identify("bob", "tablet", hours=7, traits={"plan": "pro"}),
    track("Project Created", anon="tablet", hours=8),
    track("Project Created", user="ann", anon="tablet", hours=9),
    message("page", anon="kiosk", hours=10, name="Home"),
    identify("cleo", "kiosk", hours=11),
]


@pytest.fixture(scope="module")
def journey_snapshot(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[Any, ...]]]:
    """The warehouse after one sync over the whole journey."""
    full, warehouse = open_pipeline(tmp_path_factory.mktemp("full"))
    full.send(*JOURNEY)
    warehouse.sync()
    return snapshot(warehouse)


@pytest.mark.parametrize("split", range(1, len(JOURNEY)), ids=lambda split: f"sync-after-{split}")
def test_incremental_sync_matches_full(
    tmp_path: Path, split: int, journey_snapshot: dict[str, list[tuple[Any, ...]]]
) -> None:
    stepwise, warehouse = open_pipeline(tmp_path)
    stepwise.send(*JOURNEY[:split])
    warehouse.sync()
    stepwise.send(*JOURNEY[split:])
    warehouse.sync()

    assert snapshot(warehouse) == journey_snapshot
    assert len(journey_snapshot["events"]) == len(JOURNEY)


# ---- rebuilds ---------------------------------------------------------------------------------


def test_plan_change_rebuilds_warehouse(tmp_path: Path) -> None:
    pipeline, warehouse = open_pipeline(tmp_path / "changed")
    pipeline.send(*JOURNEY)
    warehouse.sync()
    before = snapshot(warehouse)["milestones"]

    assert pipeline.processor.use_plan(OTHER_PLAN) is True
    pipeline.process()
    report = warehouse.sync()

    fresh, fresh_warehouse = open_pipeline(tmp_path / "fresh", OTHER_PLAN)
    fresh.send(*JOURNEY)
    fresh_warehouse.sync()
    assert report.rebuilt is True
    assert snapshot(warehouse) == snapshot(fresh_warehouse)
    assert snapshot(warehouse)["milestones"] != before


def test_offset_behind_warehouse_rebuilds(tmp_path: Path) -> None:
    pipeline, warehouse = open_pipeline(tmp_path)
    pipeline.send(*JOURNEY)
    warehouse.sync()
    full = snapshot(warehouse)

    with pipeline.store.transaction():
        pipeline.store.reset_derived()
    pipeline.processor = type(pipeline.processor)(pipeline.log, pipeline.store, PLAN)
    pipeline.processor.batch_size = 4
    pipeline.processor.run_once()
    partial = warehouse.sync()
    pipeline.process()
    warehouse.sync()

    assert partial.rebuilt is True
    assert partial.offset == 4
    assert snapshot(warehouse) == full


def test_deleted_file_is_rebuilt(tmp_path: Path) -> None:
    pipeline, warehouse = open_pipeline(tmp_path)
    pipeline.send(*JOURNEY)
    warehouse.sync()
    full = snapshot(warehouse)
    warehouse.close()
    (tmp_path / "analytics.duckdb").unlink()

    reopened = Warehouse.open(DataDir(tmp_path))
    reopened.sync()

    assert snapshot(reopened) == full


# ---- ownership --------------------------------------------------------------------------------


def test_open_while_other_process_holds_file(tmp_path: Path) -> None:
    path = tmp_path / "analytics.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True);"
            " sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(DirectoryBusy) as raised:
            Warehouse.open(DataDir(tmp_path))
        assert "analytics.duckdb" in raised.value.message
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


# ---- loaders ----------------------------------------------------------------------------------


def test_loaders_fill_tables() -> None:
    conn = duckdb.connect()
    create_schema(conn)

    inserted = load_events(
        conn,
        [
            {"person_id": "p1", "event": "A", "ts": "2024-03-01T00:00:00Z", "properties": {"x": 1}},
            {"person_id": "p1", "ts": T0 + HOUR, "seq": 10},
            {"person_id": "p2", "event": "B", "ts": T0 + 2 * HOUR},
        ],
    )
    load_persons(conn, [{"person_id": "p1", "signup_at": T0, "traits": {"plan": "pro"}}])
    load_milestones(conn, [{"person_id": "p1", "milestone": "m", "reached_at": T0 + HOUR}])

    assert inserted == 3
    events = conn.execute(
        "SELECT seq, person_id, type, event, epoch_us(ts), properties->>'$.x', message_id"
        " FROM events ORDER BY seq"
    ).fetchall()
    assert events == [
        (1, "p1", "track", "A", T0, "1", "m1"),
        (10, "p1", "identify", None, T0 + HOUR, None, "m10"),
        (11, "p2", "track", "B", T0 + 2 * HOUR, None, "m11"),
    ]
    persons = conn.execute("SELECT person_id, epoch_us(signup_at), traits->>'$.plan' FROM persons")
    assert persons.fetchall() == [("p1", T0, "pro")]
    milestones = conn.execute("SELECT person_id, milestone, epoch_us(reached_at) FROM milestones")
    assert milestones.fetchall() == [("p1", "m", T0 + HOUR)]


def test_emitted_events_stay_out(tmp_path: Path) -> None:
    rules = """\
triggers:
  fallback_timezone: UTC
  rules:
    - name: nudge
      entry: {event: Signed Up}
      steps:
        - {wait: 2d}
        - {emit: Nudge Planned, properties: {why: no activity}}
"""
    start = at("2024-05-01T10:00:00Z")
    world = TriggerWorld(tmp_path / "data", plan_with(rules), start)
    world.send(*[track("Signed Up", user=f"u{i}", at=start) for i in range(3)])
    world.advance(start + 3 * 86_400_000_000)
    logged = world.log.connection.execute(
        "SELECT count(*) FROM events WHERE event = 'Nudge Planned'"
    ).fetchone()
    world.close()
    warehouse = Warehouse(duckdb.connect(), DataDir(tmp_path / "data"))
    warehouse.sync()

    names = warehouse.conn.execute("SELECT event, count(*) FROM events GROUP BY 1").fetchall()
    assert logged == (3,)
    assert names == [("Signed Up", 3)]


def test_older_warehouse_version_rebuilds(tmp_path: Path) -> None:
    pipeline, warehouse = open_pipeline(tmp_path / "old")
    pipeline.send(*JOURNEY)
    warehouse.sync()
    mark = warehouse.conn.execute("SELECT plan_hash FROM warehouse_sync").fetchone()
    assert mark is not None and mark[0].endswith("/v2")
    warehouse.conn.execute("UPDATE warehouse_sync SET plan_hash = ?", [mark[0][: -len("/v2")]])

    assert warehouse.sync().rebuilt is True
