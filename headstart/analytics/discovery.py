"""Milestone discovery: which early behaviours go with retention.

A candidate behaviour is "did X at least k times within the first D days after sign-up", for
every event name X seen in those days (or every X plus property values, with ``split``) and
every k in ``counts``. Each is scored against a retention outcome on the same persons.

Definitions (docs/analytics.md explains them with examples):

- Population: persons with a sign-up whose whole observation horizon ended by ``as_of``
  (``signup + horizon <= as_of``), optionally only sign-ups in [``signup_from``,
  ``signup_to``). The horizon is the end of the outcome window (see below), so every person
  had the same chance to show the behaviour and the outcome.
- Behaviour window: [signup, signup + D days). Events before sign-up do not count.
- Outcomes ("retained at day R"):
  - ``active_window``: at least one return event in the W-day window centred on day R,
    [signup + R days - W/2 days, signup + R days + W/2 days). The window must start at or
    after day D, so the behaviour window and the outcome never overlap. Horizon: R + W/2.
  - ``active_after``: at least one return event at or after signup + R days (up to
    ``as_of``). Horizon: R.
  - ``trait_after``: the timestamp trait ``outcome_trait`` (such as a last-access time) is at
    or after signup + R days. Persons without a readable value are left out and counted in a
    ``MISSING_TRAIT`` notice. Horizon: R.
  - ``not_churned``: no ``churn_event`` before signup + R days. Persons who churned within
    the behaviour window are left out (counted in a ``CHURNED_EARLY`` notice), because the
    question is what predicts churn among those still there on day D. The churn event is never
    a candidate. Horizon: R.
  Return events are the names in ``return_events``, or any named event when empty.
- For each candidate, with a = doers retained, b = doers not retained, c = non-doers
  retained, d = non-doers not retained:
  share = (a + b) / n; retention of doers a / (a + b) (also the precision); retention of
  non-doers c / (c + d); recall a / (a + c); lift = precision / base rate;
  phi = (ad - bc) / sqrt((a + b)(c + d)(a + c)(b + d));
  odds ratio = ((a + 0.5)(d + 0.5)) / ((b + 0.5)(c + 0.5)), the Haldane-Anscombe correction
  applied to every table, with a 95% Wald interval on its log;
  p_value from Pearson's chi-square test with one degree of freedom (n * phi^2), not
  corrected for the number of candidates tested.
- Rare behaviours: a candidate is kept only when both its doers and its non-doers number at
  least ``threshold = max(min_doers, ceil(min_share * n))``; the result states the threshold
  and how many candidates it dropped.
- Ranking: the top ``top`` positive candidates by phi (descending) and the top negative ones
  (ascending); ties go to more doers, then to the name.

These are correlations in observational data, not causes: each is a hypothesis to confirm
with an experiment, and the result says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import duckdb
import orjson
import pandas as pd
import yaml
from scipy import stats

from headstart.analytics.lifecycle_base import (
    CHURNED_EARLY,
    FEW_CANDIDATES,
    LOW_SAMPLE,
    MISSING_TRAIT,
    NO_DATA,
    NO_VARIATION,
    Notice,
    ParamReader,
    Params,
    ParamValue,
    Source,
    cursor_for,
    json_path,
    notices_dict,
    records,
    resolve_as_of,
    share,
)
from headstart.errors import InvalidInput
from headstart.timeutil import MICROS_PER_DAY, to_iso

OutcomeKind = Literal["active_window", "active_after", "trait_after", "not_churned"]
OUTCOMES = ("active_window", "active_after", "trait_after", "not_churned")

CAVEAT = (
    "These behaviours are correlated with retention in past data; they are hypotheses, not "
    "causes. Confirm each with an experiment (for example, nudge half of new sign-ups toward "
    "it) before building onboarding around it."
)
# Populations smaller than this get a LOW_SAMPLE notice. Below 96 persons even a phi of 0.2
# is not significant at the 5% level, because n * phi^2 stays under 3.84.
LOW_SAMPLE_PERSONS = 100
MAX_DAYS = 3650
MAX_SUGGESTED = 5
MIN_SUGGESTED = 3
_Z_95 = 1.959963984540054
_NAME_PATTERN = re.compile(r"[^A-Za-z0-9]+")

CANDIDATE_COLUMNS = [
    "behaviour",
    "event",
    "detail",
    "min_count",
    "doers",
    "share",
    "doers_retained",
    "retention_doers",
    "retention_non_doers",
    "phi",
    "odds_ratio",
    "odds_ratio_low",
    "odds_ratio_high",
    "precision",
    "recall",
    "lift",
    "p_value",
    "where",
]


@dataclass(frozen=True)
class DiscoveryQuery:
    """Parameters of a discovery run; the module docstring defines each field."""

    first_days: int = 7
    counts: tuple[int, ...] = (1, 2, 3, 5)
    outcome: OutcomeKind = "active_window"
    retention_day: int = 30
    window_days: int = 14
    return_events: tuple[str, ...] = ()
    outcome_trait: str | None = None
    churn_event: str | None = None
    split: tuple[tuple[str, tuple[str, ...]], ...] = ()
    exclude_events: tuple[str, ...] = ()
    min_doers: int = 30
    min_share: float = 0.01
    top: int = 10
    signup_from: int | None = None
    signup_to: int | None = None
    as_of: int | None = None

    @classmethod
    def from_params(cls, values: Mapping[str, ParamValue]) -> DiscoveryQuery:
        """Build a query from text parameters (REST query string, CLI options), validated.

        ``split`` values read ``EVENT=PROPERTY[,PROPERTY...]``, e.g. ``Badge Awarded=name``.
        """
        read = ParamReader(values)
        return cls(
            first_days=read.integer("first_days", cls.first_days),
            counts=read.integer_list("counts", cls.counts),
            outcome=read.text("outcome") or "active_window",  # type: ignore[arg-type]
            retention_day=read.integer("retention_day", cls.retention_day),
            window_days=read.integer("window_days", cls.window_days),
            return_events=read.texts("return_event"),
            outcome_trait=read.text("outcome_trait"),
            churn_event=read.text("churn_event"),
            split=tuple(_parse_split(text) for text in read.texts("split")),
            exclude_events=read.texts("exclude_event"),
            min_doers=read.integer("min_doers", cls.min_doers),
            min_share=read.number("min_share", cls.min_share) or 0.0,
            top=read.integer("top", cls.top),
            signup_from=read.instant("signup_from"),
            signup_to=read.instant("signup_to"),
            as_of=read.instant("as_of"),
        ).validate()

    def validate(self) -> DiscoveryQuery:
        if self.outcome not in OUTCOMES:
            raise InvalidInput(
                f"outcome={self.outcome!r} is not valid; use one of {', '.join(OUTCOMES)}"
            )
        _check_days("first_days", self.first_days, 1)
        _check_days("retention_day", self.retention_day, 1)
        if not self.counts or any(not 1 <= k <= 10_000 for k in self.counts):
            raise InvalidInput("counts must list minimum counts from 1 to 10000, e.g. 1,2,3,5")
        if self.outcome == "active_window":
            _check_days("window_days", self.window_days, 1)
            if self.retention_day * 2 - self.window_days < self.first_days * 2:
                raise InvalidInput(
                    f"the outcome window (day {self.retention_day} +/- {self.window_days / 2:g}) "
                    f"starts inside the first {self.first_days} days; raise retention_day or "
                    "narrow window_days so that the behaviour cannot be the outcome"
                )
        if self.retention_day < self.first_days:
            raise InvalidInput(
                f"retention_day={self.retention_day} comes before the end of the behaviour "
                f"window (first_days={self.first_days}); use a later retention_day"
            )
        if self.outcome == "trait_after" and not self.outcome_trait:
            raise InvalidInput("outcome=trait_after needs outcome_trait, e.g. last_access_at")
        if self.outcome == "not_churned" and not self.churn_event:
            raise InvalidInput("outcome=not_churned needs churn_event, e.g. Unregistered")
        if self.min_doers < 1 or not 0 <= self.min_share < 0.5:
            raise InvalidInput(
                "min_doers must be at least 1 and min_share in [0, 0.5), e.g. 30 and 0.01"
            )
        if not 1 <= self.top <= 100:
            raise InvalidInput(f"top={self.top} is out of range; use 1 to 100")
        return self

    def horizon_us(self) -> int:
        """Return how long after sign-up a person must be observed, in microseconds."""
        if self.outcome == "active_window":
            return self.retention_day * MICROS_PER_DAY + self.window_days * MICROS_PER_DAY // 2
        return self.retention_day * MICROS_PER_DAY

    def outcome_text(self) -> str:
        activity = ", ".join(self.return_events) or "any event"
        day = self.retention_day
        if self.outcome == "active_window":
            half = self.window_days / 2
            return f"did {activity} between day {day - half:g} and day {day + half:g}"
        if self.outcome == "active_after":
            return f"did {activity} on day {day} or later"
        if self.outcome == "trait_after":
            return f"trait {self.outcome_trait} is on day {day} or later"
        return f"no {self.churn_event} before day {day}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_days": self.first_days,
            "counts": list(self.counts),
            "outcome": self.outcome,
            "outcome_rule": self.outcome_text(),
            "retention_day": self.retention_day,
            "window_days": self.window_days if self.outcome == "active_window" else None,
            "return_events": list(self.return_events) or "any event",
            "outcome_trait": self.outcome_trait,
            "churn_event": self.churn_event,
            "split": {event: list(props) for event, props in self.split},
            "exclude_events": list(self.exclude_events),
            "min_doers": self.min_doers,
            "min_share": self.min_share,
            "signup_from": to_iso(self.signup_from),
            "signup_to": to_iso(self.signup_to),
            "odds_ratio_smoothing": "Haldane-Anscombe: +0.5 in every cell, always",
        }


@dataclass
class DiscoveryResult:
    """Scored candidate behaviours, the top lists and a suggested plan snippet."""

    query: DiscoveryQuery
    as_of: int | None
    population: int
    retained: int
    threshold: int
    dropped: int
    candidates: pd.DataFrame
    top_positive: pd.DataFrame
    top_negative: pd.DataFrame
    plan_snippet: str | None
    notices: list[Notice] = field(default_factory=list)
    caveat: str = CAVEAT

    def to_dict(self) -> dict[str, Any]:
        shown = [column for column in CANDIDATE_COLUMNS if column != "where"]
        return {
            "analysis": "discovery",
            "as_of": to_iso(self.as_of),
            "definition": self.query.to_dict(),
            "population": self.population,
            "retained": self.retained,
            "base_rate": share(self.retained, self.population),
            "threshold": self.threshold,
            "threshold_rule": (
                f"kept candidates done, and not done, by at least {self.threshold} persons "
                f"(max of min_doers and min_share * population)"
            ),
            "candidates_scored": len(self.candidates),
            "candidates_dropped": self.dropped,
            "top_positive": records(self.top_positive[shown]),
            "top_negative": records(self.top_negative[shown]),
            "plan_snippet": self.plan_snippet,
            "caveat": self.caveat,
            **notices_dict(self.notices),
        }


def discover(source: Source, query: DiscoveryQuery) -> DiscoveryResult:
    """Score every candidate behaviour of ``query`` against its outcome."""
    with cursor_for(source) as conn:
        return _discover(conn, query)


def _discover(conn: duckdb.DuckDBPyConnection, query: DiscoveryQuery) -> DiscoveryResult:
    query = query.validate()
    as_of = resolve_as_of(conn, query.as_of)
    if as_of is None:
        return _empty(query, None, [Notice(NO_DATA, "the warehouse holds no events yet")])

    params = Params()
    base = _population_sql(query, params, as_of)
    totals, counts = _counts(conn, base, params, query)
    population, retained, missing, churned_early = totals
    notices: list[Notice] = []
    if churned_early:
        notices.append(
            Notice(
                CHURNED_EARLY,
                f"{churned_early} persons did {query.churn_event} within the first "
                f"{query.first_days} days and are left out: the analysis predicts from day "
                f"{query.first_days} on",
            )
        )
    if missing:
        notices.append(
            Notice(
                MISSING_TRAIT,
                f"{missing} persons have no readable timestamp in trait "
                f"{query.outcome_trait!r} and are left out",
            )
        )
    if population == 0:
        reason = (
            "no sign-ups have been observed for the whole horizon "
            f"({query.horizon_us() / MICROS_PER_DAY:g} days) by as_of"
        )
        return _empty(query, as_of, [*notices, Notice(NO_DATA, reason)])

    threshold = max(query.min_doers, math.ceil(query.min_share * population))
    scored, dropped = _score(counts, query, population, retained, threshold)
    notices.extend(_notices(query, population, retained, scored))
    positive, negative = _rank(scored, query.top)
    snippet, picked = _plan_snippet(positive, query)
    if scored.size and picked < MIN_SUGGESTED:
        notices.append(
            Notice(
                FEW_CANDIDATES,
                f"only {picked} positive behaviours qualify for the plan snippet "
                f"(it aims for {MIN_SUGGESTED} to {MAX_SUGGESTED})",
            )
        )
    return DiscoveryResult(
        query,
        as_of,
        population,
        retained,
        threshold,
        dropped,
        scored,
        positive,
        negative,
        snippet,
        notices,
    )


def _empty(query: DiscoveryQuery, as_of: int | None, notices: list[Notice]) -> DiscoveryResult:
    frame = pd.DataFrame({name: [] for name in CANDIDATE_COLUMNS})
    return DiscoveryResult(query, as_of, 0, 0, 0, 0, frame, frame, frame, None, notices)


def _population_sql(query: DiscoveryQuery, params: Params, as_of: int) -> str:
    """Return a WITH clause defining ``pop`` (person_id, s) and ``outcome`` (person_id, retained)."""
    as_of_param = params.add(as_of)
    horizon = query.horizon_us()
    conditions = f"signup_at IS NOT NULL AND epoch_us(signup_at) + {horizon} <= {as_of_param}"
    if query.signup_from is not None:
        conditions += f" AND signup_at >= make_timestamp({params.add(query.signup_from)})"
    if query.signup_to is not None:
        conditions += f" AND signup_at < make_timestamp({params.add(query.signup_to)})"
    pop = "SELECT * FROM signed"
    if query.outcome == "not_churned":
        churn = params.add(query.churn_event)
        pop = f"""
            SELECT * FROM signed p WHERE NOT EXISTS (
                SELECT 1 FROM events r WHERE r.person_id = p.person_id AND r.event = {churn}
                AND r.ts < make_timestamp(p.s + {query.first_days * MICROS_PER_DAY})
            )
        """
    return f"""
        WITH signed AS MATERIALIZED (
            SELECT person_id, epoch_us(signup_at) AS s, traits FROM persons WHERE {conditions}
        ),
        pop AS MATERIALIZED ({pop}),
        outcome AS MATERIALIZED ({_outcome_sql(query, params, as_of_param)})
    """


def _outcome_sql(query: DiscoveryQuery, params: Params, as_of_param: str) -> str:
    """Return SQL of (person_id, retained); retained is NULL when it cannot be known."""
    day = MICROS_PER_DAY
    if query.outcome == "trait_after":
        assert query.outcome_trait is not None
        path = params.add(json_path(query.outcome_trait))
        instant = _instant_sql(f"p.traits ->> {path}")
        return (
            f"SELECT p.person_id, {instant} >= p.s + {query.retention_day * day} AS retained"
            " FROM pop p"
        )
    if query.outcome == "not_churned":
        assert query.churn_event is not None
        event = params.add(query.churn_event)
        return f"""
            SELECT p.person_id, count(r.person_id) = 0 AS retained
            FROM pop p LEFT JOIN events r
              ON r.person_id = p.person_id AND r.event = {event}
             AND r.ts < make_timestamp(p.s + {query.retention_day * day})
            GROUP BY p.person_id
        """
    if query.outcome == "active_window":
        centre = query.retention_day * day
        half = query.window_days * day // 2
        bounds = (
            f"r.ts >= make_timestamp(p.s + {centre - half})"
            f" AND r.ts < make_timestamp(p.s + {centre + half})"
        )
    else:
        bounds = (
            f"r.ts >= make_timestamp(p.s + {query.retention_day * day})"
            f" AND r.ts <= make_timestamp({as_of_param})"
        )
    return f"""
        SELECT p.person_id, count(r.person_id) > 0 AS retained
        FROM pop p LEFT JOIN events r
          ON r.person_id = p.person_id AND {_event_filter("r", query.return_events, params)}
         AND {bounds}
        GROUP BY p.person_id
    """


def _instant_sql(text_sql: str) -> str:
    """Return SQL for the UTC microseconds of an ISO-8601 text; no offset means UTC."""
    # An offset follows a time of day; the end of a date such as 2024-01-31 is not one.
    with_offset = rf"regexp_matches({text_sql}, '\d\d:\d\d.*([zZ]|[+-]\d\d(:?\d\d)?)$')"
    return (
        f"CASE WHEN {with_offset} THEN epoch_us(TRY_CAST({text_sql} AS TIMESTAMPTZ))"
        f" ELSE epoch_us(TRY_CAST({text_sql} AS TIMESTAMP)) END"
    )


def _event_filter(alias: str, names: tuple[str, ...], params: Params) -> str:
    if not names:
        return f"{alias}.event IS NOT NULL"
    placeholders = ", ".join(params.add(name) for name in names)
    return f"{alias}.event IN ({placeholders})"


def _counts(
    conn: duckdb.DuckDBPyConnection, base: str, params: Params, query: DiscoveryQuery
) -> tuple[tuple[int, int, int, int], pd.DataFrame]:
    """Return the totals and the persons per (event, detail, capped count, retained).

    Totals are the population, how many were retained, how many lack the outcome trait and
    how many churned early. One query returns both, so the population and the outcome
    (each a join over the events) are computed once.
    """
    excluded = [*query.exclude_events]
    if query.churn_event is not None and query.outcome == "not_churned":
        excluded.append(query.churn_event)
    exclusion = ""
    if excluded:
        exclusion = "AND e.event NOT IN (" + ", ".join(params.add(n) for n in excluded) + ")"
    cap = max(query.counts)
    sql = f"""{base},
        early AS (
            SELECT e.person_id, e.event, {_detail_sql(query, params)} AS detail, count(*) AS n
            FROM events e JOIN pop p USING (person_id)
            WHERE e.event IS NOT NULL {exclusion}
              AND e.ts >= make_timestamp(p.s)
              AND e.ts < make_timestamp(p.s + {query.first_days * MICROS_PER_DAY})
            GROUP BY e.person_id, e.event, detail
        )
        SELECT 'candidate' AS kind, early.event, early.detail, least(early.n, {cap}) AS n,
               o.retained, count(*) AS persons
        FROM early JOIN outcome o USING (person_id)
        WHERE o.retained IS NOT NULL
        GROUP BY ALL
        UNION ALL
        SELECT 'outcome', NULL, NULL, NULL, retained, count(*) FROM outcome GROUP BY retained
        UNION ALL
        SELECT 'churned_early', NULL, NULL, NULL, NULL,
               (SELECT count(*) FROM signed) - (SELECT count(*) FROM pop)
    """
    frame = conn.execute(sql, params.values).df()
    outcome = frame[frame["kind"] == "outcome"]
    known = outcome[outcome["retained"].notna()]
    retained = int(known.loc[known["retained"].astype(bool), "persons"].sum())
    missing = int(outcome.loc[outcome["retained"].isna(), "persons"].sum())
    churned = int(frame.loc[frame["kind"] == "churned_early", "persons"].sum())
    totals = (int(known["persons"].sum()), retained, missing, churned)
    candidates = frame[frame["kind"] == "candidate"].drop(columns="kind")
    return totals, candidates


def _detail_sql(query: DiscoveryQuery, params: Params) -> str:
    if not query.split:
        return "CAST(NULL AS VARCHAR)"
    branches = []
    for event, properties in query.split:
        values = ", ".join(f"e.properties -> {params.add(json_path(p))}" for p in properties)
        branches.append(
            f"WHEN e.event = {params.add(event)} THEN CAST(json_array({values}) AS VARCHAR)"
        )
    return "CASE " + " ".join(branches) + " END"


def association(a: int, b: int, c: int, d: int) -> dict[str, float | None]:
    """Return the association measures of a 2x2 table (see the module docstring).

    a: doers retained, b: doers not retained, c: non-doers retained, d: non-doers not retained.
    """
    n = a + b + c + d
    doers, non_doers, retained, lost = a + b, c + d, a + c, b + d
    margins = doers * non_doers * retained * lost
    phi = None if margins == 0 else (a * d - b * c) / math.sqrt(margins)
    odds = ((a + 0.5) * (d + 0.5)) / ((b + 0.5) * (c + 0.5))
    spread = _Z_95 * math.sqrt(1 / (a + 0.5) + 1 / (b + 0.5) + 1 / (c + 0.5) + 1 / (d + 0.5))
    precision = share(a, doers)
    base_rate = share(retained, n)
    return {
        "share": share(doers, n),
        "retention_doers": precision,
        "retention_non_doers": share(c, non_doers),
        "phi": phi,
        "odds_ratio": odds,
        "odds_ratio_low": math.exp(math.log(odds) - spread),
        "odds_ratio_high": math.exp(math.log(odds) + spread),
        "precision": precision,
        "recall": share(a, retained),
        "lift": None if precision is None or not base_rate else precision / base_rate,
        "p_value": None if phi is None else float(stats.chi2.sf(n * phi * phi, 1)),
    }


def _score(
    counts: pd.DataFrame,
    query: DiscoveryQuery,
    population: int,
    retained: int,
    threshold: int,
) -> tuple[pd.DataFrame, int]:
    """Return the kept candidates and how many were dropped as rare (or near-universal)."""
    tables: dict[tuple[str, str | None], dict[int, list[int]]] = {}
    for event, detail, n, is_retained, persons in counts.itertuples(index=False):
        key = (str(event), None if detail is None or pd.isna(detail) else str(detail))
        by_count = tables.setdefault(key, {})
        cell = by_count.setdefault(int(n), [0, 0])
        cell[0 if is_retained else 1] += int(persons)

    rows: list[dict[str, Any]] = []
    dropped = 0
    for (event, detail), by_count in sorted(
        tables.items(), key=lambda item: (item[0][0], item[0][1] or "")
    ):
        for k in sorted(set(query.counts)):
            a = sum(cell[0] for n, cell in by_count.items() if n >= k)
            b = sum(cell[1] for n, cell in by_count.items() if n >= k)
            if min(a + b, population - a - b) < threshold:
                dropped += 1
                continue
            c, d = retained - a, population - retained - b
            rows.append(_candidate_row(query, event, detail, k, a, b, c, d))
    if not rows:
        return pd.DataFrame({name: [] for name in CANDIDATE_COLUMNS}), dropped
    return pd.DataFrame(rows, columns=CANDIDATE_COLUMNS), dropped


def _candidate_row(
    query: DiscoveryQuery, event: str, detail: str | None, k: int, a: int, b: int, c: int, d: int
) -> dict[str, Any]:
    values, where = _split_values(query, event, detail)
    label = event if values is None else f"{event}: {', '.join(values)}"
    times = "once" if k == 1 else f"at least {k} times"
    return {
        "behaviour": f"{label}, {times} in the first {query.first_days} days",
        "event": event,
        "detail": None if values is None else ", ".join(values),
        "min_count": k,
        "doers": a + b,
        "doers_retained": a,
        **association(a, b, c, d),
        "where": where,
    }


def _split_values(
    query: DiscoveryQuery, event: str, detail: str | None
) -> tuple[list[str] | None, dict[str, Any] | None]:
    """Return display values and the plan ``where`` filter of a split candidate."""
    if detail is None:
        return None, {}
    properties = dict(query.split).get(event, ())
    parsed = orjson.loads(detail)
    values = ["(none)" if value is None else _display(value) for value in parsed]
    if any(value is None for value in parsed):
        return values, None
    return values, dict(zip(properties, parsed, strict=True))


def _display(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _rank(scored: pd.DataFrame, top: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    if scored.empty:
        return scored, scored
    valid = scored[scored["phi"].notna()].astype({"phi": float})
    positive = valid[valid["phi"] > 0].sort_values(
        ["phi", "doers", "behaviour"], ascending=[False, False, True]
    )
    negative = valid[valid["phi"] < 0].sort_values(
        ["phi", "doers", "behaviour"], ascending=[True, False, True]
    )
    return positive.head(top).reset_index(drop=True), negative.head(top).reset_index(drop=True)


def _plan_snippet(positive: pd.DataFrame, query: DiscoveryQuery) -> tuple[str | None, int]:
    """Return a plan YAML fragment with up to five milestones from the best positive ones."""
    milestones: list[dict[str, Any]] = []
    seen: set[tuple[str, str | None]] = set()
    names: set[str] = set()
    for row in positive.itertuples(index=False):
        key = (row.event, row.detail)
        if key in seen or row.where is None:
            continue
        seen.add(key)
        name = _milestone_name(
            row.event if row.detail is None else f"{row.event} {row.detail}", names
        )
        milestone: dict[str, Any] = {
            "name": name,
            "description": (
                f"{row.behaviour}: retention {row.retention_doers:.0%} against "
                f"{row.retention_non_doers:.0%} without it (phi {row.phi:.2f})"
            ),
            "event": row.event,
        }
        if row.where:
            milestone["where"] = dict(row.where)
        if row.min_count > 1:
            milestone["min_count"] = int(row.min_count)
        milestones.append(milestone)
        if len(milestones) == MAX_SUGGESTED:
            break
    if not milestones:
        return None, 0
    body = {
        "milestones": milestones,
        "activation": {"milestones": [milestones[0]["name"]], "within_days": query.first_days},
    }
    header = (
        f"# Suggested by headstart discover: behaviours in the first {query.first_days} days\n"
        f"# that go with retention ({query.outcome_text()}).\n"
        "# Hypotheses from past data, not causes: confirm each with an experiment.\n"
        "# Activation uses the strongest one; merge this into a plan that has a signup.\n"
    )
    return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True), len(milestones)


def _milestone_name(text: str, taken: set[str]) -> str:
    base = _NAME_PATTERN.sub("_", text).strip("_").lower()[:90] or "milestone"
    name = base
    suffix = 2
    while name in taken:
        name = f"{base}_{suffix}"
        suffix += 1
    taken.add(name)
    return name


def _notices(
    query: DiscoveryQuery, population: int, retained: int, scored: pd.DataFrame
) -> list[Notice]:
    notices: list[Notice] = []
    if population < LOW_SAMPLE_PERSONS:
        notices.append(
            Notice(
                LOW_SAMPLE,
                f"only {population} persons were observed for the whole horizon; "
                f"treat the ranking with care below {LOW_SAMPLE_PERSONS}",
            )
        )
    if retained in (0, population):
        state = "retained" if retained else "lost"
        notices.append(
            Notice(
                NO_VARIATION,
                f"all {population} persons were {state} ({query.outcome_text()}), so no "
                "behaviour can predict the outcome",
            )
        )
    return notices


def _parse_split(text: str) -> tuple[str, tuple[str, ...]]:
    event, equals, names = text.rpartition("=")
    properties = tuple(name.strip() for name in names.split(",") if name.strip())
    if not equals or not event.strip() or not properties:
        raise InvalidInput(
            f"split={text!r} is not EVENT=PROPERTY[,PROPERTY...]; e.g. Badge Awarded=name"
        )
    return event.strip(), properties


def _check_days(field_name: str, value: int, minimum: int) -> None:
    if not minimum <= value <= MAX_DAYS:
        raise InvalidInput(
            f"{field_name}={value!r} is out of range; use a whole number of days from "
            f"{minimum} to {MAX_DAYS}"
        )
