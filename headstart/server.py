"""``headstart serve``: one process that owns a data directory.

It runs the HTTP API and the log writer in this process, and the processor and the dispatcher
(which sends outbox messages) in child processes, so ingest, processing and delivery run in
parallel.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

import uvicorn

from headstart.api.app import create_app
from headstart.datadir import DataDir, DirectoryBusy
from headstart.runtime import Runtime

logger = logging.getLogger(__name__)

RESTART_CHECK_SECONDS = 1.0


def serve(data_dir: DataDir, host: str, port: int, *, announce: bool = True) -> None:
    lock = data_dir.lock("serve")
    if lock is None:
        raise DirectoryBusy(
            f"another headstart serve owns {data_dir.root}; stop it or use another --data-dir"
        )
    runtime = Runtime.open(data_dir)
    new_admin_key = runtime.admin.ensure(os.environ.get("HEADSTART_ADMIN_KEY"))
    runtime.start()
    processor = ProcessorSupervisor(data_dir)
    processor.start()
    dispatcher = ProcessorSupervisor(data_dir, module=DISPATCHER_MODULE, role="dispatcher")
    dispatcher.start()
    url = f"http://{host}:{port}"
    data_dir.write_server_file(url)
    if announce:
        print(f"headstart is serving {data_dir.root} at {url}", flush=True)
        if new_admin_key:
            print(f"admin key (shown once, stored hashed): {new_admin_key}", flush=True)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler
    # that was installed before it started. With the default handler that kills the process
    # before the cleanup below runs, so SIGTERM ends in SystemExit(0) instead.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.run(
            create_app(runtime),
            http="httptools",
            loop="uvloop",
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
        )
    finally:
        dispatcher.stop()
        processor.stop()
        runtime.close()
        data_dir.server_file.unlink(missing_ok=True)
        lock.close()


def _exit_cleanly(signum: int, frame: object) -> None:
    logger.info("received signal %d; stopping", signum)
    raise SystemExit(0)


PROCESSOR_MODULE = "headstart.processor.worker"
DISPATCHER_MODULE = "headstart.delivery.worker"


class ProcessorSupervisor:
    """Runs a worker child process (by default the processor) and restarts it if it exits."""

    def __init__(
        self, data_dir: DataDir, *, module: str = PROCESSOR_MODULE, role: str = "processor"
    ):
        self.data_dir = data_dir
        self.module = module
        self.role = role
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"{role}-supervisor", daemon=True)

    def start(self) -> None:
        self._process = self._spawn()
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        process = self._process
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            self.module,
            "--data-dir",
            str(self.data_dir.root),
            "--parent-pid",
            str(os.getpid()),
        ]
        logger.info("starting %s: %s", self.role, " ".join(command))
        return subprocess.Popen(command)

    def _watch(self) -> None:
        while not self._stopping.wait(RESTART_CHECK_SECONDS):
            process = self._process
            if process is None or process.poll() is None:
                continue
            if self._stopping.is_set():
                return
            logger.error("%s exited with status %s; restarting it", self.role, process.returncode)
            self._process = self._spawn()
