"""Readable tables for the report and person views."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from headstart.cli.tables import format_count, format_hours, format_percent, new_table

MILESTONE_COLUMNS = ("milestone", "reached", "share", "median after sign-up")
DROPOFF_COLUMNS = ("step", "persons", "from previous", "dropped")
DECISION_COLUMNS = ("at", "rule", "step", "decision", "reason")


def render_report(console: Console, report: dict[str, Any]) -> None:
    activation = report["activation"]
    ttv = report["ttv"]
    console.print(
        f"[bold]Onboarding report[/] as of {report['as_of']}: {report['signups']} sign-ups"
    )

    milestones = new_table(
        MILESTONE_COLUMNS, numeric=MILESTONE_COLUMNS[1:], title="Milestone completion"
    )
    for row in report["milestones"]:
        milestones.add_row(
            row["milestone"],
            str(row["reached"]),
            format_percent(row["share"]),
            format_hours(row["median_hours_after_signup"]),
        )
    console.print(milestones)

    console.print(
        f"Activation ({' + '.join(activation['milestones'])} within "
        f"{activation['within_days']:g} days): {activation['activated']} persons, "
        f"{format_percent(activation['rate'])} of sign-ups; "
        f"{format_percent(activation['mature_activation_rate'])}"
        f" of the {activation['mature_signups']} whose window has ended; "
        f"{activation['in_progress']} still in their window"
    )
    console.print(
        f"Time to value among {ttv['converted']} activated: "
        f"median {format_hours(ttv['median_hours'])}, "
        f"p75 {format_hours(ttv['p75_hours'])}, p90 {format_hours(ttv['p90_hours'])}"
    )

    dropoff = new_table(
        DROPOFF_COLUMNS,
        numeric=DROPOFF_COLUMNS[1:],
        title="Drop-off (milestones 1..k reached, in plan order)",
    )
    for row in report["dropoff"]:
        dropoff.add_row(
            row["step"],
            str(row["persons"]),
            format_percent(row["from_previous"]),
            format_count(row["dropped"]),
        )
    console.print(dropoff)


def render_person(console: Console, person: dict[str, Any]) -> None:
    console.print(f"[bold]Person[/] {person['person_id']}  user_id={person['user_id']}")
    console.print(
        "identifiers: " + ", ".join(f"{i['kind']}={i['value']}" for i in person["identifiers"])
    )
    console.print(f"first seen {person['first_seen']}, last seen {person['last_seen']}")

    traits = new_table(("trait", "value", "set at"), title="Traits")
    for name, value in person["traits"].items():
        traits.add_row(name, str(value), person["trait_set_at"][name])
    console.print(traits)

    onboarding = person["onboarding"]
    if onboarding is not None:
        state = "activated" if onboarding["activated"] else "not activated"
        activated = ""
        if onboarding["activated"]:
            activated = f" at {onboarding['activated_at']}"
            if onboarding["ttv_seconds"] is not None:
                activated += f", time-to-value {onboarding['ttv_seconds']:.1f} s"
        console.print(f"signed up {onboarding['signup_at'] or '-'}; {state}{activated}")
        table = new_table(("milestone", "reached at", "evidence"), title="Milestones")
        for row in onboarding["milestones"]:
            table.add_row(
                row["name"], row["reached_at"] or "-", f"{row['evidence']}/{row['min_count']}"
            )
        console.print(table)

    counts = new_table(("event", "count"), numeric=("count",), title="Events")
    for name, count in person["event_counts"].items():
        counts.add_row(name, str(count))
    console.print(counts)
    _render_merges(console, person.get("merges", []))
    for warning in person["warnings"]:
        console.print(f"[yellow]warning[/] {warning['at']}: {warning['message']}")
    render_decisions(console, person.get("decisions", []))


def _render_merges(console: Console, merges: list[dict[str, Any]]) -> None:
    """Print the merge log: when, why, and what the merged person brought along."""
    if not merges:
        return
    table = new_table(("at", "reason", "link", "merged person", "merged ids"), title="Merges")
    for merge in merges:
        detail = merge["detail"]
        link = detail.get("link") or {}
        merged_ids = [f"user_id={detail['merged_user_id']}"] if detail.get("merged_user_id") else []
        merged_ids += [f"anonymous_id={value}" for value in detail.get("merged_anonymous_ids", [])]
        table.add_row(
            merge["at"] or "-",
            merge["reason"],
            f"{link.get('kind')}={link.get('value')}" if link else "-",
            merge["merged"],
            ", ".join(merged_ids) or "-",
        )
    console.print(table)


def render_decisions(console: Console, decisions: list[dict[str, Any]]) -> None:
    """Print trigger decisions, oldest first, as a timeline."""
    if not decisions:
        return
    table = new_table(DECISION_COLUMNS, title="Trigger decisions")
    for row in reversed(decisions):
        reason = row["reason"]
        delivery = row.get("delivery")
        if delivery is not None and delivery["status"] != "sent":
            reason += f"; delivery {delivery['status']} after {delivery['attempts']} attempts"
            if delivery["last_error"]:
                reason += f": {delivery['last_error']}"
        table.add_row(row["at"], row["rule"] or "-", row["step"] or "-", row["kind"], reason)
    console.print(table)
