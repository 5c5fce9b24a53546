"""Import history from files: Segment-format NDJSON, and CSV with a column mapping.

Imported events keep their timestamps as written (historical mode). A message without a
``messageId`` gets one derived from its content and from how many identical lines came before
it in the file, so importing the same lines twice, under any file name, does not duplicate
events while the log remembers their ids (24 to 48 hours), and two identical lines in one file
stay two events. Invalid lines are reported by line number and skipped; the valid ones are
kept.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from headstart.errors import HeadstartError, InvalidInput
from headstart.ingest.normalize import IngestContext, LogRecord, normalize
from headstart.log.base import EventLog

CHUNK = 5000
MAPPABLE = (
    "userId",
    "anonymousId",
    "event",
    "timestamp",
    "messageId",
    "name",
    "groupId",
    "previousId",
)


@dataclass
class CsvMapping:
    """How CSV columns become a message: ``fields`` maps message fields to column names."""

    message_type: str = "track"
    fields: dict[str, str] = field(default_factory=dict)
    event: str | None = None
    ignore: set[str] = field(default_factory=set)

    @classmethod
    def parse(
        cls, message_type: str, pairs: list[str], event: str | None, ignore: list[str]
    ) -> CsvMapping:
        fields = {}
        for pair in pairs:
            target, sep, column = pair.partition("=")
            if not sep or not column:
                raise InvalidInput(f"--map {pair!r} is not FIELD=COLUMN, e.g. userId=user_id")
            if target not in MAPPABLE:
                raise InvalidInput(
                    f"--map {pair!r}: {target!r} is not mappable; use one of {', '.join(MAPPABLE)}"
                )
            fields[target] = column
        return cls(message_type, fields, event, set(ignore))

    def message(self, row: dict[str, str]) -> dict[str, Any]:
        message: dict[str, Any] = {"type": self.message_type}
        used = set(self.ignore)
        for target, column in self.fields.items():
            if column not in row:
                raise InvalidInput(
                    f"column {column!r} (mapped to {target}) is not in the CSV header"
                )
            value = row[column]
            if value != "":
                message[target] = value
            used.add(column)
        if self.event is not None:
            message["event"] = self.event
        rest = {
            key: _scalar(value) for key, value in row.items() if key not in used and value != ""
        }
        bag = "traits" if self.message_type in ("identify", "group") else "properties"
        message[bag] = rest
        return message


@dataclass
class ImportReport:
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)


def read_ndjson(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield number, InvalidInput(f"invalid JSON: {exc}", code="invalid_json")


def read_csv(path: Path, mapping: CsvMapping) -> Iterator[tuple[int, Any]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [
            column for column in mapping.fields.values() if column not in (reader.fieldnames or [])
        ]
        if missing:
            raise InvalidInput(
                f"--map names {', '.join(repr(c) for c in missing)}, which the CSV header "
                f"({', '.join(reader.fieldnames or [])}) does not have"
            )
        for number, row in enumerate(reader, start=2):
            # DictReader puts extra fields under the key None and fills missing ones with None.
            if None in row or None in row.values():
                width = len(reader.fieldnames or ())
                fields = width + len(row.get(None) or ()) - list(row.values()).count(None)
                yield (
                    number,
                    InvalidInput(
                        f"the row has {fields} fields and the header {width}; quote values that "
                        "contain commas",
                        code="invalid_row",
                    ),
                )
                continue
            try:
                yield number, mapping.message(row)
            except InvalidInput as exc:
                yield number, exc


def import_messages(
    log: EventLog,
    messages: Iterator[tuple[int, Any]],
    ctx: IngestContext,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Append valid messages in chunks; ``progress`` gets the number of lines read per chunk."""
    report = ImportReport()
    chunk: list[LogRecord] = []
    lines_in_chunk = 0
    seen: dict[bytes, int] = {}
    for number, message in messages:
        report.lines += 1
        lines_in_chunk += 1
        try:
            if isinstance(message, HeadstartError):
                raise message
            if isinstance(message, dict) and not message.get("messageId"):
                message["messageId"] = _stable_id(message, seen)
            chunk.append(normalize(message, None, ctx))
        except HeadstartError as exc:
            report.rejected.append((number, exc.code, exc.message))
        if len(chunk) >= CHUNK:
            _flush(log, chunk, report)
            if progress is not None:
                progress(lines_in_chunk)
            lines_in_chunk = 0
    _flush(log, chunk, report)
    if progress is not None:
        progress(lines_in_chunk)
    return report


def _flush(log: EventLog, chunk: list[LogRecord], report: ImportReport) -> None:
    if not chunk:
        return
    result = log.append(chunk)
    report.accepted += result.accepted
    report.duplicates += result.duplicates
    chunk.clear()


def _stable_id(message: dict[str, Any], seen: dict[bytes, int]) -> str:
    """Derive an id from the content and the count of identical lines before this one."""
    content = hashlib.sha256(orjson.dumps(message, option=orjson.OPT_SORT_KEYS)).digest()
    occurrence = seen.get(content, 0)
    seen[content] = occurrence + 1
    digest = hashlib.sha256(content + occurrence.to_bytes(8, "big"))
    return f"import-{digest.hexdigest()[:32]}"


def _scalar(value: str) -> Any:
    """Read CSV numbers as numbers, so property filters such as ``gte`` work on them."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value
