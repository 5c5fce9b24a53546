"""`headstart import`: NDJSON and CSV files, invalid lines, and files imported twice."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest
from conftest import headstart_command, run_cli


def log_count(data_dir) -> int:
    with sqlite3.connect(data_dir.log_path) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def refused(*args: str) -> str:
    """Run the CLI, check that it failed, and return its error output on one line."""
    result = subprocess.run(headstart_command(*args), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, result.stdout
    return " ".join(result.stderr.split())


def test_ndjson_keeps_valid_lines(data_dir, tmp_path):
    source = tmp_path / "events.ndjson"
    source.write_text(
        '{"type": "track", "event": "Signed Up", "userId": "u1", "timestamp": "2023-03-01T10:00:00Z"}\n'
        "{not json\n"
        '{"type": "track", "event": "Project Created", "timestamp": "2023-03-01T11:00:00Z"}\n'
        '{"type": "track", "event": "Project Created", "userId": "u1", "timestamp": "2023-03-01T12:00:00Z"}\n'
    )

    result = run_cli("import", str(source), "--data-dir", str(data_dir.root))

    assert "4 lines: 2 events logged, 0 duplicates skipped, 2 rejected" in result.stdout
    assert "line 2: invalid_json" in result.stderr
    assert "line 3: missing_identity" in result.stderr
    person = json.loads(run_cli("person", "u1", "--data-dir", str(data_dir.root), "--json").stdout)
    assert person["onboarding"]["signup_at"] == "2023-03-01T10:00:00.000Z"
    assert person["event_counts"] == {"Project Created": 1, "Signed Up": 1}


def test_same_file_is_imported_once(data_dir, tmp_path):
    source = tmp_path / "events.ndjson"
    source.write_text(
        '{"type": "track", "event": "Signed Up", "userId": "u1", "timestamp": "2023-03-01T10:00:00Z"}\n'
    )
    run_cli("import", str(source), "--data-dir", str(data_dir.root))

    again = run_cli("import", str(source), "--data-dir", str(data_dir.root))
    forced = run_cli("import", str(source), "--data-dir", str(data_dir.root), "--force")

    assert "was already imported" in again.stdout
    assert "1 lines: 0 events logged, 1 duplicates skipped" in forced.stdout
    assert log_count(data_dir) == 1


def test_csv_with_column_mapping(data_dir, tmp_path):
    source = tmp_path / "orders.csv"
    source.write_text(
        "customer,placed_at,total,currency\n"
        "u7,2023-05-02T08:00:00Z,42.5,EUR\n"
        "u7,2023-05-03T08:00:00Z,7,EUR\n"
    )

    run_cli(
        "import",
        str(source),
        "--data-dir",
        str(data_dir.root),
        "--event",
        "Order Completed",
        "--map",
        "userId=customer",
        "--map",
        "timestamp=placed_at",
    )

    with sqlite3.connect(data_dir.log_path) as conn:
        bodies = [
            json.loads(row[0]) for row in conn.execute("SELECT body FROM events ORDER BY seq")
        ]
    assert [body["properties"] for body in bodies] == [
        {"total": 42.5, "currency": "EUR"},
        {"total": 7, "currency": "EUR"},
    ]
    assert [body["timestamp"] for body in bodies] == [
        "2023-05-02T08:00:00.000Z",
        "2023-05-03T08:00:00.000Z",
    ]


def test_csv_mapping_errors_name_the_fix(data_dir, tmp_path):
    source = tmp_path / "orders.csv"
    source.write_text("customer,placed_at\nu7,2023-05-02T08:00:00Z\n")

    message = refused(
        "import", str(source), "--data-dir", str(data_dir.root), "--map", "user=customer"
    )

    assert "'user' is not mappable; use one of userId" in message


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["report"], id="report"),
        pytest.param(["person", "ada"], id="person"),
        pytest.param(["funnel", "--step", "Signed Up", "--step", "Paid"], id="funnel"),
        pytest.param(["segments"], id="segments"),
        pytest.param(["messages", "list"], id="messages"),
    ],
)
def test_read_command_rejects_missing_data_dir(tmp_path, command):
    missing = tmp_path / "headstart-dta"
    message = refused(*command, "--data-dir", str(missing))
    assert "is not a headstart data directory" in message
    assert not missing.exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        pytest.param(
            ["--window", "30"],
            "window: expected a duration such as 90s, 15m, 2h, 3d or 1w; got '30'",
            id="window",
        ),
        pytest.param(
            ["--order", "sequential"],
            "order: Input should be 'ordered', 'strict' or 'any'; got 'sequential'",
            id="order",
        ),
    ],
)
def test_funnel_option_error_names_value(data_dir, option, message):
    message = refused(
        "funnel",
        "--step",
        "Signed Up",
        "--step",
        "Paid",
        *option,
        "--data-dir",
        str(data_dir.root),
    )
    assert message in message


def test_csv_row_with_wrong_field_count_is_rejected(data_dir, tmp_path):
    source = tmp_path / "orders.csv"
    source.write_text(
        "customer,placed_at,total\n"
        "u7,2023-05-02T08:00:00Z,42.5\n"
        "u7,2023-05-03T08:00:00Z,7,extra\n"
        "u7,2023-05-04T08:00:00Z\n"
        "u8,2023-05-05T08:00:00Z,3\n"
    )
    result = run_cli(
        "import",
        str(source),
        "--data-dir",
        str(data_dir.root),
        "--event",
        "Order Completed",
        "--map",
        "userId=customer",
        "--map",
        "timestamp=placed_at",
    )
    assert "4 lines: 2 events logged, 0 duplicates skipped, 2 rejected" in result.stdout
    assert "line 3: invalid_row: the row has 4 fields and the header 3" in result.stderr
    assert "line 4: invalid_row: the row has 2 fields and the header 3" in result.stderr


def test_renamed_copy_forced_in_is_not_doubled(data_dir, tmp_path):
    line = '{"type": "track", "event": "Invite Sent", "userId": "u1", "timestamp": "2023-03-01T10:00:00Z"}\n'
    source = tmp_path / "events.ndjson"
    source.write_text(line * 2)
    copy = tmp_path / "events-copy.ndjson"
    copy.write_text(line * 2)

    first = run_cli("import", str(source), "--data-dir", str(data_dir.root))
    forced = run_cli("import", str(copy), "--data-dir", str(data_dir.root), "--force")

    assert "2 lines: 2 events logged, 0 duplicates skipped" in first.stdout
    assert "2 lines: 0 events logged, 2 duplicates skipped" in forced.stdout
    assert log_count(data_dir) == 2


def test_invalid_file_can_be_reimported(data_dir, tmp_path):
    source = tmp_path / "orders.csv"
    source.write_text("customer,placed_at\nu7,2023-05-02T08:00:00Z\n")
    common = ["--data-dir", str(data_dir.root), "--map", "userId=customer"]
    failed = run_cli("import", str(source), *common)  # a track import needs --event
    fixed = run_cli("import", str(source), *common, "--event", "Order Completed")

    assert "0 events logged" in failed.stdout
    assert "1 events logged" in fixed.stdout


def test_csv_mapping_to_missing_column_fails_once(data_dir, tmp_path):
    source = tmp_path / "orders.csv"
    source.write_text("customer,placed_at\nu7,2023-05-02T08:00:00Z\nu8,2023-05-02T09:00:00Z\n")
    message = refused(
        "import",
        str(source),
        "--data-dir",
        str(data_dir.root),
        "--event",
        "Paid",
        "--map",
        "userId=cust",
    )
    assert "--map names 'cust', which the CSV header (customer, placed_at) does not have" in message
    assert "line 2" not in message


def test_saved_funnel_rejects_changes_from_options(data_dir):
    message = refused(
        "funnel", "--name", "onboarding", "--window", "14d", "--data-dir", str(data_dir.root)
    )
    assert "--window cannot change a funnel given by --name" in message
