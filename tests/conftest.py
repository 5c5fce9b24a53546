"""Shared fixtures: data directories with a plan and a source, and real `headstart serve` processes.

A server runs as a subprocess on a free 127.0.0.1 port, in its own session so that stopping it
also reaches its processor child. Its stdout and stderr go to a file beside the data directory,
and a failed start shows that output.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from headstart.datadir import DataDir
from headstart.sources import SourceRegistry
from headstart.sqlite import connect

ADMIN_KEY = "hs_admin_test_key"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
PROCESSED_TIMEOUT_S = 60.0

# The plan most tests use: sign-up, three milestones and an activation rule over two of them.
DEFAULT_PLAN = """\
version: 1
name: test plan
signup:
  event: Signed Up
milestones:
  - name: created_project
    event: Project Created
  - name: invited_teammate
    event: Teammate Invited
    min_count: 2
  - name: viewed_pricing
    event: Page Viewed
    where:
      name: Pricing
activation:
  milestones: [created_project, invited_teammate]
  within_days: 14
"""


@dataclass
class HeadstartDir:
    """A data directory prepared for a server: plan installed, sources created, admin key."""

    root: Path
    admin_key: str
    write_keys: dict[str, str] = field(default_factory=dict)

    @property
    def write_key(self) -> str:
        """The write key of the first source, named ``web`` by ``make_data_dir``."""
        return next(iter(self.write_keys.values()))

    @property
    def log_path(self) -> Path:
        return self.root / "log.sqlite"

    @property
    def state_path(self) -> Path:
        return self.root / "state.sqlite"

    def add_source(self, name: str, *, historical: bool = False) -> str:
        """Create a source directly in log.sqlite and return its write key."""
        conn = connect(self.log_path)
        try:
            _, key = SourceRegistry(conn).add(name, historical=historical)
        finally:
            conn.close()
        self.write_keys[name] = key
        return key


def make_data_dir(
    root: Path, *, plan: str | None = DEFAULT_PLAN, admin_key: str = ADMIN_KEY
) -> HeadstartDir:
    """Create a data directory at ``root`` with ``plan`` installed and one source, ``web``."""
    directory = DataDir.create(root)
    if plan is not None:
        plan_file = root.parent / f"{root.name}-plan.yaml"
        plan_file.write_text(plan, encoding="utf-8")
        directory.install_plan(plan_file)
    prepared = HeadstartDir(root=directory.root, admin_key=admin_key)
    prepared.add_source("web")
    return prepared


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def headstart_command(*args: str) -> list[str]:
    """Return the argv that runs the ``headstart`` CLI with this interpreter."""
    return [sys.executable, "-m", "headstart.cli.main", *args]


def run_cli(*args: str, admin_key: str = ADMIN_KEY) -> subprocess.CompletedProcess[str]:
    """Run the ``headstart`` CLI to completion and return its result; it must exit with 0."""
    env = {**os.environ, "HEADSTART_ADMIN_KEY": admin_key}
    result = subprocess.run(
        headstart_command(*args), capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, (
        f"headstart {' '.join(args)} exited with {result.returncode}:\n{result.stderr}"
    )
    return result


class HeadstartServer:
    """One ``headstart serve`` subprocess on a data directory."""

    def __init__(self, data: HeadstartDir, port: int | None = None):
        self.data = data
        self.port = port or free_port()
        self.output_path = data.root.parent / f"{data.root.name}-serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server is not started"
        return self.process.pid

    def start(self) -> HeadstartServer:
        """Start the server and wait until GET /health returns 200."""
        env = {**os.environ, "HEADSTART_ADMIN_KEY": self.data.admin_key}
        env.pop("HEADSTART_DATA_DIR", None)
        command = headstart_command(
            "serve",
            "--data-dir",
            str(self.data.root),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        )
        with self.output_path.open("ab") as output:
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(base_url=self.url, trust_env=False, timeout=5) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(
                        f"headstart serve exited with {self.process.returncode}:\n{self.output()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/health").status_code == 200:
                        return
                time.sleep(0.05)
        self.kill_group()
        raise RuntimeError(
            f"headstart serve did not return 200 on /health within {START_TIMEOUT_S} s:\n"
            f"{self.output()}"
        )

    def stop(self) -> int | None:
        """Send SIGTERM, wait for the server to exit, then SIGKILL what is left of its group.

        The whole group is killed at once when the server does not exit within STOP_TIMEOUT_S.
        Returns the exit status, or None when the server was not running.
        """
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill_group()
                process.wait()
        self.kill_group()
        self.process = None
        return process.returncode

    def kill(self) -> None:
        """SIGKILL the server process alone, as a crash would; its processor is left to notice."""
        process = self.process
        assert process is not None, "the server is not started"
        process.kill()
        process.wait()

    def kill_group(self) -> None:
        """SIGKILL whatever is left of the server's process group, orphaned processor included."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def processor_pids(self) -> list[int]:
        """Return the pids of the server's running processor child processes."""
        return self.worker_pids("headstart.processor.worker")

    def dispatcher_pids(self) -> list[int]:
        """Return the pids of the server's running dispatcher child processes."""
        return self.worker_pids("headstart.delivery.worker")

    def worker_pids(self, module: str) -> list[int]:
        """Return the pids of running children started as ``python -m module``."""
        return [
            pid for pid in child_pids(self.pid) if is_running(pid) and module in command_line(pid)
        ]

    def output(self) -> str:
        if not self.output_path.exists():
            return ""
        return self.output_path.read_text(encoding="utf-8", errors="replace")[-20_000:]

    def client(self, **kwargs: Any) -> httpx.Client:
        """Return an HTTP client for this server that never follows redirects."""
        options: dict[str, Any] = {"timeout": 60.0, "follow_redirects": False, "trust_env": False}
        options.update(kwargs)
        return httpx.Client(base_url=self.url, **options)

    def admin_client(self) -> httpx.Client:
        return self.client(headers={"Authorization": f"Bearer {self.data.admin_key}"})


