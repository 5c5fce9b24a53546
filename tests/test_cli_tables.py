"""Number formats and table set-up of the CLI's terminal views."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from headstart.cli.analytics_render import _times_table
from headstart.cli.render import render_person
from headstart.cli.tables import (
    format_count,
    format_hours,
    format_percent,
    format_seconds,
    new_table,
)


@pytest.mark.parametrize(
    ("share", "expected"),
    [(None, "-"), (0.0, "0.0%"), (2 / 3, "66.7%"), (1.0, "100.0%"), (0.1234, "12.3%")],
    ids=["missing", "zero", "two-thirds", "all", "one-decimal"],
)
def test_format_percent(share: float | None, expected: str) -> None:
    assert format_percent(share) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (None, "-"),
        (0.0, "0 s"),
        (119.0, "119 s"),
        (120.0, "2.0 min"),
        (7199.0, "120.0 min"),
        (7200.0, "2.0 h"),
        (172_799.0, "48.0 h"),
        (172_800.0, "2.0 d"),
    ],
    ids=["missing", "zero", "below-2-min", "2-min", "below-2-h", "2-h", "below-2-d", "2-d"],
)
def test_format_seconds_units(seconds: float | None, expected: str) -> None:
    assert format_seconds(seconds) == expected


@pytest.mark.parametrize(
    ("hours", "separator", "expected"),
    [
        (None, " ", "-"),
        (1.5, " ", "1.5 h"),
        (47.9, " ", "47.9 h"),
        (48.0, " ", "2.0 d"),
        (47.9, "", "47.9h"),
        (72.0, "", "3.0d"),
    ],
    ids=["missing", "hours", "below-2-d", "2-d", "no-separator-hours", "no-separator-days"],
)
def test_format_hours_units(hours: float | None, separator: str, expected: str) -> None:
    assert format_hours(hours, unit_separator=separator) == expected


def test_format_count_none_and_zero() -> None:
    assert format_count(None) == "-"
    assert format_count(0) == "0"


def test_new_table_aligns_numeric_right() -> None:
    table = new_table(("step", "units", "share"), numeric=("units", "share"), title="Steps")

    assert table.title == "Steps"
    assert [column.header for column in table.columns] == ["step", "units", "share"]
    assert [column.justify for column in table.columns] == ["left", "right", "right"]


PERSON: dict[str, Any] = {
    "person_id": "p1",
    "user_id": "ada",
    "identifiers": [{"kind": "user_id", "value": "ada"}],
    "first_seen": "2024-05-06T10:00:00.000Z",
    "last_seen": "2024-05-06T10:05:03.807Z",
    "traits": {},
    "trait_set_at": {},
    "onboarding": {
        "signup_at": "2024-05-06T10:00:00.000Z",
        "activated": True,
        "activated_at": "2024-05-06T10:05:03.807Z",
        "ttv_seconds": 303.807,
        "milestones": [],
    },
    "event_counts": {},
    "merges": [
        {
            "at": "2024-05-06T10:01:00.000Z",
            "reason": "identify",
            "survivor": "p1",
            "merged": "p2",
            "detail": {
                "link": {"kind": "anonymous_id", "value": "phone"},
                "merged_user_id": None,
                "merged_anonymous_ids": ["phone"],
            },
        }
    ],
    "warnings": [],
    "decisions": [
        {
            "at": "2024-05-06T10:00:00.000Z",
            "rule": "welcome",
            "step": "1",
            "kind": "enqueued",
            "reason": "email message enqueued",
            "delivery": {"status": "dead", "attempts": 5, "last_error": "550 no mailbox"},
        }
    ],
}


def printed_person(person: dict[str, Any]) -> str:
    console = Console(width=200, record=True)
    render_person(console, person)
    return console.export_text()


def test_person_view_shows_time_to_value() -> None:
    assert "activated at 2024-05-06T10:05:03.807Z, time-to-value 303.8 s" in printed_person(PERSON)


def test_person_view_shows_failed_delivery() -> None:
    text = printed_person(PERSON)
    assert "delivery dead after 5 attempts: 550 no mailbox" in text


def test_person_view_shows_merges() -> None:
    [line] = [line for line in printed_person(PERSON).splitlines() if "identify" in line]
    assert "anonymous_id=phone" in line
    assert "p2" in line


def test_time_buckets_run_from_short_to_long() -> None:
    rows = [
        {"step": 2, "label": "B", "bucket": "5-15m", "lower_s": 300, "units": 2},
        {"step": 2, "label": "B", "bucket": "< 1m", "lower_s": 0, "units": 0},
        {"step": 3, "label": "C", "bucket": "< 1m", "lower_s": 0, "units": 1},
        {"step": 3, "label": "C", "bucket": "1-4h", "lower_s": 3600, "units": 1},
    ]
    console = Console(width=200, record=True)
    console.print(_times_table(rows))
    header = next(line for line in console.export_text().splitlines() if "┃ step" in line)
    assert header.index("< 1m") < header.index("5-15m") < header.index("1-4h")
