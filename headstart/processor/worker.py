"""The processor as a long-running process beside ``headstart serve``.

It polls the log for new events, applies them, and reloads the plan when ``plan.yaml``
changes (a changed plan rebuilds state from the log). It exits when its parent server is
gone, so a killed server never leaves a processor behind.
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
from headstart.errors import PlanError
from headstart.identity.admin import Identifier, Separations
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.plan.model import Plan
from headstart.processor.processor import Processor
from headstart.sqlite import connect
from headstart.state.store import StateStore

logger = logging.getLogger(__name__)

IDLE_SLEEP_SECONDS = 0.005
PLAN_CHECK_SECONDS = 1.0
# A processor orphaned by a killed server notices within one poll and releases its lock.
LOCK_WAIT_SECONDS = 30


class ConfigWatcher:
    """Reloads ``plan.yaml`` when it changes, and the admin separations when one is added."""

    def __init__(self, data_dir: DataDir):
        self.data_dir = data_dir
        self.separations = Separations(connect(data_dir.log_path))
        self.plan: Plan | None = None
        self.pairs: list[tuple[Identifier, Identifier]] = []
        self._signature: tuple[float, int] | None = None
        self._separations_digest: str | None = None

    def poll(self) -> bool:
        """Reload what changed; return True when the plan or the separations changed."""
        plan_changed = self._poll_plan()
        digest = self.separations.digest()
        if digest == self._separations_digest:
            return plan_changed
        self._separations_digest = digest
        self.pairs = self.separations.pairs()
        return True

    def _poll_plan(self) -> bool:
        path = self.data_dir.plan_path
        signature = (path.stat().st_mtime, path.stat().st_size) if path.exists() else None
        if signature == self._signature:
            return False
        self._signature = signature
        if signature is None:
            self.plan = None
            return True
        try:
            self.plan = self.data_dir.load_plan()
        except PlanError as exc:
            logger.error("plan.yaml is invalid, keeping the previous plan:\n%s", exc)
            return False
        return True


def open_processor(data_dir: DataDir) -> Processor:
    """Open a processor on the directory with its current plan and separations applied."""
    watcher = ConfigWatcher(data_dir)
    watcher.poll()
    processor = Processor(SQLiteEventLog(data_dir.log_path), StateStore(data_dir.state_path), None)
    processor.use_plan(watcher.plan, watcher.pairs)
    return processor


def run(data_dir: DataDir, parent_pid: int | None) -> None:
    lock = _wait_for_lock(data_dir, LOCK_WAIT_SECONDS)
    if lock is None:
        logger.error(
            "another processor has owned %s for %d s; exiting", data_dir.root, LOCK_WAIT_SECONDS
        )
        return
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    watcher = ConfigWatcher(data_dir)
    watcher.poll()
    processor = Processor(SQLiteEventLog(data_dir.log_path), StateStore(data_dir.state_path), None)
    processor.use_plan(watcher.plan, watcher.pairs)
    logger.info("processor started at log offset %d", processor.offset)
    next_plan_check = time.monotonic() + PLAN_CHECK_SECONDS

    while not stopping:
        if parent_pid is not None and os.getppid() != parent_pid:
            logger.warning("server process %d is gone; processor exiting", parent_pid)
            break
        if time.monotonic() >= next_plan_check:
            next_plan_check = time.monotonic() + PLAN_CHECK_SECONDS
            if watcher.poll():
                processor.use_plan(watcher.plan, watcher.pairs)
        if processor.run_once() == 0:
            time.sleep(IDLE_SLEEP_SECONDS)
    logger.info("processor stopped at log offset %d", processor.offset)
    lock.close()


def _wait_for_lock(data_dir: DataDir, seconds: float) -> IO[bytes] | None:
    deadline = time.monotonic() + seconds
    while True:
        lock = data_dir.lock("processor")
        if lock is not None or time.monotonic() >= deadline:
            return lock
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Run the headstart processor for a data directory."
    )
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run(DataDir.create(args.data_dir), args.parent_pid)


if __name__ == "__main__":
    main()
