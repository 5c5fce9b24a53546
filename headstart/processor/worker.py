"""The processor as a long-running process beside ``headstart serve``.

It polls the log for new events, applies them, and reloads the plan when ``plan.yaml``
changes (a changed plan rebuilds state from the log). It exits when its parent server is
gone, so a killed server never leaves a processor behind.
"""

from __future__ import annotations

import logging
import time

from headstart.datadir import DataDir
from headstart.errors import PlanError
from headstart.identity.admin import Identifier, Separations
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.plan.model import Plan
from headstart.processor.processor import Processor
from headstart.sqlite import connect
from headstart.state.store import StateStore
from headstart.workerprocess import WorkerProcess, argument_parser, configure_logging

logger = logging.getLogger(__name__)

IDLE_SLEEP_SECONDS = 0.005


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
    _, processor = _open(data_dir)
    return processor


def run(data_dir: DataDir, parent_pid: int | None) -> None:
    worker = WorkerProcess(data_dir, "processor", parent_pid)
    if not worker.start():
        return
    watcher, processor = _open(data_dir)
    logger.info("processor started at log offset %d", processor.offset)

    while worker.running():
        if worker.plan_check_due() and watcher.poll():
            processor.use_plan(watcher.plan, watcher.pairs)
        if processor.run_once() == 0:
            time.sleep(IDLE_SLEEP_SECONDS)
    logger.info("processor stopped at log offset %d", processor.offset)
    worker.close()


def _open(data_dir: DataDir) -> tuple[ConfigWatcher, Processor]:
    watcher = ConfigWatcher(data_dir)
    watcher.poll()
    processor = Processor(SQLiteEventLog(data_dir.log_path), StateStore(data_dir.state_path), None)
    processor.use_plan(watcher.plan, watcher.pairs)
    return watcher, processor


def main() -> None:
    parser = argument_parser("Run the headstart processor for a data directory.")
    args = parser.parse_args()
    configure_logging()
    run(DataDir.create(args.data_dir), args.parent_pid)


if __name__ == "__main__":
    main()
