"""Discovery on real data, checked against plain pandas queries over the same files.

- OULAD (tests/data/oulad): the engine reads the events that bench/real_data.py maps from the
  CSV files, and pandas reads the CSV files directly and applies the same definitions in days.
- Martial Arts Stack Exchange (packaged dump): the engine sees the demo exporter's messages;
  pandas reads Users.xml and Badges.xml directly.
"""

from __future__ import annotations

import gzip
from typing import Any

import pandas as pd
import pytest

from bench.real_data import (
    MARTIALARTS_QUERY,
    OULAD_DIR,
    OULAD_QUERY,
    oulad_warehouse,
    stackexchange_warehouse,
)
from headstart.analytics.discovery import DiscoveryResult, discover
from headstart.demo.dump import get_site


def candidate(result: DiscoveryResult, behaviour: str) -> dict[str, Any]:
    rows = result.candidates[result.candidates.behaviour == behaviour]
    assert len(rows) == 1, f"{behaviour!r} not among {result.candidates.behaviour.tolist()}"
    return dict(rows.iloc[0])


def read_csv(name: str) -> pd.DataFrame:
    with gzip.open(OULAD_DIR / f"{name}.csv.gz", "rt", encoding="utf-8") as handle:
        return pd.read_csv(handle)


@pytest.fixture(scope="module")
def oulad_result() -> DiscoveryResult:
    return discover(oulad_warehouse(), OULAD_QUERY)


@pytest.fixture(scope="module")
def oulad_by_hand() -> pd.DataFrame:
    """Return one row per registration still registered on day 30, with outcome and flags."""
    registrations = read_csv("studentRegistration")
    submissions = read_csv("studentAssessment").merge(read_csv("assessments"), on="id_assessment")
    keys = ["code_module", "code_presentation", "id_student"]

    early = submissions[(submissions.date_submitted >= 0) & (submissions.date_submitted < 30)]
    on_time = early[(early.is_banked == 0) & ~(early.date_submitted > early.date)]
    late = early[(early.is_banked == 0) & (early.date_submitted > early.date)]

    frame = registrations.copy()
    withdrawn = frame.date_unregistration
    frame = frame[withdrawn.isna() | (withdrawn >= 30)].copy()
    frame["retained"] = frame.date_unregistration.isna() | (frame.date_unregistration >= 120)
    for label, rows in (
        ("tma_on_time", on_time[on_time.assessment_type == "TMA"]),
        ("cma_late", late[late.assessment_type == "CMA"]),
    ):
        counts = rows.groupby(keys).size().rename(label)
        frame = frame.merge(counts, left_on=keys, right_index=True, how="left")
        frame[label] = frame[label].fillna(0)
    return frame


def test_oulad_population_matches_csv(
    oulad_result: DiscoveryResult, oulad_by_hand: pd.DataFrame
) -> None:
    # Every presentation ends by day 269 and the data runs into 2015, so each registration
    # still there on day 30 has been observed to day 120.
    assert oulad_result.population == len(oulad_by_hand)
    assert oulad_result.retained == int(oulad_by_hand.retained.sum())


@pytest.mark.parametrize(
    ("behaviour", "column", "k"),
    [
        ("Assessment Submitted: TMA, on_time, once in the first 30 days", "tma_on_time", 1),
        ("Assessment Submitted: CMA, late, once in the first 30 days", "cma_late", 1),
    ],
    ids=["tma-on-time", "cma-late"],
)
def test_oulad_candidate_matches_csv(
    oulad_result: DiscoveryResult, oulad_by_hand: pd.DataFrame, behaviour: str, column: str, k: int
) -> None:
    doers = oulad_by_hand[oulad_by_hand[column] >= k]
    others = oulad_by_hand[oulad_by_hand[column] < k]
    row = candidate(oulad_result, behaviour)
    assert row["doers"] == len(doers)
    assert row["doers_retained"] == int(doers.retained.sum())
    assert row["retention_non_doers"] == pytest.approx(others.retained.mean(), abs=1e-12)


def test_oulad_on_time_tma_ranks_first(oulad_result: DiscoveryResult) -> None:
    top = oulad_result.top_positive.iloc[0]
    assert top["behaviour"] == "Assessment Submitted: TMA, on_time, once in the first 30 days"
    assert oulad_result.plan_snippet is not None
    assert "assessment_type: TMA" in oulad_result.plan_snippet


def read_dump(table: str) -> pd.DataFrame:
    path = get_site("martialarts").data_folder() / f"{table}.xml.gz"
    with gzip.open(path, "rb") as handle:
        return pd.read_xml(handle, parser="etree")


@pytest.fixture(scope="module")
def martialarts_result() -> DiscoveryResult:
    return discover(stackexchange_warehouse("martialarts", "Signed Up"), MARTIALARTS_QUERY)


def test_martialarts_supporter_matches_dump(martialarts_result: DiscoveryResult) -> None:
    users = read_dump("Users")
    badges = read_dump("Badges")
    users = users[users.Id != -1].copy()
    users["created"] = pd.to_datetime(users.CreationDate, utc=True)
    users["last_access"] = pd.to_datetime(users.LastAccessDate, utc=True)
    badges["date"] = pd.to_datetime(badges.Date, utc=True)
    # The data ends at the latest time anywhere in the exported messages.
    as_of = max(users.created.max(), users.last_access.max(), badges.date.max())
    population = users[users.created + pd.Timedelta(days=90) <= as_of].copy()
    population["retained"] = population.last_access >= population.created + pd.Timedelta(days=90)

    supporter = badges[badges.Name == "Supporter"].merge(
        population[["Id", "created"]], left_on="UserId", right_on="Id"
    )
    early = supporter[
        (supporter.date >= supporter.created)
        & (supporter.date < supporter.created + pd.Timedelta(days=7))
    ]
    doers = population[population.Id.isin(early.UserId)]

    assert martialarts_result.population == len(population)
    assert martialarts_result.retained == int(population.retained.sum())
    row = candidate(martialarts_result, "Badge Awarded: Supporter, once in the first 7 days")
    assert row["doers"] == len(doers)
    assert row["doers_retained"] == int(doers.retained.sum())
