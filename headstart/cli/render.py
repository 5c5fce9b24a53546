"""Readable tables for the report and person views."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _hours(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 48:
        return f"{value:.1f} h"
    return f"{value / 24:.1f} d"


def render_report(console: Console, report: dict[str, Any]) -> None:
    activation = report["activation"]
    ttv = report["ttv"]
    console.print(
        f"[bold]Onboarding report[/] as of {report['as_of']}: {report['signups']} sign-ups"
    )

    milestones = Table(title="Milestone completion")
    for column in ("milestone", "reached", "share", "median after sign-up"):
        milestones.add_column(column, justify="left" if column == "milestone" else "right")
    for row in report["milestones"]:
        milestones.add_row(
            row["milestone"],
            str(row["reached"]),
            _percent(row["share"]),
            _hours(row["median_hours_after_signup"]),
        )
    console.print(milestones)

    console.print(
        f"Activation ({' + '.join(activation['milestones'])} within "
        f"{activation['within_days']:g} days): {activation['activated']} persons, "
        f"{_percent(activation['rate'])} of sign-ups; {_percent(activation['mature_activation_rate'])}"
        f" of the {activation['mature_signups']} whose window has ended; "
        f"{activation['in_progress']} still in their window"
    )
    console.print(
        f"Time to value among {ttv['converted']} activated: median {_hours(ttv['median_hours'])}, "
        f"p75 {_hours(ttv['p75_hours'])}, p90 {_hours(ttv['p90_hours'])}"
    )

    dropoff = Table(title="Drop-off (milestones 1..k reached, in plan order)")
    for column in ("step", "persons", "from previous", "dropped"):
        dropoff.add_column(column, justify="left" if column == "step" else "right")
    for row in report["dropoff"]:
        dropoff.add_row(
            row["step"],
            str(row["persons"]),
            _percent(row["from_previous"]),
            "-" if row["dropped"] is None else str(row["dropped"]),
        )
    console.print(dropoff)


def render_person(console: Console, person: dict[str, Any]) -> None:
    console.print(f"[bold]Person[/] {person['person_id']}  user_id={person['user_id']}")
    console.print(
        "identifiers: " + ", ".join(f"{i['kind']}={i['value']}" for i in person["identifiers"])
    )
    console.print(f"first seen {person['first_seen']}, last seen {person['last_seen']}")

    traits = Table(title="Traits")
    traits.add_column("trait")
    traits.add_column("value")
    traits.add_column("set at")
    for name, value in person["traits"].items():
        traits.add_row(name, str(value), person["trait_set_at"][name])
    console.print(traits)

    onboarding = person["onboarding"]
    if onboarding is not None:
        state = "activated" if onboarding["activated"] else "not activated"
        console.print(
            f"signed up {onboarding['signup_at'] or '-'}; {state}"
            + (f" at {onboarding['activated_at']}" if onboarding["activated"] else "")
        )
        table = Table(title="Milestones")
        for column in ("milestone", "reached at", "evidence"):
            table.add_column(column)
        for row in onboarding["milestones"]:
            table.add_row(
                row["name"], row["reached_at"] or "-", f"{row['evidence']}/{row['min_count']}"
            )
        console.print(table)

    counts = Table(title="Events")
    counts.add_column("event")
    counts.add_column("count", justify="right")
    for name, count in person["event_counts"].items():
        counts.add_row(name, str(count))
    console.print(counts)
    for warning in person["warnings"]:
        console.print(f"[yellow]warning[/] {warning['at']}: {warning['message']}")
    render_decisions(console, person.get("decisions", []))


def render_decisions(console: Console, decisions: list[dict[str, Any]]) -> None:
    """Print trigger decisions, oldest first, as a timeline."""
    if not decisions:
        return
    table = Table(title="Trigger decisions")
    for column in ("at", "rule", "step", "decision", "reason"):
        table.add_column(column)
    for row in reversed(decisions):
        table.add_row(row["at"], row["rule"] or "-", row["step"] or "-", row["kind"], row["reason"])
    console.print(table)
