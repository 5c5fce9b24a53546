"""The objects one server process shares: log, sources, state reader, writer, plan."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from headstart.analytics.warehouse import Warehouse
from headstart.datadir import DataDir
from headstart.errors import InvalidInput, PlanError
from headstart.ingest.normalize import Limits
from headstart.ingest.service import IngestService
from headstart.ingest.writer import GroupCommitWriter
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.plan.model import DEFAULT_BLOCKLIST, Plan
from headstart.sources import AdminKey, SourceRegistry
from headstart.sqlite import connect
from headstart.state.store import StateStore
from headstart.timeutil import Clock, SystemClock

logger = logging.getLogger(__name__)

MAX_PENDING_ENV = "HEADSTART_MAX_PENDING_EVENTS"
DEFAULT_MAX_PENDING_EVENTS = 200_000


def max_pending_events() -> int:
    """Return how many events may wait for the log writer before ingest answers 503.

    Read from HEADSTART_MAX_PENDING_EVENTS. At roughly 1 KB per queued event (an estimate),
    the default keeps the queue near 200 MB.
    """
    text = os.environ.get(MAX_PENDING_ENV)
    if text is None:
        return DEFAULT_MAX_PENDING_EVENTS
    try:
        value = int(text)
    except ValueError:
        raise InvalidInput(
            f"{MAX_PENDING_ENV}={text!r} is not a whole number; set a count such as 200000"
        ) from None
    if value < 1:
        raise InvalidInput(f"{MAX_PENDING_ENV}={value} must be at least 1")
    return value


@dataclass
class Runtime:
    data_dir: DataDir
    log: SQLiteEventLog
    sources: SourceRegistry
    admin: AdminKey
    state: StateStore
    writer: GroupCommitWriter
    ingest: IngestService
    clock: Clock
    _plan: Plan | None = None
    _plan_signature: tuple[float, int] | None = field(default=None)
    _warehouse: Warehouse | None = field(default=None)
    _warehouse_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(
        cls, data_dir: DataDir, *, clock: Clock | None = None, limits: Limits | None = None
    ) -> Runtime:
        clock = clock or SystemClock()
        log = SQLiteEventLog(data_dir.log_path)
        control = connect(data_dir.log_path, check_same_thread=False)
        sources = SourceRegistry(control)
        admin = AdminKey(connect(data_dir.log_path, check_same_thread=False))
        state = StateStore(data_dir.state_path, check_same_thread=False)
        writer = GroupCommitWriter(log, max_pending_events=max_pending_events())
        runtime = cls(
            data_dir,
            log,
            sources,
            admin,
            state,
            writer,
            IngestService(sources, writer, clock, frozenset(DEFAULT_BLOCKLIST), limits),
            clock,
        )
        runtime.ingest.blocklist = runtime.blocklist()
        return runtime

    def plan(self) -> Plan | None:
        """Return the installed plan, reloading it when the file changed."""
        path = self.data_dir.plan_path
        signature = (path.stat().st_mtime, path.stat().st_size) if path.exists() else None
        if signature != self._plan_signature:
            try:
                self._plan = self.data_dir.load_plan()
            except PlanError as exc:
                logger.error("plan.yaml is invalid, keeping the previous plan:\n%s", exc)
            self._plan_signature = signature
            self.ingest.blocklist = self.blocklist()
        return self._plan

    def blocklist(self) -> frozenset[str]:
        plan = self._plan
        return plan.identity.blocked() if plan is not None else frozenset(DEFAULT_BLOCKLIST)

    def wait_for_processor(self, timeout_s: float = 10.0) -> bool:
        """Wait until the processor has applied every event logged before this call."""
        target = self.log.head()
        deadline = time.monotonic() + timeout_s
        while self.state.offset() < target:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def warehouse(self) -> Warehouse:
        """Return the analytics warehouse of this server, opened on first use.

        The server holds ``analytics.duckdb`` for writing as long as it runs; callers sync it
        before they query.
        """
        with self._warehouse_lock:
            if self._warehouse is None:
                self._warehouse = Warehouse.open(self.data_dir)
            return self._warehouse

    def start(self) -> None:
        self.plan()
        self.writer.start()

    def close(self) -> None:
        self.writer.stop()
        self.log.close()
        self.state.close()
        if self._warehouse is not None:
            self._warehouse.close()
