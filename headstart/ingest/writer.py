"""Group commit: many requests' events go to the log in one transaction and one fsync.

Request handlers submit their records and wait on a future; one writer thread drains the
queue, appends everything it found in a single transaction, and resolves each future only
after the commit returned. That keeps "200 means durable" while paying one fsync per group
instead of one per request.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from headstart.errors import Overloaded
from headstart.ingest.normalize import LogRecord
from headstart.log.base import AppendResult, EventLog

logger = logging.getLogger(__name__)

_Item = tuple[Sequence[LogRecord], "Future[AppendResult]"]


class GroupCommitWriter:
    def __init__(
        self, log: EventLog, *, max_pending_events: int = 200_000, max_group_events: int = 50_000
    ):
        self.log = log
        self.max_pending_events = max_pending_events
        self.max_group_events = max_group_events
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._stopped = False

    def start(self) -> None:
        self._thread.start()
        logger.info("log writer started")

    def stop(self) -> None:
        """Commit what is queued, then stop the thread."""
        if self._stopped:
            return
        self._stopped = True
        self._queue.put(None)
        self._thread.join()
        logger.info("log writer stopped")

    def submit(self, records: Sequence[LogRecord]) -> Future[AppendResult]:
        future: Future[AppendResult] = Future()
        with self._lock:
            if self._stopped:
                raise Overloaded("the server is shutting down; retry shortly", retry_after=2)
            if self._pending + len(records) > self.max_pending_events:
                raise Overloaded(
                    f"{self._pending} events are waiting to be written; retry shortly",
                    retry_after=1,
                )
            self._pending += len(records)
        self._queue.put((records, future))
        return future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            size = len(first[0])
            stop = False
            while size < self.max_group_events:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
                size += len(item[0])
            self._commit(group, size)
            if stop:
                return

    def _commit(self, group: list[_Item], size: int) -> None:
        try:
            results = self.log.append_many([records for records, _ in group])
        except Exception as exc:
            logger.exception("log append failed for %d events in %d requests", size, len(group))
            for _, future in group:
                future.set_exception(
                    Overloaded(f"the event log could not be written: {exc}", retry_after=5)
                )
        else:
            for (_, future), result in zip(group, results, strict=True):
                future.set_result(result)
        finally:
            with self._lock:
                self._pending -= size
