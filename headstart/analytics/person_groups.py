"""Person-level breakdowns: a trait value, the first-touch acquisition channel or an experiment
variant, one label per person.

Definitions:

- ``trait:NAME``: the person's current value of trait NAME (dots reach into nested objects),
  as text. Persons without it are in ``(none)``.
- ``channel``: the first-touch acquisition channel. It is taken from the person's earliest
  event (by time, then log sequence) that carries one of these, in this order of precedence:
  ``context.campaign.source``; ``properties.utm_source``; the ``utm_source`` query parameter of
  ``context.page.url`` or ``properties.url``; the host of ``context.page.referrer`` or
  ``properties.referrer`` without ``www.``, unless it is the host of the page itself (internal
  navigation). Values are lower-cased. Persons with no such event are in ``(none)``.
- ``experiment:ID``: the variant (``variation_name``, else ``variation_id``) of the person's
  first ``Experiment Viewed`` event whose ``experiment_id`` or ``experiment_name`` is ID.
  Persons never exposed are in ``(not exposed)``; persons exposed to more than one variant
  keep their first and are counted in a ``MULTIPLE_VARIANTS`` notice.

Only events at or before ``as_of`` decide a channel or a variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import duckdb

from headstart.analytics.lifecycle_base import (
    MULTIPLE_VARIANTS,
    Notice,
    Params,
    json_path,
    sql_string,
)
from headstart.errors import InvalidInput

BreakdownKind = Literal["trait", "channel", "experiment"]

NONE_LABEL = "(none)"
NOT_EXPOSED_LABEL = "(not exposed)"
ALL_LABEL = "(all)"
EXPERIMENT_EVENT = "Experiment Viewed"

_HOST = r"^[A-Za-z][A-Za-z0-9+.\-]*://([^/?#:]+)"
_UTM_SOURCE = r"[?&]utm_source=([^&#]*)"


@dataclass(frozen=True, slots=True)
class Breakdown:
    """How to split persons into groups: by a trait, by channel or by experiment variant."""

    kind: BreakdownKind
    name: str | None = None

    @classmethod
    def parse(cls, text: str, field: str = "by") -> Breakdown:
        """Parse ``trait:NAME``, ``channel`` or ``experiment:ID``."""
        kind, _, name = text.strip().partition(":")
        name = name.strip()
        if kind == "channel" and not name:
            return cls("channel")
        if kind in ("trait", "experiment") and name:
            return cls(kind, name)  # type: ignore[arg-type]
        raise InvalidInput(
            f"{field}={text!r} is not a breakdown; use trait:NAME (e.g. trait:plan), channel, "
            "or experiment:ID (an experiment_id or experiment_name of Experiment Viewed events)"
        )

    def label(self) -> str:
        return self.kind if self.name is None else f"{self.kind}:{self.name}"

    def missing_label(self) -> str:
        """Return the group of persons without a value."""
        return NOT_EXPOSED_LABEL if self.kind == "experiment" else NONE_LABEL


def group_sql(breakdown: Breakdown, params: Params, as_of_param: str) -> str:
    """Return a query of ``(person_id, grp)`` for persons that have a value.

    ``as_of_param`` is the placeholder of the data's end in UTC microseconds.
    """
    if breakdown.kind == "trait":
        assert breakdown.name is not None
        path = params.add(json_path(breakdown.name))
        return (
            f"SELECT person_id, traits ->> {path} AS grp FROM persons"
            f" WHERE traits ->> {path} IS NOT NULL"
        )
    if breakdown.kind == "channel":
        return _channel_sql(as_of_param)
    assert breakdown.name is not None
    return f"SELECT person_id, grp FROM ({_exposures_sql(breakdown.name, params, as_of_param)})"


def experiment_conflicts(
    conn: duckdb.DuckDBPyConnection, breakdown: Breakdown, as_of: int
) -> Notice | None:
    """Return a ``MULTIPLE_VARIANTS`` notice when persons saw more than one variant."""
    if breakdown.kind != "experiment" or breakdown.name is None:
        return None
    params = Params()
    as_of_param = params.add(as_of)
    exposures = _exposures_sql(breakdown.name, params, as_of_param)
    row = conn.execute(
        f"SELECT count(*) FROM ({exposures}) WHERE variants > 1", params.values
    ).fetchone()
    conflicts = 0 if row is None else int(row[0])
    if conflicts == 0:
        return None
    return Notice(
        MULTIPLE_VARIANTS,
        f"{conflicts} persons saw more than one variant of experiment {breakdown.name!r}; "
        "each is counted in the variant of their first exposure",
    )


def _exposures_sql(experiment: str, params: Params, as_of_param: str) -> str:
    placeholder = params.add(experiment)
    variant = "coalesce(properties ->> '$.variation_name', properties ->> '$.variation_id')"
    return f"""
        SELECT person_id,
               arg_min({variant}, (ts, seq)) AS grp,
               count(DISTINCT {variant}) AS variants
        FROM events
        WHERE event = {sql_string(EXPERIMENT_EVENT)}
          AND epoch_us(ts) <= {as_of_param}
          AND (properties ->> '$.experiment_id' = {placeholder}
               OR properties ->> '$.experiment_name' = {placeholder})
          AND {variant} IS NOT NULL
        GROUP BY person_id
    """


def _channel_sql(as_of_param: str) -> str:
    page_url = "coalesce(context ->> '$.page.url', properties ->> '$.url')"
    referrer = "coalesce(context ->> '$.page.referrer', properties ->> '$.referrer')"
    page_host = f"lower(regexp_extract({page_url}, '{_HOST}', 1))"
    referrer_host = f"lower(regexp_extract({referrer}, '{_HOST}', 1))"
    external_referrer = (
        f"CASE WHEN {referrer_host} IS DISTINCT FROM {page_host} "
        f"THEN regexp_replace({referrer_host}, '^www\\.', '') END"
    )
    signal = f"""lower(coalesce(
        nullif(trim(context ->> '$.campaign.source'), ''),
        nullif(trim(properties ->> '$.utm_source'), ''),
        nullif(trim(url_decode(regexp_extract({page_url}, '{_UTM_SOURCE}', 1))), ''),
        nullif({external_referrer}, '')
    ))"""
    return f"""
        SELECT person_id, arg_min(channel, (ts, seq)) AS grp
        FROM (
            SELECT person_id, ts, seq, {signal} AS channel
            FROM events
            WHERE epoch_us(ts) <= {as_of_param}
        )
        WHERE channel IS NOT NULL
        GROUP BY person_id
    """
