"""Generate the DuckDB SQL that matches each funnel attempt step by step.

The query returns one row per counting unit (a person, or a person plus held-constant values)
with the event key and time of every step it reached. Events are ordered by ``(ts, seq)``: the
event time, then the log sequence number for equal times. Each event gets one key,
``(epoch_us(ts) + 2^62) * 2^63 + seq`` as a HUGEINT, that sorts in that order, so "the next
matching event after step k" is a plain ``min(key)`` with ``key > key_k``. Because keys are
unique, one event can reach at most one step of an attempt. The event time comes back as
``key >> 63`` minus the offset: a shift, because HUGEINT division is far slower.

Ordered mode matches greedily: step k is the earliest step-k event after step k-1's event and
within the window. The earliest choice never loses a later step (any event that could follow a
later step-k event also follows the earliest one, and the window is fixed by the entry), so
greedy matching finds the deepest step any choice of events could reach.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from headstart.analytics.sql_filters import field_sql, json_path, matcher_sql, sql_string
from headstart.plan.analytics import FunnelSpec

KEY_SCALE = 2**63
# Added to epoch microseconds so that keys of instants before 1970 stay positive.
KEY_OFFSET = 2**62

CAMPAIGN_PARAMETERS = {
    "source": "utm_source",
    "medium": "utm_medium",
    "name": "utm_campaign",
    "term": "utm_term",
    "content": "utm_content",
}
EXPERIMENT_EVENT = "Experiment Viewed"
NO_VALUE = "(none)"


def event_key(ts: str = "ts", seq: str = "seq") -> str:
    """Return the SQL for an event's ``(ts, seq)`` order key."""
    return f"((epoch_us({ts})::HUGEINT + {KEY_OFFSET}) * {KEY_SCALE} + {seq})"


def key_time(key: str) -> str:
    """Return the SQL TIMESTAMP of the event that an order key belongs to."""
    return f"make_timestamp(((({key}) >> 63) - {KEY_OFFSET})::BIGINT)"


@dataclass(frozen=True)
class SegmentSql:
    """A segment's name and the SQL that selects its members' person ids."""

    name: str
    members: str


