"""Funnel semantics, one hard case per row, checked against expected counts and the reference.

Each case loads events into a real in-memory DuckDB warehouse, runs the engine, and compares
its per-unit table and aggregates with ``ReferenceFunnel`` (plain Python) and with the step
counts written in the case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd
import pytest
from pydantic import ValidationError

from headstart.analytics.funnels import (
    PersonSelection,
    funnel_units,
    run_funnel,
)
from headstart.analytics.warehouse import create_schema, load_events, load_persons
from headstart.cli.funnel import _where
from headstart.errors import InvalidInput, NotFound, PlanError
from headstart.plan.analytics import FunnelSpec, SegmentSpec
from headstart.plan.load import parse_plan
from tests.test_funnels_reference import (
    HOUR,
    Event,
    ReferenceFunnel,
    Unit,
    as_row,
    histogram,
    in_progress,
    median_times,
    step_counts,
)

DAY = 24 * HOUR
AS_OF = 100 * DAY


def spec_of(*steps: str | dict[str, Any], **options: Any) -> FunnelSpec:
    listed = [{"event": step} if isinstance(step, str) else step for step in steps]
    return FunnelSpec.model_validate({"steps": listed, **options})


def warehouse(events: list[Event], traits: dict[str, dict[str, Any]] | None = None) -> Any:
    conn = duckdb.connect()
    create_schema(conn)
    load_events(conn, [as_row(event) for event in events])
    persons = {event.person_id for event in events} | set(traits or {})
    load_persons(
        conn, [{"person_id": p, "traits": (traits or {}).get(p, {})} for p in sorted(persons)]
    )
    return conn


def engine_rows(frame: pd.DataFrame, spec: FunnelSpec) -> list[tuple[Any, ...]]:
    """Return the engine's units as comparable tuples, in the reference's form."""
    steps = len(spec.steps)
    held = [f"h{index}" for index in range(1, len(spec.hold_constant) + 1)]
    values = (
        [f"b{step}" for step in range(1, steps + 1)]
        if spec.breakdown is not None and spec.breakdown.attributed_by == "per_step"
        else (["b"] if spec.breakdown is not None else [])
    )
    rows = []
    for record in frame.to_dict(orient="records"):
        times = [
            None if pd.isna(record[f"t{s}"]) else int(record[f"t{s}"]) for s in range(1, steps + 1)
        ]
        rows.append(
            (
                record["person_id"],
                tuple(record[name] for name in held),
                int(record["depth"]),
                bool(record["excluded"]),
                times,
                int(record["window_ends_at"]),
                [None if pd.isna(record[name]) else record[name] for name in values] or [None],
            )
        )
    return sorted(rows, key=repr)


def reference_rows(units: list[Unit], spec: FunnelSpec) -> list[tuple[Any, ...]]:
    steps = len(spec.steps)
    return sorted(
        (
            (
                unit.person_id,
                unit.held,
                unit.depth,
                unit.excluded,
                [unit.time(step) for step in range(1, steps + 1)],
                unit.deadline,
                unit.values,
            )
            for unit in units
        ),
        key=repr,
    )


def check_against_reference(
    conn: Any,
    spec: FunnelSpec,
    events: list[Event],
    *,
    traits: dict[str, dict[str, Any]] | None = None,
    segments: tuple[SegmentSpec, ...] = (),
    members: set[str] | None = None,
    as_of: int = AS_OF,
) -> Any:
    """Run the engine and the reference on the same data and assert they agree exactly."""
    reference = ReferenceFunnel(spec, events, traits=traits, segment_members=members)
    units = reference.units()
    frame = funnel_units(conn, spec, as_of=as_of, segments=segments)
    assert engine_rows(frame, spec) == reference_rows(units, spec)

    result = run_funnel(conn, spec, as_of=as_of, segments=segments)
    steps = len(spec.steps)
    counts = step_counts(units, steps)
    waiting = in_progress(units, steps, as_of)
    medians = median_times(units, steps)
    assert result.entered == len(units)
    assert result.excluded == sum(unit.excluded for unit in units)
    for row in result.steps.to_dict(orient="records"):
        step = row["step"]
        assert row["units"] == counts.get((step, None), 0), f"step {step} units"
        assert row["in_progress"] == waiting.get((step, None), 0), f"step {step} in progress"
        previous_us, entry_us = medians[step]
        assert _micros(row["median_s_from_previous"]) == previous_us, f"step {step} median"
        assert _micros(row["median_s_from_entry"]) == entry_us, f"step {step} median from entry"
    buckets = histogram(units, steps)
    bucket_names = list(dict.fromkeys(result.times["bucket"]))
    for row in result.times.to_dict(orient="records"):
        expected = buckets.get((row["step"], bucket_names.index(row["bucket"])), 0)
        assert row["units"] == expected, f"step {row['step']} bucket {row['bucket']}"
    if result.breakdown is not None:
        for row in result.breakdown.to_dict(orient="records"):
            key = (row["step"], row["breakdown"])
            assert row["units"] == counts.get(key, 0), f"breakdown {key}"
            assert row["in_progress"] == waiting.get(key, 0), f"breakdown {key} in progress"
        values = {value for (_, value) in counts if value is not None}
        assert set(result.breakdown["breakdown"]) >= values
    return result


def _micros(seconds: Any) -> float | None:
    if seconds is None or pd.isna(seconds):
        return None
    return float(seconds) * 1_000_000


# ---- hard cases -------------------------------------------------------------------------------


@dataclass
class Case:
    events: list[Event]
    spec: FunnelSpec
    expected: list[int]
    excluded: int = 0
    traits: dict[str, dict[str, Any]] = field(default_factory=dict)


PRICING = {"event": "Page Viewed", "where": {"name": "Pricing"}}

CASES = {
    "equal-timestamps-follow-log-order": Case(
        [Event(1, "p", "A", 0), Event(2, "p", "B", 0)], spec_of("A", "B"), [1, 1]
    ),
    "equal-timestamps-earlier-log-entry-first": Case(
        [Event(1, "p", "B", 0), Event(2, "p", "A", 0)], spec_of("A", "B"), [1, 0]
    ),
    "out-of-order-arrival-converts": Case(
        [Event(1, "p", "B", 2 * HOUR), Event(2, "p", "A", HOUR)], spec_of("A", "B"), [1, 1]
    ),
    "late-arriving-step1-after-step2": Case(
        [Event(1, "p", "A", 2 * HOUR), Event(2, "p", "B", HOUR)], spec_of("A", "B"), [1, 0]
    ),
    "one-event-matching-two-steps": Case(
        [Event(1, "p", "Page Viewed", 0, {"name": "Pricing"})],
        spec_of("Page Viewed", PRICING),
        [1, 0],
    ),
    "two-events-matching-two-steps": Case(
        [
            Event(1, "p", "Page Viewed", 0, {"name": "Home"}),
            Event(2, "p", "Page Viewed", HOUR, {"name": "Pricing"}),
        ],
        spec_of("Page Viewed", PRICING),
        [1, 1],
    ),
    "repeated-step1-first-entry-outside-window": Case(
        [Event(1, "p", "A", 0), Event(2, "p", "A", 10 * DAY), Event(3, "p", "B", 10 * DAY + HOUR)],
        spec_of("A", "B", window="7d"),
        [1, 0],
    ),
    "repeated-step1-any-entry-converts": Case(
        [Event(1, "p", "A", 0), Event(2, "p", "A", 10 * DAY), Event(3, "p", "B", 10 * DAY + HOUR)],
        spec_of("A", "B", window="7d", entry="any"),
        [1, 1],
    ),
    "exclusion-inside-window-disqualifies": Case(
        [Event(1, "p", "A", 0), Event(2, "p", "X", HOUR), Event(3, "p", "B", 2 * HOUR)],
        spec_of("A", "B", exclusions=[{"event": "X"}]),
        [0, 0],
        excluded=1,
    ),
    "exclusion-after-step-2-ignored": Case(
        [Event(1, "p", "A", 0), Event(2, "p", "B", HOUR), Event(3, "p", "X", 2 * HOUR)],
        spec_of("A", "B", "C", exclusions=[{"event": "X", "between": [1, 2]}]),
        [1, 1, 0],
    ),
    "exclusion-after-window-ignored": Case(
        [Event(1, "p", "A", 0), Event(2, "p", "X", 8 * DAY)],
        spec_of("A", "B", window="7d", exclusions=[{"event": "X"}]),
        [1, 0],
    ),
    "exclusion-while-step-2-missing": Case(
        [Event(1, "p", "A", 0), Event(2, "p", "X", DAY)],
        spec_of("A", "B", window="7d", exclusions=[{"event": "X"}]),
        [0, 0],
        excluded=1,
    ),
    "exclusion-same-instant-before-entry-ignored": Case(
        [Event(1, "p", "X", 0), Event(2, "p", "A", 0), Event(3, "p", "B", HOUR)],
        spec_of("A", "B", exclusions=[{"event": "X"}]),
        [1, 1],
    ),
    "exclusion-any-entry-keeps-clean-attempt": Case(
        [
            Event(1, "p", "A", 0),
            Event(2, "p", "X", HOUR),
            Event(3, "p", "A", 2 * HOUR),
            Event(4, "p", "B", 3 * HOUR),
        ],
        spec_of("A", "B", entry="any", exclusions=[{"event": "X"}]),
        [1, 1],
    ),
    "window-end-is-inclusive": Case(
        [Event(1, "p", "A", 0), Event(2, "p", "B", 7 * DAY)],
        spec_of("A", "B", window="7d"),
        [1, 1],
    ),
    "one-microsecond-past-window": Case(
        [Event(1, "p", "A", 0), Event(2, "p", "B", 7 * DAY + 1)],
        spec_of("A", "B", window="7d"),
        [1, 0],
    ),
    "strict-other-event-between": Case(
        [Event(1, "p", "A", 0), Event(2, "p", "X", HOUR), Event(3, "p", "B", 2 * HOUR)],
        spec_of("A", "B", order="strict"),
        [1, 0],
    ),
    "strict-identify-between-allowed": Case(
        [
            Event(1, "p", "A", 0),
            Event(2, "p", None, HOUR, type="identify"),
            Event(3, "p", "B", 2 * HOUR),
        ],
        spec_of("A", "B", order="strict"),
        [1, 1],
    ),
    "any-order-reversed-steps": Case(
        [Event(1, "p", "A", 0), Event(2, "p", "C", HOUR), Event(3, "p", "B", 2 * HOUR)],
        spec_of("A", "B", "C", order="any"),
        [1, 1, 1],
    ),
    "ordered-reversed-steps": Case(
        [Event(1, "p", "A", 0), Event(2, "p", "C", HOUR), Event(3, "p", "B", 2 * HOUR)],
        spec_of("A", "B", "C"),
        [1, 1, 0],
    ),
    "any-order-step-before-entry-ignored": Case(
        [Event(1, "p", "B", 0), Event(2, "p", "A", HOUR)],
        spec_of("A", "B", order="any"),
        [1, 0],
    ),
    "date-range-picks-first-entry-inside": Case(
        [Event(1, "p", "A", 0), Event(2, "p", "A", 10 * DAY), Event(3, "p", "B", 10 * DAY + HOUR)],
        spec_of("A", "B", start="1970-01-05T00:00:00Z"),
        [1, 1],
    ),
    "date-range-end-excludes-entries": Case(
        [Event(1, "p", "A", 10 * DAY), Event(2, "p", "B", 10 * DAY + HOUR)],
        spec_of("A", "B", end="1970-01-05T00:00:00Z"),
        [0, 0],
    ),
    "steps-after-range-end-count": Case(
        [Event(1, "p", "A", 3 * DAY), Event(2, "p", "B", 5 * DAY)],
        spec_of("A", "B", end="1970-01-05T00:00:00Z"),
        [1, 1],
    ),
    "hold-constant-different-projects": Case(
        [Event(1, "p", "A", 0, {"project": 1}), Event(2, "p", "B", HOUR, {"project": 2})],
        spec_of("A", "B", hold_constant=["project"]),
        [1, 0],
    ),
    "hold-constant-counts-each-project": Case(
        [
            Event(1, "p", "A", 0, {"project": 1}),
            Event(2, "p", "A", 0, {"project": 2}),
            Event(3, "p", "B", HOUR, {"project": 2}),
        ],
        spec_of("A", "B", hold_constant=["project"]),
        [2, 1],
    ),
    "hold-constant-number-and-string-differ": Case(
        [Event(1, "p", "A", 0, {"project": 1}), Event(2, "p", "B", HOUR, {"project": "1"})],
        spec_of("A", "B", hold_constant=["project"]),
        [1, 0],
    ),
    "hold-constant-missing-property-ignored": Case(
        [Event(1, "p", "A", 0), Event(2, "p", "B", HOUR, {"project": 1})],
        spec_of("A", "B", hold_constant=["project"]),
        [0, 0],
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_funnel_case(case: Case) -> None:
    conn = warehouse(case.events, case.traits)

    result = check_against_reference(conn, case.spec, case.events, traits=case.traits)

    assert list(result.steps["units"]) == case.expected
    assert result.excluded == case.excluded


# ---- breakdowns -------------------------------------------------------------------------------


def campaign(source: str) -> dict[str, Any]:
    return {"campaign": {"source": source}}


TOUCH_EVENTS = [
    Event(1, "ann", "Visited", 0, context=campaign("ads")),
    Event(2, "ann", "A", HOUR),
    Event(3, "ann", "Visited", 2 * HOUR, context=campaign("mail")),
    Event(4, "ann", "B", 3 * HOUR),
    Event(5, "bob", "A", 0),
    Event(6, "bob", "Visited", HOUR, context={"page": {"url": "https://x.test/?utm_source=blog"}}),
    Event(7, "bob", "B", 2 * HOUR),
    Event(8, "cid", "A", 0),
]

BREAKDOWNS = {
    "campaign-first-touch": (
        {"by": "campaign", "key": "source"},
        {("ads", 1): 1, ("ads", 2): 1, ("blog", 1): 1, ("blog", 2): 1, ("(none)", 1): 1},
    ),
    "campaign-last-touch": (
        {"by": "campaign", "key": "source", "attribution": "last_touch"},
        {("mail", 1): 1, ("mail", 2): 1, ("blog", 1): 1, ("blog", 2): 1, ("(none)", 1): 1},
    ),
    "campaign-per-step": (
        {"by": "campaign", "key": "source", "attribution": "per_step"},
        {("ads", 1): 1, ("mail", 2): 1, ("(none)", 1): 2, ("blog", 2): 1},
    ),
    "trait": (
        {"by": "trait", "key": "plan"},
        {("pro", 1): 1, ("pro", 2): 1, ("free", 1): 1, ("free", 2): 1, ("(none)", 1): 1},
    ),
}


@pytest.mark.parametrize(("breakdown", "expected"), BREAKDOWNS.values(), ids=BREAKDOWNS.keys())
def test_funnel_breakdown(breakdown: dict[str, Any], expected: dict[tuple[str, int], int]) -> None:
    traits = {"ann": {"plan": "pro"}, "bob": {"plan": "free"}}
    spec = spec_of("A", "B", breakdown=breakdown)
    conn = warehouse(TOUCH_EVENTS, traits)

    result = check_against_reference(conn, spec, TOUCH_EVENTS, traits=traits)

    assert result.breakdown is not None
    found = {
        (row["breakdown"], row["step"]): row["units"]
        for row in result.breakdown.to_dict(orient="records")
        if row["units"]
    }
    assert found == expected


def test_experiment_variant_breakdown() -> None:
    def viewed(seq: int, person: str, ts: int, experiment: str, variation: Any) -> Event:
        properties = {"experiment_id": experiment, "variation_id": variation}
        return Event(seq, person, "Experiment Viewed", ts, properties)

    events = [
        viewed(1, "ann", 0, "onboarding", "checklist"),
        Event(2, "ann", "A", HOUR),
        Event(3, "ann", "B", 2 * HOUR),
        viewed(4, "bob", 0, "onboarding", "progress_bar"),
        viewed(5, "bob", 0, "pricing", "cheap"),
        Event(6, "bob", "A", HOUR),
        Event(7, "cid", "A", HOUR),
        Event(8, "dan", "A", HOUR),
        Event(
            9,
            "dan",
            "Experiment Viewed",
            2 * HOUR,
            {"experiment_name": "onboarding", "variation_name": "control"},
        ),
    ]
    spec = spec_of("A", "B", breakdown={"by": "experiment", "key": "onboarding"})
    conn = warehouse(events)

    result = check_against_reference(conn, spec, events)

    assert result.breakdown is not None
    first_step = result.breakdown[result.breakdown["step"] == 1]
    assert dict(zip(first_step["breakdown"], first_step["units"], strict=True)) == {
        "(none)": 1,
        "checklist": 1,
        "control": 1,
        "progress_bar": 1,
    }


def test_property_breakdown_per_step() -> None:
    events = [
        Event(1, "ann", "A", 0, {"plan": "free"}),
        Event(2, "ann", "B", HOUR, {"plan": "pro"}),
        Event(3, "bob", "A", 0, {"plan": "pro"}),
    ]
    spec = spec_of("A", "B", breakdown={"by": "property", "key": "plan", "attribution": "per_step"})
    conn = warehouse(events)

    result = check_against_reference(conn, spec, events)

    assert result.breakdown is not None
    rows = {
        (r["breakdown"], r["step"]): r["units"] for r in result.breakdown.to_dict(orient="records")
    }
    assert rows[("free", 1)] == 1
    assert rows[("pro", 1)] == 1
    assert rows[("pro", 2)] == 1
    assert rows[("free", 2)] == 0


def test_segment_breakdown() -> None:
    events = [
        Event(1, "ann", "A", 0),
        Event(2, "ann", "B", HOUR),
        Event(3, "bob", "A", 0),
    ]
    segment = SegmentSpec.model_validate(
        {"name": "pros", "conditions": [{"trait": "plan", "is": "pro"}]}
    )
    traits = {"ann": {"plan": "pro"}, "bob": {"plan": "free"}}
    spec = spec_of("A", "B", breakdown={"by": "segment", "key": "pros"})
    conn = warehouse(events, traits)

    result = check_against_reference(
        conn, spec, events, traits=traits, segments=(segment,), members={"ann"}
    )

    assert result.breakdown is not None
    rows = {
        (r["breakdown"], r["step"]): r["units"] for r in result.breakdown.to_dict(orient="records")
    }
    assert rows == {("pros", 1): 1, ("pros", 2): 1, ("not pros", 1): 1, ("not pros", 2): 0}


def test_unknown_segment_breakdown() -> None:
    conn = warehouse([Event(1, "ann", "A", 0)])
    spec = spec_of("A", "B", breakdown={"by": "segment", "key": "missing"})

    with pytest.raises(NotFound) as raised:
        run_funnel(conn, spec, as_of=AS_OF)

    assert "missing" in raised.value.message


# ---- aggregates, persons and codes ------------------------------------------------------------


def test_time_to_convert_and_drop_off() -> None:
    events = [
        Event(1, "ann", "A", 0),
        Event(2, "ann", "B", 30 * 60 * 1_000_000),
        Event(3, "bob", "A", 0),
        Event(4, "bob", "B", 2 * HOUR),
        Event(5, "cid", "A", 0),
        Event(6, "dan", "A", AS_OF - HOUR),
    ]
    conn = warehouse(events)

    result = check_against_reference(conn, spec_of("A", "B", window="1d"), events)

    second = result.steps.iloc[1]
    assert second["units"] == 2
    assert second["conversion"] == 0.5
    assert second["dropped"] == 2
    assert second["in_progress"] == 1
    assert second["median_s_from_previous"] == (1800 + 7200) / 2
    buckets = result.times.set_index("bucket")["units"]
    assert buckets["15-60m"] == 1
    assert buckets["1-4h"] == 1
    assert result.codes == ["LOW_SAMPLE"]


def test_persons_dropped_after_step() -> None:
    events = [
        Event(1, "ann", "A", 0),
        Event(2, "ann", "B", HOUR),
        Event(3, "bob", "A", HOUR),
        Event(4, "cid", "A", 2 * HOUR),
        Event(5, "cid", "B", 3 * HOUR),
    ]
    conn = warehouse(events)
    spec = spec_of("A", "B", "C")

    dropped = run_funnel(conn, spec, as_of=AS_OF, persons=PersonSelection(2, "dropped")).persons
    reached = run_funnel(conn, spec, as_of=AS_OF, persons=PersonSelection(1, "reached")).persons

    assert dropped is not None
    assert reached is not None
    assert list(dropped["person_id"]) == ["ann", "cid"]
    assert list(dropped["reached_step"]) == [2, 2]
    assert list(reached["person_id"]) == ["ann", "bob", "cid"]


def test_persons_step_out_of_range() -> None:
    conn = warehouse([Event(1, "ann", "A", 0)])

    with pytest.raises(InvalidInput) as raised:
        run_funnel(conn, spec_of("A", "B"), as_of=AS_OF, persons=PersonSelection(2, "dropped"))

    assert "out of range" in raised.value.message


def test_no_data_code() -> None:
    conn = warehouse([Event(1, "ann", "X", 0)])

    result = run_funnel(conn, spec_of("A", "B"), as_of=AS_OF)

    assert result.codes == ["NO_DATA"]
    assert list(result.steps["units"]) == [0, 0]
    assert result.steps["conversion"].isna().all()


def test_result_to_dict_is_json_ready() -> None:
    conn = warehouse([Event(1, "ann", "A", 0), Event(2, "ann", "B", HOUR)])

    data = run_funnel(conn, spec_of("A", "B"), as_of=AS_OF).to_dict()

    assert data["steps"][1]["units"] == 1
    assert data["steps"][0]["from_previous"] is None
    assert data["spec"]["order"] == "ordered"
    assert data["unit"] == "person"


# ---- spec validation --------------------------------------------------------------------------

INVALID_SPECS = {
    "one-step": ({"steps": [{"event": "A"}]}, "at least 2"),
    "bad-window": ({"steps": [{"event": "A"}, {"event": "B"}], "window": "7 days"}, "duration"),
    "exclusion-span-reversed": (
        {
            "steps": [{"event": "A"}, {"event": "B"}],
            "exclusions": [{"event": "X", "between": [2, 1]}],
        },
        "i < j",
    ),
    "any-order-overlapping-steps": (
        {"order": "any", "steps": [{"event": "A"}, {"event": "A", "where": {"x": 1}}]},
        "can match the same event",
    ),
    "range-reversed": (
        {"steps": [{"event": "A"}, {"event": "B"}], "start": "2024-02-01", "end": "2024-01-01"},
        "before end",
    ),
    "attribution-on-trait": (
        {
            "steps": [{"event": "A"}, {"event": "B"}],
            "breakdown": {"by": "trait", "key": "plan", "attribution": "last_touch"},
        },
        "does not apply",
    ),
    "unknown-campaign-field": (
        {"steps": [{"event": "A"}, {"event": "B"}], "breakdown": {"by": "campaign", "key": "utm"}},
        "campaign field",
    ),
}


@pytest.mark.parametrize(("data", "message"), INVALID_SPECS.values(), ids=INVALID_SPECS.keys())
def test_invalid_spec(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        FunnelSpec.model_validate(data)

    assert message in str(raised.value)


def test_any_order_distinct_values_allowed() -> None:
    spec = spec_of(
        "A",
        {"event": "Page Viewed", "where": {"name": "Pricing"}},
        {"event": "Page Viewed", "where": {"name": {"in": ["Docs", "Blog"]}}},
        order="any",
    )

    assert spec.order == "any"


def test_saved_spec_states_attribution() -> None:
    spec = spec_of("A", "B", breakdown={"by": "campaign", "key": "source"})

    assert spec.model_dump()["breakdown"]["attribution"] == "first_touch"


def test_plan_rejects_unknown_references() -> None:
    text = """\
