"""``headstart admin merge`` and ``headstart admin separate``: audited identity changes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from headstart.cli.common import DEFAULT_DATA_DIR, DataDirOption, catch_up, console
from headstart.datadir import DataDir
from headstart.identity.admin import Separations, merge_record, resolve_identifier
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.sqlite import connect
from headstart.state.store import StateStore
from headstart.timeutil import SystemClock

ReasonOption = Annotated[str, typer.Option(help="Reason for the change, kept in the merge log.")]


def register(app: typer.Typer) -> None:
    app.command("merge")(merge)
    app.command("separate")(separate)


def merge(
    into: Annotated[str, typer.Argument(help="Person that survives: id, user id or kind:value.")],
    other: Annotated[str, typer.Argument(help="Person merged into it.")],
    reason: ReasonOption = "",
    data_dir: DataDirOption = Path(DEFAULT_DATA_DIR),
) -> None:
    """Merge two persons, even two with different user ids (an audited admin action)."""
    directory = DataDir.existing(data_dir)
    catch_up(directory, quiet=True)
    store = StateStore(directory.state_path)
    into_id, other_id = resolve_identifier(store, into), resolve_identifier(store, other)
    merged = _describe(store, other_id)
    record = merge_record(into_id, other_id, reason, SystemClock().now_us())
    log = SQLiteEventLog(directory.log_path)
    log.append([record])
    log.close()
    catch_up(directory, quiet=True)
    console.print(
        f"merged {merged} into {into}; the merge log of `headstart person {into}` shows it"
    )


def _describe(store: StateStore, identifier: tuple[str, str]) -> str:
    """Name the person an identifier belongs to, with its user id, for a merge message."""
    person_id = store.person_of(*identifier)
    user_ids = [value for kind, value in store.identifiers_of(person_id or "") if kind == "user_id"]
    owner = f" (user_id {user_ids[0]})" if user_ids else " (no user id)"
    return f"{identifier[0]}:{identifier[1]}, person {person_id}{owner},"


def separate(
    first: Annotated[str, typer.Argument(help="Identifier: person id, user id or kind:value.")],
    second: Annotated[str, typer.Argument(help="Identifier that must never join the first.")],
    reason: ReasonOption = "",
    data_dir: DataDirOption = Path(DEFAULT_DATA_DIR),
) -> None:
    """Keep two identifiers in different persons from now on and in all history.

    State is rebuilt from the log, so a wrong merge is undone as if it never happened.
    """
    directory = DataDir.existing(data_dir)
    store = StateStore(directory.state_path)
    a, b = resolve_identifier(store, first), resolve_identifier(store, second)
    Separations(connect(directory.log_path)).add(a, b, reason, SystemClock().now_us())
    apart = f"{a[0]}:{a[1]} and {b[0]}:{b[1]} are kept apart"
    if directory.running_server_url() is not None:
        console.print(f"{apart}; the server rebuilds state from the log within seconds")
        return
    catch_up(directory)
    console.print(f"{apart}; state was rebuilt")
