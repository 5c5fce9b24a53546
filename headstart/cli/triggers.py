"""``headstart triggers``: commands about trigger rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from headstart.cli.common import (
    DEFAULT_DATA_DIR,
    DataDirOption,
    JsonOption,
    console,
    err_console,
    print_json,
    progress_bar,
)
from headstart.datadir import DataDir
from headstart.errors import HeadstartError, InvalidInput
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.plan.load import load_plan
from headstart.timeutil import SystemClock, parse_iso

triggers_app = typer.Typer(help="Inspect and test trigger rules.", no_args_is_help=True)

SHOWN_ROWS = 50


@triggers_app.command("backtest")
def backtest_command(
    rule: Annotated[str, typer.Argument(help="Name of the trigger rule to replay.")],
    since: Annotated[str, typer.Option(help="Evaluate events from this ISO date or time (UTC).")],
    until: Annotated[
        str | None, typer.Option(help="Evaluate events before this ISO date or time; default now.")
    ] = None,
    plan: Annotated[
        Path | None, typer.Option(help="Plan file to test instead of the installed plan.")
    ] = None,
    data_dir: DataDirOption = Path(DEFAULT_DATA_DIR),
    as_json: JsonOption = False,
) -> None:
    """Replay history through one rule and list the messages it would have sent.

    Reads the log without changing it and builds state in a temporary directory; nothing is
    sent and no event is appended.
    """
    from headstart.triggers.backtest import backtest

    directory = DataDir.existing(data_dir)
    chosen = load_plan(plan) if plan is not None else directory.load_plan()
    if chosen is None:
        raise HeadstartError(
            f"no plan is installed in {directory.root}; pass --plan FILE or run "
            "`headstart plan apply FILE`",
            status=404,
        )
    start = _instant(since, "--since")
    end = _instant(until, "--until") if until is not None else SystemClock().now_us()
    log = SQLiteEventLog(directory.log_path)
    total = log.head()
    log.close()
    with progress_bar() as bar:
        task = bar.add_task("replaying", total=total, visible=not as_json)
        report = backtest(
            directory.log_path, chosen, rule, start, end, progress=lambda n: bar.advance(task, n)
        )
    if as_json:
        print_json(report)
        return
    _render(report)


def _instant(value: str, option: str) -> int:
    try:
        return parse_iso(value)
    except ValueError:
        raise InvalidInput(
            f"{option} {value!r} is not an ISO date or time, e.g. 2024-05-01"
        ) from None


def _render(report: dict[str, Any]) -> None:
    console.print(
        f"[bold]Backtest of {report['rule']}[/] from {report['since']} to {report['until']}: "
        f"{_count(report['events_replayed'], 'event')} replayed, "
        f"{_count(report['persons_entered'], 'person')} entered "
        f"({_count(report['enrollments'], 'enrollment')}), "
        f"{_count(len(report['messages']), 'message')}"
    )
    messages = Table(title="Messages it would have sent")
    for column in ("at", "user", "channel", "step", "template", "content"):
        messages.add_column(column)
    for row in report["messages"][:SHOWN_ROWS]:
        content = row["content"]
        preview = next(iter(content.values()), "") if content else ""
        messages.add_row(
            row["at"],
            row["user_id"] or row["person_id"],
            row["channel"],
            row["step"],
            row["template"] or "-",
            str(preview)[:60],
        )
    console.print(messages)
    if len(report["messages"]) > SHOWN_ROWS:
        err_console.print(f"... and {len(report['messages']) - SHOWN_ROWS} more; --json lists all")
    _render_not_sent(report["not_sent"])
    if report["emitted"]:
        console.print(f"{len(report['emitted'])} events would have been emitted")
    summary = ", ".join(f"{kind} {count}" for kind, count in report["decisions"].items())
    console.print(f"decisions: {summary or 'none'}")


def _render_not_sent(rows: list[dict[str, Any]]) -> None:
    """Print the sends that did not happen, one line per decision and reason, with a count."""
    if not rows:
        return
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["decision"], row["reason"]), []).append(row)
    table = Table(title="Sends it would not have made")
    for column in ("decision", "reason", "count", "first", "example user"):
        table.add_column(column)
    for (decision, reason), group in sorted(groups.items(), key=lambda item: -len(item[1])):
        first = group[0]
        table.add_row(
            decision,
            reason,
            str(len(group)),
            first["at"],
            first["user_id"] or first["person_id"],
        )
    console.print(table)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")
