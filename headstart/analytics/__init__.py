"""Onboarding analytics over the DuckDB warehouse (``analytics.duckdb``).

Every analysis counts persons after identity resolution and returns pandas DataFrames::

    from headstart.analytics import Warehouse, run_funnel
    from headstart.datadir import DataDir
    from headstart.plan.analytics import FunnelSpec

    warehouse = Warehouse.open(DataDir.create("headstart-data"))
    warehouse.sync()
    spec = FunnelSpec.model_validate({"steps": [{"event": "Signed Up"}, {"event": "Project Created"}]})
    run_funnel(warehouse, spec).steps

The names below are imported on first use, so that importing one submodule (the server
imports the warehouse) does not load pandas and every analysis. A new public name goes into
``__all__``, ``_EXPORTS`` and the ``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headstart.analytics.discovery import DiscoveryQuery, DiscoveryResult, discover
    from headstart.analytics.friction import FrictionResult, friction_points
    from headstart.analytics.funnels import (
        FunnelResult,
        PersonSelection,
        funnel_units,
        run_funnel,
    )
    from headstart.analytics.person_groups import Breakdown
    from headstart.analytics.retention import RetentionQuery, RetentionResult, run_retention
    from headstart.analytics.segments import (
        in_segment,
        segment_members,
        segment_sizes,
    )
    from headstart.analytics.survival import KaplanMeier, kaplan_meier
    from headstart.analytics.ttv import TtvQuery, TtvResult, time_to_value
    from headstart.analytics.warehouse import (
        Warehouse,
        create_schema,
        load_events,
        load_milestones,
        load_persons,
    )

# Public name -> module that defines it.
_EXPORTS = {
    "Breakdown": "headstart.analytics.person_groups",
    "DiscoveryQuery": "headstart.analytics.discovery",
    "DiscoveryResult": "headstart.analytics.discovery",
    "KaplanMeier": "headstart.analytics.survival",
    "RetentionQuery": "headstart.analytics.retention",
    "RetentionResult": "headstart.analytics.retention",
    "TtvQuery": "headstart.analytics.ttv",
    "TtvResult": "headstart.analytics.ttv",
    "discover": "headstart.analytics.discovery",
    "kaplan_meier": "headstart.analytics.survival",
    "run_retention": "headstart.analytics.retention",
    "time_to_value": "headstart.analytics.ttv",
    "FrictionResult": "headstart.analytics.friction",
    "FunnelResult": "headstart.analytics.funnels",
    "PersonSelection": "headstart.analytics.funnels",
    "Warehouse": "headstart.analytics.warehouse",
    "create_schema": "headstart.analytics.warehouse",
    "friction_points": "headstart.analytics.friction",
    "funnel_units": "headstart.analytics.funnels",
    "in_segment": "headstart.analytics.segments",
    "load_events": "headstart.analytics.warehouse",
    "load_milestones": "headstart.analytics.warehouse",
    "load_persons": "headstart.analytics.warehouse",
    "run_funnel": "headstart.analytics.funnels",
    "segment_members": "headstart.analytics.segments",
    "segment_sizes": "headstart.analytics.segments",
}

__all__ = [
    "Breakdown",
    "DiscoveryQuery",
    "DiscoveryResult",
    "FrictionResult",
    "FunnelResult",
    "KaplanMeier",
    "PersonSelection",
    "RetentionQuery",
    "RetentionResult",
    "TtvQuery",
    "TtvResult",
    "Warehouse",
    "create_schema",
    "discover",
    "friction_points",
    "funnel_units",
    "in_segment",
    "kaplan_meier",
    "load_events",
    "load_milestones",
    "load_persons",
    "run_funnel",
    "run_retention",
    "segment_members",
    "segment_sizes",
    "time_to_value",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'headstart.analytics' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
