"""Import a file into the event log, once: a file whose content was imported before is skipped.

The duplicate check on messageId lasts only 24 to 48 hours, so re-importing a file days later
would log its events again. The importer therefore records each imported file's SHA-256 digest
in ``log.sqlite`` and skips a file it has seen, unless ``force`` is set.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from headstart.errors import InvalidInput
from headstart.ingest.files import (
    CsvMapping,
    ImportReport,
    import_messages,
    read_csv,
    read_ndjson,
)
from headstart.ingest.normalize import IngestContext
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.plan.model import DEFAULT_BLOCKLIST, Plan
from headstart.sources import SourceRegistry
from headstart.sqlite import connect
from headstart.timeutil import SystemClock

SCHEMA = """
CREATE TABLE IF NOT EXISTS imports (
    digest TEXT PRIMARY KEY,
    file_name TEXT NOT NULL,
    source_id TEXT NOT NULL,
    lines INTEGER NOT NULL,
    accepted INTEGER NOT NULL,
    imported_at INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class PreviousImport:
    file_name: str
    accepted: int
    imported_at: int


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def previous_import(conn: sqlite3.Connection, digest: str) -> PreviousImport | None:
    conn.executescript(SCHEMA)
    row = conn.execute(
        "SELECT file_name, accepted, imported_at FROM imports WHERE digest = ?", (digest,)
    ).fetchone()
    return None if row is None else PreviousImport(str(row[0]), int(row[1]), int(row[2]))


def import_file(
    log_path: Path,
    file: Path,
    *,
    source: str,
    file_format: str,
    mapping: CsvMapping | None,
    plan: Plan | None,
    digest: str,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Validate and append every line of ``file``; record the file as imported."""
    if file_format not in ("csv", "ndjson"):
        raise InvalidInput(f"--format {file_format!r} is not supported; use ndjson or csv")
    control = connect(log_path)
    source_row = SourceRegistry(control).ensure(source, historical=True)
    ctx = IngestContext(
        source_id=source_row.source_id,
        received_at=SystemClock().now_us(),
        historical=True,
        blocklist=plan.identity.blocked() if plan else frozenset(DEFAULT_BLOCKLIST),
    )
    if file_format == "csv":
        messages = read_csv(file, mapping or CsvMapping())
    else:
        messages = read_ndjson(file)

    log = SQLiteEventLog(log_path)
    try:
        report = import_messages(log, messages, ctx, progress=progress)
    finally:
        log.close()
    # A file none of whose lines was valid is not recorded, so it can be imported again once
    # the mapping or the file is fixed.
    if report.accepted or report.duplicates:
        control.executescript(SCHEMA)
        control.execute(
            "INSERT OR REPLACE INTO imports (digest, file_name, source_id, lines, accepted,"
            " imported_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                digest,
                file.name,
                source_row.source_id,
                report.lines,
                report.accepted,
                ctx.received_at,
            ),
        )
    control.close()
    return report
