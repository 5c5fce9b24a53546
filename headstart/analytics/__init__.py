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
    from headstart.analytics.friction import FrictionResult, friction_points
    from headstart.analytics.funnels import (
        FunnelResult,
        PersonSelection,
        funnel_units,
        run_funnel,
    )
    from headstart.analytics.segments import (
        in_segment,
        segment_members,
        segment_sizes,
    )
    from headstart.analytics.warehouse import (
        Warehouse,
        create_schema,
        load_events,
        load_milestones,
        load_persons,
    )

# Public name -> module that defines it.
_EXPORTS = {
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
    "FrictionResult",
    "FunnelResult",
    "PersonSelection",
    "Warehouse",
    "create_schema",
    "friction_points",
    "funnel_units",
    "in_segment",
    "load_events",
    "load_milestones",
    "load_persons",
    "run_funnel",
    "segment_members",
    "segment_sizes",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'headstart.analytics' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
