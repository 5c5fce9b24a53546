"""Number formats and table set-up of the CLI's terminal views."""

from __future__ import annotations

import pytest

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
