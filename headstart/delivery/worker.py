"""The dispatcher as a long-running process beside ``headstart serve``.

It holds the ``dispatcher`` lock of the data directory, rebuilds its channels when
``plan.yaml`` changes, and exits when its parent server is gone. On SIGTERM it stops claiming
and waits for the sends in flight before it exits.
"""

from __future__ import annotations

import logging
import os

from headstart.channels.base import ChannelContext
from headstart.datadir import DataDir
from headstart.delivery.channelset import ChannelSet
from headstart.delivery.dispatcher import Dispatcher
from headstart.delivery.outbox import OutboxStore
from headstart.errors import PlanError
from headstart.plan.model import Plan
from headstart.timeutil import SystemClock
from headstart.workerprocess import WorkerProcess, argument_parser, configure_logging

logger = logging.getLogger(__name__)

# How long the loop waits when nothing is due; bounds the delay of a newly enqueued row.
POLL_SECONDS = 0.02
STOP_TIMEOUT_SECONDS = 20.0


def run(
    data_dir: DataDir, parent_pid: int | None, *, max_in_flight: int = 1000, threads: int = 16
) -> None:
    worker = WorkerProcess(data_dir, "dispatcher", parent_pid)
    if not worker.start():
        return
    clock = SystemClock()
    context = ChannelContext(data_dir.state_path, clock, dict(os.environ))
    watcher = PlanWatcher(data_dir)
    _, plan = watcher.changed()
    dispatcher = Dispatcher(
        OutboxStore(data_dir.state_path),
        ChannelSet.from_plan(plan, context),
        clock,
        max_in_flight=max_in_flight,
        threads=threads,
    )
    dispatcher.recover()
    logger.info("dispatcher started for %s", data_dir.root)

    while worker.running():
        if worker.plan_check_due():
            changed, plan = watcher.changed()
            if changed:
                logger.info("plan changed; rebuilding channels")
                dispatcher.replace_channels(ChannelSet.from_plan(plan, context))
        dispatcher.step(POLL_SECONDS)
    dispatcher.close(STOP_TIMEOUT_SECONDS)
    logger.info(
        "dispatcher stopped: %d sent, %d failed attempts, %d dead",
        dispatcher.sent,
        dispatcher.failed,
        dispatcher.dead,
    )
    worker.close()


class PlanWatcher:
    """Reloads ``plan.yaml`` when its modification time or size changes."""

    def __init__(self, data_dir: DataDir):
        self.data_dir = data_dir
        self._signature: tuple[float, int] | None = None

    def changed(self) -> tuple[bool, Plan | None]:
        """Return (True, plan) after a change; an invalid new plan counts as no change."""
        path = self.data_dir.plan_path
        try:
            stat = path.stat()
            signature: tuple[float, int] | None = (stat.st_mtime, stat.st_size)
        except FileNotFoundError:
            signature = None
        if signature == self._signature:
            return False, None
        self._signature = signature
        if signature is None:
            return True, None
        try:
            return True, self.data_dir.load_plan()
        except PlanError as exc:
            logger.error("plan.yaml is invalid, keeping the previous channels:\n%s", exc)
            return False, None


def main() -> None:
    parser = argument_parser("Run the headstart dispatcher (outbox sender) for a data directory.")
    parser.add_argument(
        "--max-in-flight", type=int, default=1000, help="Claimed rows not yet recorded, at most."
    )
    parser.add_argument("--threads", type=int, default=16, help="Sends running at once.")
    args = parser.parse_args()
    configure_logging()
    run(
        DataDir.create(args.data_dir),
        args.parent_pid,
        max_in_flight=args.max_in_flight,
        threads=args.threads,
    )


if __name__ == "__main__":
    main()
