"""``headstart messages``: the outbox from the terminal: list, show, retry and drop messages.

These commands open ``state.sqlite`` directly, with or without a running server; a running
dispatcher picks up retried rows within a poll.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Annotated

import orjson
import typer

from headstart.cli.common import (
    DEFAULT_DATA_DIR,
    DataDirOption,
    JsonOption,
    console,
    err_console,
    print_json,
)
from headstart.cli.tables import new_table
from headstart.datadir import DataDir
from headstart.delivery.outbox import STATUSES, OutboxStore
from headstart.errors import HeadstartError, InvalidInput, NotFound
from headstart.state.store import StateStore
from headstart.timeutil import SystemClock, to_iso

messages_app = typer.Typer(
    help="List outbox messages, and retry or drop dead letters.", no_args_is_help=True
)

DATA = Path(DEFAULT_DATA_DIR)
LIST_COLUMNS = ("id", "status", "channel", "rule", "step", "person", "tries", "when", "error")


def _outbox(data_dir: Path) -> closing[OutboxStore]:
    """Open the outbox in ``state.sqlite``, to use in a ``with`` block that closes it."""
    return closing(OutboxStore(DataDir.existing(data_dir).state_path))


@messages_app.command("list")
def list_messages(
    data_dir: DataDirOption = DATA,
    status: Annotated[
        str | None, typer.Option(help=f"Only this status: {', '.join(STATUSES)}.")
    ] = None,
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    rule: Annotated[str | None, typer.Option(help="Only this rule.")] = None,
    limit: Annotated[int, typer.Option(help="How many rows, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List outbox rows newest first, with the number of rows per status."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"--status {status!r} is not a status; use one of {', '.join(STATUSES)}")
    with _outbox(data_dir) as outbox:
        rows = outbox.rows(status=status, channel=channel, rule=rule, limit=limit)
        counts = outbox.counts()
    if as_json:
        print_json({"counts": counts, "messages": [row.to_json() for row in rows]})
        return
    console.print(" ".join(f"{name}: {count}" for name, count in counts.items()))
    table = new_table(LIST_COLUMNS)
    for row in rows:
        when = row.sent_at if row.status == "sent" else (row.next_attempt_at or row.not_before)
        table.add_row(
            str(row.outbox_id),
            row.status,
            row.channel,
            row.rule,
            row.step,
            row.person_id,
            str(row.attempts),
            to_iso(when) or "",
            (row.last_error or "")[:80],
        )
    console.print(table)


@messages_app.command("show")
def show_message(
    outbox_id: Annotated[int, typer.Argument(help="Outbox id from `headstart messages list`.")],
    data_dir: DataDirOption = DATA,
) -> None:
    """Print one outbox row with its payload as JSON."""
    with _outbox(data_dir) as outbox:
        row = outbox.get(outbox_id)
    if row is None:
        raise HeadstartError(f"no outbox row {outbox_id}", status=404)
    print_json(row.to_json())


@messages_app.command("retry")
def retry_messages(
    outbox_ids: Annotated[
        list[int] | None, typer.Argument(help="Outbox ids of dead or dropped rows.")
    ] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Retry every dead row.")] = False,
    data_dir: DataDirOption = DATA,
) -> None:
    """Make dead (or dropped) messages pending again, with their attempts reset."""
    changed = _change(data_dir, OutboxStore.retry, outbox_ids, all_dead, ("dead", "dropped"))
    console.print(f"{changed} messages will be sent again")


@messages_app.command("drop")
def drop_messages(
    outbox_ids: Annotated[list[int] | None, typer.Argument(help="Outbox ids of dead rows.")] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Drop every dead row.")] = False,
    data_dir: DataDirOption = DATA,
) -> None:
    """Give up on dead messages; the rows stay (status dropped) so they are never enqueued again."""
    changed = _change(data_dir, OutboxStore.drop, outbox_ids, all_dead, ("dead",))
    console.print(f"{changed} messages dropped")


@messages_app.command("send")
def send_message(
    channel: Annotated[str, typer.Option(help="Channel name from the plan's channels.")],
    person: Annotated[
        str, typer.Option(help="Person the message is for: person id, user id or anonymous id.")
    ],
    payload: Annotated[
        str, typer.Option(help='Payload JSON, e.g. \'{"to": "a@b.example", "subject": "Hi"}\'.')
    ],
    data_dir: DataDirOption = DATA,
) -> None:
    """Enqueue a one-off message (rule manual) to try a channel's configuration."""
    person_id = _known_target(DataDir.existing(data_dir), channel, person)
    try:
        content = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"--payload is not valid JSON: {exc}") from None
    if not isinstance(content, dict):
        raise InvalidInput("--payload must be a JSON object")
    key = f"manual:{channel}:{person_id}:{uuid.uuid4().hex}"
    with _outbox(data_dir) as outbox:
        outbox_id = outbox.enqueue(
            idempotency_key=key,
            person_id=person_id,
            rule="manual",
            step="send",
            channel=channel,
            payload=content,
            created_at=SystemClock().now_us(),
        )
    console.print(f"enqueued outbox row {outbox_id}; the server's dispatcher sends it")


def _known_target(directory: DataDir, channel: str, person: str) -> str:
    """Return the person id of ``person``; fail on an unknown person or channel."""
    plan = directory.load_plan()
    if plan is not None and channel not in plan.channels:
        known = ", ".join(plan.channels) or "none are configured"
        raise InvalidInput(f"channel {channel!r} is not configured under channels ({known})")
    store = StateStore(directory.state_path)
    try:
        person_id = store.find_person_id(person)
    finally:
        store.close()
    if person_id is None:
        raise NotFound(f"no person {person!r}; pass a person id, a user id or an anonymous id")
    return person_id


@messages_app.command("vapid-keys")
def vapid_keys() -> None:
    """Print a new VAPID key pair for a web_push channel."""
    from headstart.channels.push import generate_vapid_key

    private, public = generate_vapid_key()
    err_console.print("private key (put it in the variable named by vapid_private_key_env):")
    print(private)
    err_console.print("public key (the browser's applicationServerKey):")
    print(public)


def _change(
    data_dir: Path,
    change: Callable[[OutboxStore, list[int] | None], int],
    outbox_ids: list[int] | None,
    all_dead: bool,
    allowed: tuple[str, ...],
) -> int:
    """Apply ``change`` (retry or drop) to the selected rows and return how many changed.

    Named rows must exist and have an ``allowed`` status; otherwise nothing changes and the
    error names the row and its status.
    """
    selection = _selection(outbox_ids, all_dead)
    with _outbox(data_dir) as outbox:
        for outbox_id in selection or ():
            row = outbox.get(outbox_id)
            if row is None:
                raise NotFound(f"no outbox row {outbox_id}; `headstart messages list` shows them")
            if row.status not in allowed:
                raise InvalidInput(
                    f"outbox row {outbox_id} is {row.status}; only {' or '.join(allowed)} rows "
                    "can be changed",
                    code="wrong_status",
                )
        return change(outbox, selection)


def _selection(outbox_ids: list[int] | None, all_dead: bool) -> list[int] | None:
    if all_dead and outbox_ids:
        raise InvalidInput("pass outbox ids or --all-dead, not both")
    if not all_dead and not outbox_ids:
        raise InvalidInput("pass outbox ids, or --all-dead for every dead row")
    return None if all_dead else list(outbox_ids or [])
