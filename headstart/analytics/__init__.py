"""Onboarding analytics over the DuckDB warehouse (``analytics.duckdb``).

Every analysis counts persons after identity resolution and returns pandas DataFrames.
"""

from headstart.analytics.warehouse import (
    create_schema,
    load_events,
    load_milestones,
    load_persons,
)

__all__ = [
    "create_schema",
    "load_events",
    "load_milestones",
    "load_persons",
]