def child_pids(pid: int) -> list[int]:
    """Return the pids of the direct children of ``pid``, read from /proc (Linux)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children.extend(int(child) for child in (task / "children").read_text().split())
    return children


def command_line(pid: int) -> list[str]:
    """Return the argv of ``pid`` read from /proc (Linux), or [] once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode("utf-8", "replace").split("\0")


def is_running(pid: int) -> bool:
    """Return whether ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def wait_until(condition: Any, timeout_s: float, message: str) -> None:
    """Poll ``condition()`` every 20 ms until it is true; fail with ``message`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s} s: {message}")
        time.sleep(0.02)


def wait_until_processed(admin: httpx.Client, timeout_s: float = PROCESSED_TIMEOUT_S) -> Any:
    """Wait until the processor has applied every logged event; return GET /api/status."""
    status: dict[str, Any] = {}

    def caught_up() -> bool:
        nonlocal status
        response = admin.get("/api/status")
        assert response.status_code == 200, response.text
        status = response.json()
        return bool(status["lag"] == 0)

    wait_until(caught_up, timeout_s, f"the processor did not catch up; last status {status}")
    return status


@pytest.fixture
def data_dir(tmp_path: Path) -> HeadstartDir:
    """A fresh data directory with the default plan and a source ``web``."""
    return make_data_dir(tmp_path / "data")


@pytest.fixture
def server(data_dir: HeadstartDir) -> Iterator[HeadstartServer]:
    """A running server on ``data_dir``, stopped after the test."""
    running = HeadstartServer(data_dir).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(server: HeadstartServer) -> Iterator[httpx.Client]:
    """An HTTP client for ``server`` (no authentication, no redirects)."""
    with server.client() as http:
        yield http


@pytest.fixture
def admin(server: HeadstartServer) -> Iterator[httpx.Client]:
    """An HTTP client for ``server`` that sends the admin key."""
    with server.admin_client() as http:
        yield http
