"""The part every worker process beside ``headstart serve`` shares: lock, signals, parent check.

``headstart serve`` starts the processor and the dispatcher as child processes
(headstart.server). Each one holds its own lock of the data directory, stops its loop on
SIGTERM or SIGINT, and exits when its parent server is gone, so a killed server never leaves
a worker behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from pathlib import Path
from typing import IO

from headstart.datadir import DataDir

logger = logging.getLogger(__name__)

# A worker orphaned by a killed server notices within one loop round and releases its lock.
LOCK_WAIT_SECONDS = 30
LOCK_RETRY_SECONDS = 0.1
PLAN_CHECK_SECONDS = 1.0


class WorkerProcess:
    """One worker's lock and loop condition; ``role`` names the lock and the log lines."""

    def __init__(self, data_dir: DataDir, role: str, parent_pid: int | None):
        self.data_dir = data_dir
        self.role = role
        self.parent_pid = parent_pid
        self.stopping = False
        self._lock: IO[bytes] | None = None
        self._next_plan_check: float | None = None

    def start(self) -> bool:
        """Take the lock and install the signal handlers; return False when the lock is taken.

        Waits up to ``LOCK_WAIT_SECONDS`` for a previous worker to release the lock.
        """
        self._lock = self._wait_for_lock(LOCK_WAIT_SECONDS)
        if self._lock is None:
            logger.error(
                "another %s has owned %s for %d s; exiting",
                self.role,
                self.data_dir.root,
                LOCK_WAIT_SECONDS,
            )
            return False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        return True

    def running(self) -> bool:
        """True until a stop signal arrives or the parent server is gone."""
        if self.stopping:
            return False
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            logger.warning("server process %d is gone; %s exiting", self.parent_pid, self.role)
            return False
        return True

    def plan_check_due(self) -> bool:
        """True once every ``PLAN_CHECK_SECONDS``, when the worker should look for a new plan.

        The first call starts the interval, since the worker has just loaded its plan.
        """
        now = time.monotonic()
        if self._next_plan_check is None:
            self._next_plan_check = now + PLAN_CHECK_SECONDS
            return False
        if now < self._next_plan_check:
            return False
        self._next_plan_check = now + PLAN_CHECK_SECONDS
        return True

    def close(self) -> None:
        """Release the lock."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _wait_for_lock(self, seconds: float) -> IO[bytes] | None:
        deadline = time.monotonic() + seconds
        while True:
            lock = self.data_dir.lock(self.role)
            if lock is not None or time.monotonic() >= deadline:
                return lock
            time.sleep(LOCK_RETRY_SECONDS)


def argument_parser(description: str) -> argparse.ArgumentParser:
    """Return a parser with the options every worker takes: ``--data-dir``, ``--parent-pid``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    return parser


def configure_logging() -> None:
    """Log INFO and above to stderr with a timestamp, level and logger name."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