class FunnelSql:
    """Build the per-unit funnel query for one spec."""

    def __init__(self, spec: FunnelSpec, segment: SegmentSql | None = None):
        self.spec = spec
        self.segment = segment
        self.steps = len(spec.steps)
        self.held = [f"h{index}" for index in range(1, len(spec.hold_constant) + 1)]
        breakdown = spec.breakdown
        self.per_step = breakdown is not None and breakdown.attributed_by == "per_step"
        self.carry_values = breakdown is not None and breakdown.by == "property"

    # ---- public -------------------------------------------------------------------------

    def units_sql(self) -> str:
        """Return the query: one row per unit, excluded units included and flagged."""
        ctes = [f"ev AS ({self._candidates()})", f"a1 AS ({self._entries()})"]
        if self.spec.order == "strict":
            ctes.append(f"nxt AS ({self._next_events()})")
        for step in range(2, self.steps + 1):
            ctes.append(f"r{step} AS ({self._step(step)})")
        ctes.append(f"att AS ({self._attempts()})")
        ctes.append(f"flagged AS ({self._flag_exclusions()})")
        ctes.append(f"best AS ({self._best()})")
        return "WITH " + ",\n".join(ctes) + "\n" + self._final()

    @property
    def summarizable(self) -> bool:
        """Whether ``summary_sql`` applies: steps chained one after another, one attempt per
        unit, nothing that needs a unit's whole row (exclusions, breakdowns)."""
        spec = self.spec
        return (
            spec.order != "any"
            and spec.entry == "first"
            and not spec.exclusions
            and spec.breakdown is None
        )

    def summary_sql(self, as_of: int, bucket_edges_us: Sequence[int]) -> str:
        """Return per-step units, median gaps, open windows and gap buckets in one query.

        For ``summarizable`` specs only. Each step's CTE contains exactly the units that reached
        it, so the aggregates come straight from the chain, without a per-unit table: this is
        the path a funnel without persons, exclusions or breakdown takes. Units whose window is
        still open at ``as_of`` are counted per step as ``open``; those that stopped before a
        step are the difference between two steps' ``open``.
        """
        ctes = [f"ev AS ({self._candidates()})", f"a1 AS ({self._entries()})"]
        if self.spec.order == "strict":
            ctes.append(f"nxt AS ({self._next_events()})")
        ctes += [f"r{step} AS ({self._step(step)})" for step in range(2, self.steps + 1)]
        # Gaps in microseconds, computed once per row: HUGEINT shifts are not free.
        rows = ["SELECT 1 AS step, NULL::BIGINT AS gap, 0::BIGINT AS since_entry, deadline FROM a1"]
        rows += [
            f"SELECT {step}, ((k{step} >> 63) - (prev >> 63))::BIGINT,"
            f" ((k{step} >> 63) - (k1 >> 63))::BIGINT, deadline FROM r{step}"
            for step in range(2, self.steps + 1)
        ]
        gap = "gap"
        buckets = [
            f"count(*) FILTER (WHERE {gap} >= {lower} AND {gap} < {upper}) AS bucket{index}"
            for index, (lower, upper) in enumerate(itertools.pairwise(bucket_edges_us))
        ]
        buckets.append(
            f"count(*) FILTER (WHERE {gap} >= {bucket_edges_us[-1]}) AS bucket{len(buckets)}"
        )
        return (
            "WITH " + ",\n".join(ctes) + f"\nSELECT step, count(*) AS units,"
            f" median({gap}) AS median_previous_us,"
            f" median(since_entry) AS median_entry_us,"
            f" count(*) FILTER (WHERE deadline > make_timestamp({as_of})) AS open,"
            f" {', '.join(buckets)} FROM ({' UNION ALL '.join(rows)}) GROUP BY step ORDER BY step"
        )

    def unit_columns(self) -> list[str]:
        return ["person_id", *self.held]

    # ---- events -------------------------------------------------------------------------

    def _candidates(self) -> str:
        """Select every event that can match a step or an exclusion, once.

        Each row has its order key, held-constant values, the breakdown property (``v``) and
        one flag per step (``s1``..) and per exclusion (``x1``..). Computing the key once for
        all steps, instead of once per step, roughly halves a funnel's time on a large table.
        """
        spec = self.spec
        columns = ["person_id", f"{event_key()} AS k", "ts"]
        columns += [
            f"({field_sql(key)})::VARCHAR AS {name}"
            for key, name in zip(spec.hold_constant, self.held, strict=True)
        ]
        if self.carry_values and spec.breakdown is not None:
            columns.append(f"({field_sql(spec.breakdown.key)}) ->> '$' AS v")
        columns += [
            f"{matcher_sql(step)} AS s{index}" for index, step in enumerate(spec.steps, start=1)
        ]
        columns += [
            f"{matcher_sql(exclusion)} AS x{index}"
            for index, exclusion in enumerate(spec.exclusions, start=1)
        ]
        names = sorted({matcher.event for matcher in [*spec.steps, *spec.exclusions]})
        filters = [f"event IN ({', '.join(sql_string(name) for name in names)})"]
        filters.append("person_id IS NOT NULL")
        # A held property that is missing or null cannot be held constant: leave the event out.
        filters += [
            f"coalesce(json_type({field_sql(key)}) <> 'NULL', FALSE)" for key in spec.hold_constant
        ]
        return f"SELECT {', '.join(columns)} FROM events WHERE {' AND '.join(filters)}"

    def _source(self, flag: str, *, entry: bool = False) -> str:
        """Select the candidate events with ``flag`` set (and in the date range for entries)."""
        filters = [flag]
        if entry and self.spec.start_us is not None:
            filters.append(f"ts >= make_timestamp({self.spec.start_us})")
        if entry and self.spec.end_us is not None:
            filters.append(f"ts < make_timestamp({self.spec.end_us})")
        return f"SELECT * FROM ev WHERE {' AND '.join(filters)}"

    def _same_unit(self, left: str, right: str) -> str:
        conditions = [f"{right}.person_id = {left}.person_id"]
        conditions += [f"{right}.{name} = {left}.{name}" for name in self.held]
        return " AND ".join(conditions)

    # ---- entries and steps --------------------------------------------------------------

    def _entries(self) -> str:
        source = self._source("s1", entry=True)
        window = self.spec.window_us
        unit = ", ".join(self.unit_columns())
        if self.spec.entry == "first":
            # arg_min skips NULL values; arg_min_null keeps the entry event's missing value.
            value = ", arg_min_null(v, k) AS v1" if self.carry_values else ""
            chosen = f"SELECT {unit}, min(k) AS k1{value} FROM ({source}) GROUP BY {unit}"
        else:
            value = ", v AS v1" if self.carry_values else ""
            chosen = f"SELECT {unit}, k AS k1{value} FROM ({source})"
        first_time = f"((k1 >> 63) - {KEY_OFFSET})::BIGINT"
        return (
            f"SELECT *, make_timestamp({first_time}) AS t1,"
            f" make_timestamp({first_time} + {window}) AS deadline FROM ({chosen})"
        )

    def _step(self, step: int) -> str:
        source = self._source(f"s{step}")
        if self.spec.order == "strict":
            return self._strict_step(step, source)
        if self.spec.order == "any":
            previous, after = "a1", "a.k1"
        else:
            previous, after = ("a1" if step == 2 else f"r{step - 1}"), f"a.k{step - 1}"
        # With one attempt per unit the unit's columns identify it; grouping by them is
        # cheaper than by the HUGEINT entry key.
        if self.spec.entry == "first":
            group = [f"a.{name}" for name in self.unit_columns()]
            carried = ["any_value(a.k1) AS k1"]
        else:
            group = ["a.k1"]
            carried = [f"any_value(a.{name}) AS {name}" for name in self.unit_columns()]
        carried.append("any_value(a.deadline) AS deadline")
        value = f", arg_min_null(e.v, e.k) AS v{step}" if self.carry_values else ""
        return (
            f"SELECT {', '.join(group)}, {', '.join(carried)}, any_value({after}) AS prev,"
            f" min(e.k) AS k{step}{value}"
            f" FROM {previous} a JOIN ({source}) e ON {self._same_unit('a', 'e')}"
            f" AND e.k > {after} AND e.ts <= a.deadline GROUP BY {', '.join(group)}"
        )

    def _strict_step(self, step: int, source: str) -> str:
        previous = "a1" if step == 2 else f"r{step - 1}"
        carried = ", ".join(f"a.{name}" for name in self._carried())
        value = f", e.v AS v{step}" if self.carry_values else ""
        return (
            f"SELECT a.k1, {carried}, a.k{step - 1} AS prev, e.k AS k{step}{value}"
            f" FROM {previous} a JOIN nxt n ON n.k = a.k{step - 1}"
            f" JOIN ({source}) e ON e.k = n.next_k AND {self._same_unit('a', 'e')}"
            f" AND e.ts <= a.deadline"
        )

    def _carried(self) -> list[str]:
        return [*self.unit_columns(), "deadline"]

    def _next_events(self) -> str:
        """Pair each tracked event of an entered person with the person's next tracked event."""
        return (
            f"SELECT k, lead(k) OVER (PARTITION BY person_id ORDER BY k) AS next_k FROM"
            f" (SELECT person_id, {event_key()} AS k FROM events WHERE event IS NOT NULL"
            f" AND person_id IN (SELECT person_id FROM a1))"
        )

    # ---- attempts, exclusions and the best attempt --------------------------------------

    def _reached_keys(self) -> list[str]:
        """Return SQL for the key at which steps 1..j were all reached, for each j."""
        keys = ["a1.k1"]
        if self.spec.order != "any":
            keys += [f"r{step}.k{step}" for step in range(2, self.steps + 1)]
            return keys
        for step in range(2, self.steps + 1):
            found = [f"r{other}.k{other}" for other in range(2, step + 1)]
            all_found = " AND ".join(f"{key} IS NOT NULL" for key in found)
            keys.append(f"CASE WHEN {all_found} THEN greatest({', '.join(found)}) END")
        return keys

    def _attempts(self) -> str:
        keys = self._reached_keys()
        columns = ["a1.*"]
        columns += [f"{key} AS rk{index}" for index, key in enumerate(keys, start=1)]
        if self.carry_values:
            columns += [f"r{step}.v{step}" for step in range(2, self.steps + 1)]
            if self.spec.order == "any":
                columns += [f"r{step}.k{step} AS f{step}" for step in range(2, self.steps + 1)]
        depth = " ".join(
            f"WHEN rk{step} IS NULL THEN {step - 1}" for step in range(2, self.steps + 1)
        )
        joins = " ".join(f"LEFT JOIN r{step} USING (k1)" for step in range(2, self.steps + 1))
        return (
            f"SELECT *, CASE {depth} ELSE {self.steps} END AS depth FROM"
            f" (SELECT {', '.join(columns)} FROM a1 {joins})"
        )

    def _flag_exclusions(self) -> str:
        if not self.spec.exclusions:
            return "SELECT *, FALSE AS excluded FROM att"
        hits = []
        for index, exclusion in enumerate(self.spec.exclusions, start=1):
            first, last = self.spec.exclusion_span(exclusion)
            source = self._source(f"x{index}")
            hits.append(
                f"SELECT a.k1 FROM att a JOIN ({source}) e ON {self._same_unit('a', 'e')}"
                f" AND a.rk{first} IS NOT NULL AND e.k > a.rk{first}"
                f" AND ((a.rk{last} IS NULL AND e.ts <= a.deadline) OR e.k < a.rk{last})"
            )
        return f"SELECT *, k1 IN (SELECT k1 FROM ({' UNION '.join(hits)})) AS excluded FROM att"

    def _best(self) -> str:
        if self.spec.entry == "first":
            return "SELECT * FROM flagged"
        unit = ", ".join(self.unit_columns())
        return (
            f"SELECT * FROM flagged QUALIFY row_number() OVER"
            f" (PARTITION BY {unit} ORDER BY excluded, depth DESC, k1) = 1"
        )

    # ---- per-unit output with breakdown values ------------------------------------------

    def _final(self) -> str:
        columns = [f"best.{name}" for name in self.unit_columns()]
        columns += ["best.depth", "best.excluded", "best.deadline"]
        columns += [f"best.rk{step} AS k{step}" for step in range(1, self.steps + 1)]
        columns += [f"{key_time(f'best.rk{step}')} AS t{step}" for step in range(1, self.steps + 1)]
        joins, values = self._breakdown()
        columns += values
        return f"SELECT {', '.join(columns)} FROM best {joins}"

    def _breakdown(self) -> tuple[str, list[str]]:
        """Return (joins, value columns) for the breakdown: ``b`` or ``b1..bn`` (per step)."""
        breakdown = self.spec.breakdown
        if breakdown is None:
            return "", []
        none = sql_string(NO_VALUE)
        if breakdown.by == "trait":
            path = sql_string(json_path(breakdown.key.split(".")))
            return (
                "LEFT JOIN persons p ON p.person_id = best.person_id",
                [f"coalesce(p.traits ->> {path}, {none}) AS b"],
            )
        if breakdown.by == "segment":
            assert self.segment is not None
            name = sql_string(self.segment.name)
            member = f"best.person_id IN (SELECT person_id FROM ({self.segment.members}))"
            return "", [f"CASE WHEN {member} THEN {name} ELSE 'not ' || {name} END AS b"]
        if breakdown.by == "property":
            return "", self._property_values()
        return self._touch_values()

    def _property_values(self) -> list[str]:
        none = sql_string(NO_VALUE)
        values = [self._step_value(step) for step in range(1, self.steps + 1)]
        attribution = self.spec.breakdown.attributed_by if self.spec.breakdown else "first_touch"
        if attribution == "per_step":
            return [
                f"CASE WHEN rk{step} IS NULL THEN NULL ELSE coalesce({value}, {none}) END AS b{step}"
                for step, value in enumerate(values, start=1)
            ]
        if attribution == "first_touch":
            return [f"coalesce(v1, {none}) AS b"]
        deepest = " ".join(
            f"WHEN {step} THEN {value}" for step, value in enumerate(values, start=1)
        )
        return [f"coalesce(CASE depth {deepest} END, {none}) AS b"]

    def _step_value(self, step: int) -> str:
        """Return the property value on the event that completed step ``step``."""
        if step == 1:
            return "v1"
        if self.spec.order != "any":
            return f"v{step}"
        cases = " ".join(f"WHEN f{other} THEN v{other}" for other in range(2, step + 1))
        return f"(CASE rk{step} {cases} END)"

    def _touch_values(self) -> tuple[str, list[str]]:
        """Return the joins and columns that attribute campaign or experiment touches."""
        breakdown = self.spec.breakdown
        assert breakdown is not None
        none = sql_string(NO_VALUE)
        touches = self._touches()
        if breakdown.attributed_by == "first_touch":
            first = f"SELECT person_id, arg_min(v, k) AS touch FROM ({touches}) GROUP BY person_id"
            return (
                f"LEFT JOIN ({first}) ft ON ft.person_id = best.person_id",
                [f"coalesce(ft.touch, {none}) AS b"],
            )

        # Touches up to the event that reached the unit's deepest step.
        deepest = " ".join(f"WHEN {step} THEN u.rk{step}" for step in range(1, self.steps + 1))
        joined = (
            f"FROM best u JOIN ({touches}) t"
            f" ON t.person_id = u.person_id AND t.k <= CASE u.depth {deepest} END GROUP BY u.k1"
        )
        if breakdown.attributed_by == "last_touch":
            last = f"SELECT u.k1, arg_max(t.v, t.k) AS touch {joined}"
            return (
                f"LEFT JOIN ({last}) lt ON lt.k1 = best.k1",
                [f"coalesce(lt.touch, {none}) AS b"],
            )

        per_step = ", ".join(
            f"arg_max(t.v, t.k) FILTER (WHERE t.k <= u.rk{step}) AS touch{step}"
            for step in range(1, self.steps + 1)
        )
        values = [
            f"CASE WHEN rk{step} IS NULL THEN NULL ELSE coalesce(st.touch{step}, {none}) END"
            f" AS b{step}"
            for step in range(1, self.steps + 1)
        ]
        return f"LEFT JOIN (SELECT u.k1, {per_step} {joined}) st ON st.k1 = best.k1", values

    def _touches(self) -> str:
        """Select (person_id, k, v) for every campaign or experiment touch of entered persons."""
        breakdown = self.spec.breakdown
        assert breakdown is not None
        if breakdown.by == "campaign":
            parameter = CAMPAIGN_PARAMETERS[breakdown.key]
            field = sql_string(json_path(["campaign", breakdown.key]))
            property_field = sql_string(json_path([parameter]))
            pattern = sql_string(f"[?&]{parameter}=([^&#]*)")
            in_url = [
                f"nullif(url_decode(regexp_extract({url}, {pattern}, 1)), '')"
                for url in ("context ->> '$.page.url'", "properties ->> '$.url'")
            ]
            value = (
                f"coalesce(nullif(context ->> {field}, ''), nullif(properties ->> {property_field},"
                f" ''), {', '.join(in_url)})"
            )
            touch_filter = "TRUE"
        else:
            key = sql_string(breakdown.key)
            value = "coalesce(properties ->> '$.variation_name', properties ->> '$.variation_id')"
            touch_filter = (
                f"event = {sql_string(EXPERIMENT_EVENT)} AND (properties ->> '$.experiment_id'"
                f" = {key} OR properties ->> '$.experiment_name' = {key})"
            )
        return (
            f"SELECT person_id, k, v FROM (SELECT person_id, {event_key()} AS k, {value} AS v"
            f" FROM events WHERE {touch_filter} AND person_id IN (SELECT person_id FROM best))"
            f" WHERE v IS NOT NULL"
        )


def breakdown_columns(sql: FunnelSql) -> Sequence[str]:
    """Return the breakdown value columns the units query produces."""
    if sql.spec.breakdown is None:
        return []
    if sql.per_step:
        return [f"b{step}" for step in range(1, sql.steps + 1)]
    return ["b"]
