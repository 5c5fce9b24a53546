"""Table set-up and number formats shared by the CLI's terminal views."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from rich.table import Table


def new_table(columns: Iterable[str], *, numeric: Collection[str] = (), **options: Any) -> Table:
    """Create a table with these column headers; ``numeric`` columns align right, others left.

    ``options`` go to ``rich.table.Table``, e.g. ``title`` or ``box``.
    """
    table = Table(**options)
    for column in columns:
        table.add_column(column, justify="right" if column in numeric else "left")
    return table


def format_percent(share: float | None) -> str:
    """Format a share in [0, 1] as a percentage with one decimal; None becomes ``-``."""
    return "-" if share is None else f"{100 * share:.1f}%"


def format_count(count: int | None) -> str:
    """Format a count; None (not applicable) becomes ``-``."""
    return "-" if count is None else str(count)


def format_seconds(seconds: float | None) -> str:
    """Format a duration in seconds: s below 2 minutes, min below 2 hours, h below 2 days, then d."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def format_hours(hours: float | None, *, unit_separator: str = " ") -> str:
    """Format a duration in hours, in days from 48 hours on; None becomes ``-``."""
    if hours is None:
        return "-"
    if hours < 48:
        return f"{hours:.1f}{unit_separator}h"
    return f"{hours / 24:.1f}{unit_separator}d"
