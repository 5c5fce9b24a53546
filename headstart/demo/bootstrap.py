"""Prepare a data directory for the demo: plan, source, admin key and a one-time import.

Unlike a normal data directory, a demo directory keeps its write key and admin key in clear in
``demo-credentials.json`` (mode 0600), so that every start of the demo can print them again.
``demo-import.json`` records the finished import, so a second start does not import again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from headstart.datadir import DataDir, DirectoryBusy
from headstart.demo.dump import Site
from headstart.demo.stackexchange import export_site
from headstart.errors import InvalidInput, NotFound, Unauthorized
from headstart.ingest.files import import_messages
from headstart.ingest.normalize import IngestContext
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.plan.model import Plan
from headstart.sources import AdminKey, Source, SourceRegistry
from headstart.sqlite import connect
from headstart.timeutil import SystemClock, to_iso

logger = logging.getLogger(__name__)

CREDENTIALS_FILE = "demo-credentials.json"
IMPORT_RECORD_FILE = "demo-import.json"
SOURCE_NAME = "demo"

AdminKeyOrigin = Literal["generated", "stored", "environment", "unknown"]


@dataclass(frozen=True, slots=True)
class DemoCredentials:
    """The demo's keys in clear, as stored in ``demo-credentials.json``."""

    site: str
    source_id: str
    write_key: str
    admin_key: str | None

    @classmethod
    def load(cls, path: Path) -> DemoCredentials | None:
        data = _read_json(path)
        if data is None:
            return None
        try:
            return cls(
                site=str(data["site"]),
                source_id=str(data["source_id"]),
                write_key=str(data["write_key"]),
                admin_key=None if data.get("admin_key") is None else str(data["admin_key"]),
            )
        except KeyError as exc:
            raise InvalidInput(
                f"{path} is missing the field {exc.args[0]!r}; delete the file and the data "
                "directory, then start the demo again"
            ) from None

    def save(self, path: Path) -> None:
        """Write the file readable by its owner only (mode 0600), replacing any older one."""
        body = orjson.dumps(
            {
                "site": self.site,
                "source": SOURCE_NAME,
                "source_id": self.source_id,
                "write_key": self.write_key,
                "admin_key": self.admin_key,
            },
            option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE,
        )
        temporary = path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(body)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """The outcome of the demo's import, as stored in ``demo-import.json``."""

    site: str
    source_id: str
    finished_at: str
    lines: int
    accepted: int
    duplicates: int
    rejected: int
    bulk_reawards: int
    skipped_rows: dict[str, int]

    @classmethod
    def load(cls, path: Path) -> ImportRecord | None:
        data = _read_json(path)
        if data is None:
            return None
        try:
            return cls(**data)
        except TypeError:
            logger.warning("%s has unexpected fields; importing the demo data again", path)
            return None

    def save(self, path: Path) -> None:
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))
        os.replace(temporary, path)


@dataclass(frozen=True, slots=True)
class DemoSetup:
    """A prepared demo directory: the keys to print and what the import did."""

    site: Site
    write_key: str
    admin_key: str | None
    admin_key_origin: AdminKeyOrigin
    credentials_path: Path
    import_record: ImportRecord
    imported_now: bool


def prepare_demo(
    directory: DataDir,
    site: Site,
    *,
    admin_key_from_environment: str | None,
    progress: Callable[[int], None] | None = None,
) -> DemoSetup:
    """Install the site's plan, create the ``demo`` source and admin key, and import once."""
    credentials_path = directory.root / CREDENTIALS_FILE
    credentials = DemoCredentials.load(credentials_path)
    if credentials is not None and credentials.site != site.name:
        raise InvalidInput(
            f"{directory.root} contains the {credentials.site} demo; pass --site "
            f"{credentials.site} or use another --data-dir for {site.name}",
            code="demo_site_mismatch",
        )
    if directory.is_locked("serve"):
        raise DirectoryBusy(
            f"a headstart server already runs on {directory.root}; stop it or use another "
            "--data-dir"
        )

    plan = directory.install_plan(site.plan_path())
    conn = connect(directory.log_path)
    try:
        source, write_key = _demo_source(SourceRegistry(conn), credentials, credentials_path)
        admin_key, origin = _admin_key(AdminKey(conn), credentials, admin_key_from_environment)
    finally:
        conn.close()
    DemoCredentials(site.name, source.source_id, write_key, admin_key).save(credentials_path)

    record_path = directory.root / IMPORT_RECORD_FILE
    record = ImportRecord.load(record_path)
    imported_now = record is None or record.source_id != source.source_id
    if record is None or record.source_id != source.source_id:
        record = _import(directory, site, source, plan, progress)
        record.save(record_path)
    return DemoSetup(site, write_key, admin_key, origin, credentials_path, record, imported_now)


def _demo_source(
    registry: SourceRegistry, credentials: DemoCredentials | None, path: Path
) -> tuple[Source, str]:
    """Return the ``demo`` source and its write key, creating the source on first start."""
    try:
        source = registry.get(SOURCE_NAME)
    except NotFound:
        return registry.add(SOURCE_NAME)
    if credentials is not None:
        try:
            if registry.authenticate(credentials.write_key).source_id == source.source_id:
                return source, credentials.write_key
        except Unauthorized as exc:
            logger.warning("the write key in %s is not usable: %s", path, exc.message)
    raise InvalidInput(
        f"the source {SOURCE_NAME!r} exists, but its write key in {path} is missing, wrong or "
        "revoked; start the demo with a new --data-dir, or delete this data directory",
        code="demo_credentials_missing",
    )


def _admin_key(
    admin: AdminKey, credentials: DemoCredentials | None, from_environment: str | None
) -> tuple[str | None, AdminKeyOrigin]:
    """Return the admin key to print (None when it is not known here) and where it came from."""
    if from_environment:
        admin.ensure(from_environment)
        return None, "environment"
    generated = admin.ensure(None)
    if generated is not None:
        return generated, "generated"
    stored = credentials.admin_key if credentials is not None else None
    if stored is None:
        return None, "unknown"
    try:
        admin.check(stored)
    except Unauthorized:
        return None, "unknown"
    return stored, "stored"


def _import(
    directory: DataDir,
    site: Site,
    source: Source,
    plan: Plan,
    progress: Callable[[int], None] | None,
) -> ImportRecord:
    export = export_site(site)
    ctx = IngestContext(
        source_id=source.source_id,
        received_at=SystemClock().now_us(),
        historical=True,
        blocklist=plan.identity.blocked(),
    )
    log = SQLiteEventLog(directory.log_path)
    try:
        report = import_messages(log, enumerate(export.messages, start=1), ctx, progress)
    finally:
        log.close()
    for line, code, message in report.rejected[:20]:
        logger.warning("demo message %d rejected: %s: %s", line, code, message)
    return ImportRecord(
        site=site.name,
        source_id=source.source_id,
        finished_at=to_iso(SystemClock().now_us()) or "",
        lines=report.lines,
        accepted=report.accepted,
        duplicates=report.duplicates,
        rejected=len(report.rejected),
        bulk_reawards=export.stats.bulk_reawards,
        skipped_rows=dict(export.stats.skipped),
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            f"{path} is not valid JSON ({exc}); delete it and the data directory, then start "
            "the demo again"
        ) from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} does not contain a JSON object; delete it and start again")
    return data
