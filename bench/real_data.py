"""Real data sets as events in a warehouse, and the discovery runs behind docs/analytics.md.

    python -m bench.real_data

prints the discovery results for three real data sets as markdown:

- Martial Arts Stack Exchange (packaged demo dump): sign-ups and badges; the outcome is the
  user's ``LastAccessDate`` (trait ``last_access_at``).
- Bicycles Meta Stack Exchange (packaged demo dump): a full event log; the onboarding clock
  starts at ``Meta Joined``, as in the demo plan.
- OULAD (tests/data/oulad): course registrations, assessment submissions and withdrawals.

Stack Exchange dumps go through ``headstart.demo.stackexchange`` (the same messages
``headstart demo`` imports). OULAD is mapped here, one person per registration (a student in
one module presentation):

- OULAD dates are days relative to the presentation start and it gives no calendar dates.
  The anchor is an assumption: the 1st of the month at 00:00 UTC, February for "B"
  presentations and October for "J" presentations, reading the letter as the start month.
  Discovery uses only offsets from sign-up, so the anchor changes none of its numbers.
- ``Registered`` (the sign-up) at day 0, the start of the presentation, whatever the
  registration date (kept as property ``registration_day``).
- ``Assessment Submitted`` at ``date_submitted`` with ``assessment_type`` (TMA, CMA, Exam) and
  ``timing``: ``banked`` (carried over from an earlier presentation), ``late`` (after the
  assessment's due day) or ``on_time`` (by the due day, or no due day given).
- ``Unregistered`` at ``date_unregistration`` (the student withdrew).

Each message becomes a warehouse row directly (person = userId), without the processor,
because every person in these data sets has exactly one user id.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from headstart.analytics import create_schema, load_events, load_persons
from headstart.analytics.discovery import DiscoveryQuery, DiscoveryResult, discover
from headstart.demo.dump import get_site
from headstart.demo.stackexchange import export_site
from headstart.timeutil import MICROS_PER_DAY, parse_iso, to_iso

OULAD_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "oulad"
PRESENTATION_MONTHS = {"B": 2, "J": 10}

MARTIALARTS_QUERY = DiscoveryQuery(
    first_days=7,
    outcome="trait_after",
    outcome_trait="last_access_at",
    retention_day=90,
    split=(("Badge Awarded", ("name",)),),
)
BICYCLES_QUERY = DiscoveryQuery(
    first_days=7,
    outcome="active_after",
    retention_day=90,
    # Actions the user took; badges and received votes happen to a user without a visit.
    return_events=("Question Asked", "Answer Posted", "Comment Posted", "Post Edited", "Vote Cast"),
    split=(("Badge Awarded", ("name",)),),
    min_doers=10,
)
OULAD_QUERY = DiscoveryQuery(
    first_days=30,
    counts=(1, 2, 3),
    outcome="not_churned",
    churn_event="Unregistered",
    retention_day=120,
    split=(("Assessment Submitted", ("assessment_type", "timing")),),
)


def presentation_start(code: str) -> int:
    """Return day 0 of an OULAD presentation such as ``2013J`` in UTC microseconds."""
    year, letter = int(code[:4]), code[4:]
    if letter not in PRESENTATION_MONTHS:
        raise ValueError(f"presentation {code!r} does not end in B or J")
    return parse_iso(datetime(year, PRESENTATION_MONTHS[letter], 1, tzinfo=UTC).isoformat())


def read_oulad(name: str, folder: Path = OULAD_DIR) -> list[dict[str, str]]:
    """Read one OULAD table (``courses``, ``assessments``, ...) as rows of text fields."""
    with gzip.open(folder / f"{name}.csv.gz", "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(io.StringIO(handle.read())))


def oulad_messages(folder: Path = OULAD_DIR) -> list[dict[str, Any]]:
    """Map the OULAD registrations, submissions and withdrawals to Segment track calls."""
    assessments = {row["id_assessment"]: row for row in read_oulad("assessments", folder)}
    registrations = read_oulad("studentRegistration", folder)
    starts = {
        row["code_presentation"]: presentation_start(row["code_presentation"])
        for row in registrations
    }
    messages = []
    for row in registrations:
        user = _person(row["code_module"], row["code_presentation"], row["id_student"])
        start = starts[row["code_presentation"]]
        properties = {
            "module": row["code_module"],
            "presentation": row["code_presentation"],
            "registration_day": _day(row["date_registration"]),
        }
        messages.append(_track(user, "Registered", start, properties, f"reg-{user}"))
        withdrawn = _day(row["date_unregistration"])
        if withdrawn is not None:
            at = start + withdrawn * MICROS_PER_DAY
            messages.append(_track(user, "Unregistered", at, {}, f"unreg-{user}"))
    for row in read_oulad("studentAssessment", folder):
        assessment = assessments[row["id_assessment"]]
        user = _person(
            assessment["code_module"], assessment["code_presentation"], row["id_student"]
        )
        submitted = int(row["date_submitted"])
        properties = {
            "assessment_id": int(row["id_assessment"]),
            "assessment_type": assessment["assessment_type"],
            "timing": _timing(row["is_banked"], submitted, _day(assessment["date"])),
            "day": submitted,
        }
        at = starts[assessment["code_presentation"]] + submitted * MICROS_PER_DAY
        messages.append(
            _track(
                user,
                "Assessment Submitted",
                at,
                properties,
                f"sub-{row['id_assessment']}-{row['id_student']}",
            )
        )
    return messages


def load_messages(
    conn: duckdb.DuckDBPyConnection, messages: Iterable[dict[str, Any]], signup_event: str
) -> None:
    """Fill the warehouse with track and identify messages, one person per userId.

    A person's sign-up is their first ``signup_event``; identify traits are merged in
    timestamp order.
    """
    create_schema(conn)
    events = []
    signups: dict[str, int] = {}
    traits: dict[str, dict[str, Any]] = {}
    instants: dict[str, int] = {}
    identifies = []
    for message in messages:
        user = str(message["userId"])
        text = message["timestamp"]
        at = instants.get(text)
        if at is None:
            at = instants[text] = parse_iso(text)
        event = message.get("event") if message["type"] == "track" else None
        if message["type"] == "identify":
            identifies.append((at, message["messageId"], user, message.get("traits", {})))
        if event == signup_event and at < signups.get(user, at + 1):
            signups[user] = at
        events.append(
            {
                "person_id": user,
                "user_id": user,
                "type": message["type"],
                "event": event,
                "ts": at,
                "properties": message.get("properties", {}),
                "message_id": message["messageId"],
            }
        )
    for _, _, user, values in sorted(identifies, key=lambda item: item[:2]):
        traits.setdefault(user, {}).update(values)
    load_events(conn, events)
    people = set(signups) | set(traits) | {row["person_id"] for row in events}
    load_persons(
        conn,
        [
            {"person_id": p, "user_id": p, "signup_at": signups.get(p), "traits": traits.get(p, {})}
            for p in sorted(people)
        ],
    )


def oulad_warehouse(folder: Path = OULAD_DIR) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    load_messages(conn, oulad_messages(folder), "Registered")
    return conn


def stackexchange_warehouse(site: str, signup_event: str) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    load_messages(conn, export_site(get_site(site)).messages, signup_event)
    return conn


def report(title: str, result: DiscoveryResult) -> Iterator[str]:
    """Yield markdown lines describing one discovery result."""
    yield f"### {title}"
    yield ""
    yield f"- Outcome: {result.query.outcome_text()}; as of {to_iso(result.as_of)}."
    yield (
        f"- Population: {result.population} persons, {result.retained} retained "
        f"({result.retained / max(result.population, 1):.1%}); threshold {result.threshold} "
        f"persons; {len(result.candidates)} candidates scored, {result.dropped} dropped."
    )
    for notice in result.notices:
        yield f"- {notice.code}: {notice.message}"
    yield ""
    for heading, frame in (("positive", result.top_positive), ("negative", result.top_negative)):
        yield f"Top {heading}:"
        yield ""
        yield "| behaviour | doers | retention doers | retention others | phi | odds ratio (95% CI) |"
        yield "|---|---:|---:|---:|---:|---|"
        for row in frame.itertuples(index=False):
            yield (
                f"| {row.behaviour} | {row.doers} | {row.retention_doers:.1%} | "
                f"{row.retention_non_doers:.1%} | {row.phi:.3f} | {row.odds_ratio:.2f} "
                f"({row.odds_ratio_low:.2f}-{row.odds_ratio_high:.2f}) |"
            )
        yield ""
    if result.plan_snippet:
        yield "```yaml"
        yield result.plan_snippet.rstrip()
        yield "```"
        yield ""


def main() -> None:
    runs = [
        (
            "Martial Arts Stack Exchange",
            stackexchange_warehouse("martialarts", "Signed Up"),
            MARTIALARTS_QUERY,
        ),
        (
            "Bicycles Meta Stack Exchange",
            stackexchange_warehouse("bicycles-meta", "Meta Joined"),
            BICYCLES_QUERY,
        ),
        ("OULAD", oulad_warehouse(), OULAD_QUERY),
    ]
    for title, conn, query in runs:
        for line in report(title, discover(conn, query)):
            print(line)


def _person(module: str, presentation: str, student: str) -> str:
    return f"{module}-{presentation}-{student}"


def _day(text: str) -> int | None:
    text = text.strip()
    return int(text) if text else None


def _timing(banked: str, submitted: int, due: int | None) -> str:
    if banked == "1":
        return "banked"
    if due is not None and submitted > due:
        return "late"
    return "on_time"


def _track(
    user: str, event: str, at: int, properties: dict[str, Any], message_id: str
) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": message_id,
        "userId": user,
        "event": event,
        "timestamp": to_iso(at),
        "properties": properties,
    }


if __name__ == "__main__":
    main()