signup: {event: Signed Up}
milestones:
  - {name: created_project, event: Project Created}
activation: {milestones: [created_project], within_days: 7}
funnels:
  - name: onboarding
    steps: [{event: Signed Up}, {event: Project Created}]
    breakdown: {by: segment, key: pros}
segments:
  - name: builders
    conditions:
      - {milestone: created}
"""

    with pytest.raises(PlanError) as raised:
        parse_plan(text, "plan.yaml")

    problems = [str(problem) for problem in raised.value.problems]
    assert problems == [
        "plan.yaml:8: funnels[0].breakdown.key: 'pros' is not a segment of this plan;"
        " expected one of: builders",
        "plan.yaml:12: segments[0].conditions[0].milestone: 'created' is not a milestone;"
        " expected one of created_project",
    ]


def test_plan_loads_funnels_and_segments() -> None:
    text = """\
signup: {event: Signed Up}
milestones:
  - {name: created_project, event: Project Created}
activation: {milestones: [created_project], within_days: 7}
funnels:
  - name: onboarding
    steps: [{event: Signed Up}, {event: Project Created}]
    breakdown: {by: segment, key: builders}
segments:
  - name: builders
    conditions:
      - {milestone: created_project}
"""

    plan = parse_plan(text, "plan.yaml")

    assert [funnel.name for funnel in plan.funnels] == ["onboarding"]
    assert [segment.name for segment in plan.segments] == ["builders"]


@pytest.mark.parametrize(
    ("step", "title"),
    [
        pytest.param({"event": "Signed Up"}, "Signed Up", id="plain"),
        pytest.param(
            {"event": "Badge Awarded", "where": {"name": "Student"}},
            "Badge Awarded (name=Student)",
            id="equality",
        ),
        pytest.param(
            {"event": "Paid", "where": {"plan": ["pro", "team"], "amount": {"gte": 10}}},
            "Paid (plan in ['pro', 'team'], amount gte 10)",
            id="list-and-operator",
        ),
        pytest.param(
            {"event": "Paid", "where": {"plan": "pro"}, "label": "Upgraded"},
            "Upgraded",
            id="label-wins",
        ),
    ],
)
def test_step_title_names_filters(step: dict[str, Any], title: str) -> None:
    spec = FunnelSpec.model_validate({"steps": [{"event": "Signed Up"}, step]})
    assert spec.steps[1].title() == title


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("NO", "NO", id="country-code"),
        pytest.param("no", "no", id="answer"),
        pytest.param("on", "on", id="on"),
        pytest.param("true", True, id="true"),
        pytest.param("3", 3, id="number"),
        pytest.param("[pro, team]", ["pro", "team"], id="list"),
        pytest.param("Pricing", "Pricing", id="text"),
    ],
)
def test_cli_where_value(text: str, value: Any) -> None:
    assert _where(f"2:key={text}", 2) == (2, "key", value)


def test_persons_json_times_are_utc_iso() -> None:
    conn = warehouse([Event(1, "ann", "A", HOUR), Event(2, "ann", "B", 2 * HOUR)])
    result = run_funnel(conn, spec_of("A", "B"), as_of=AS_OF, persons=PersonSelection(1, "reached"))
    [person] = result.to_dict()["persons"]
    assert person["entered_at"] == "1970-01-01T01:00:00.000Z"
    assert person["last_step_at"] == "1970-01-01T02:00:00.000Z"
