"""Helpers shared by CLI commands: the data directory option, JSON output, catching up."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from headstart.datadir import DataDir
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.processor.processor import Processor
from headstart.processor.worker import ConfigWatcher
from headstart.state.store import StateStore

# soft_wrap keeps long messages on one line when the output is a file or a pipe, so scripts
# can match them; tables still fit the terminal.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

DEFAULT_DATA_DIR = "headstart-data"

DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        "-d",
        envvar="HEADSTART_DATA_DIR",
        help="Data directory.",
        show_default=True,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def default_data_dir() -> Path:
    return Path(os.environ.get("HEADSTART_DATA_DIR", DEFAULT_DATA_DIR))


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def catch_up(data_dir: DataDir, *, quiet: bool = False, timeout_s: float = 60.0) -> None:
    """Bring derived state up to the log head before a read.

    With a server running, its processor does the work and this waits for it. Otherwise this
    process takes the processor lock and processes the backlog itself.
    """
    log = SQLiteEventLog(data_dir.log_path)
    store = StateStore(data_dir.state_path)
    try:
        lock = data_dir.lock("processor")
        if lock is None:
            _wait_for_other_processor(log, store, timeout_s)
            return
        try:
            watcher = ConfigWatcher(data_dir)
            watcher.poll()
            processor = Processor(log, store, None)
            processor.use_plan(watcher.plan, watcher.pairs)
            backlog = log.head() - processor.offset
            if backlog <= 0:
                return
            with progress_bar() as bar:
                task = bar.add_task("processing", total=backlog, visible=not quiet)
                while (applied := processor.run_once()) > 0:
                    bar.advance(task, applied)
        finally:
            lock.close()
    finally:
        log.close()
        store.close()


def _wait_for_other_processor(log: SQLiteEventLog, store: StateStore, timeout_s: float) -> None:
    target = log.head()
    deadline = time.monotonic() + timeout_s
    while store.offset() < target and time.monotonic() < deadline:
        time.sleep(0.05)
    if store.offset() < target:
        err_console.print(
            f"[yellow]warning:[/] the processor is {target - store.offset()} events behind; "
            "showing the state processed so far"
        )
