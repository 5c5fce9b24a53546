"""The layout of a data directory and the locks that decide who owns it.

- ``log.sqlite``: the event log, sources and settings. The source of truth.
- ``state.sqlite``: derived state (identity graph, persons, onboarding), rebuilt from the log.
- ``plan.yaml``: the installed onboarding plan.
- ``server.json``: address and pid of the running ``headstart serve``.
- ``serve.lock`` / ``processor.lock``: one server and one processor per directory.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from headstart.errors import HeadstartError, NotFound
from headstart.plan.load import load_plan
from headstart.plan.model import Plan


@dataclass(frozen=True)
class DataDir:
    root: Path

    @classmethod
    def create(cls, root: Path | str) -> DataDir:
        path = Path(root).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def existing(cls, root: Path | str) -> DataDir:
        """Return a data directory that has an event log, a state or a plan. Commands that read
        use it, so a mistyped ``--data-dir`` fails instead of creating an empty directory."""
        path = Path(root).expanduser().resolve()
        directory = cls(path)
        files = (directory.log_path, directory.state_path, directory.plan_path)
        if not any(file.is_file() for file in files):
            raise NotFound(
                f"{path} is not a headstart data directory (no log.sqlite, state.sqlite or "
                "plan.yaml); "
                "check --data-dir or HEADSTART_DATA_DIR, or start one with "
                "`headstart plan apply FILE -d DIR`"
            )
        return directory

    @property
    def log_path(self) -> Path:
        return self.root / "log.sqlite"

    @property
    def state_path(self) -> Path:
        return self.root / "state.sqlite"

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.yaml"

    @property
    def server_file(self) -> Path:
        return self.root / "server.json"

    def load_plan(self) -> Plan | None:
        if not self.plan_path.exists():
            return None
        return load_plan(self.plan_path)

    def install_plan(self, source: Path) -> Plan:
        """Validate a plan file and copy it into the directory; the processor picks it up."""
        plan = load_plan(source)
        temporary = self.plan_path.with_suffix(".yaml.tmp")
        temporary.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
        os.replace(temporary, self.plan_path)
        return plan

    def lock(self, name: str) -> IO[bytes] | None:
        """Take the exclusive lock ``name``; return its open file, or None if someone holds it.

        The lock lasts as long as the returned file stays open, and the kernel drops it when
        the holding process dies, even by SIGKILL.
        """
        handle = open(self.root / f"{name}.lock", "wb")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle

    def is_locked(self, name: str) -> bool:
        handle = self.lock(name)
        if handle is None:
            return True
        handle.close()
        return False

    def write_server_file(self, url: str) -> None:
        self.server_file.write_bytes(orjson.dumps({"url": url, "pid": os.getpid()}))

    def running_server_url(self) -> str | None:
        if not self.is_locked("serve") or not self.server_file.exists():
            return None
        try:
            return str(orjson.loads(self.server_file.read_bytes())["url"])
        except (orjson.JSONDecodeError, KeyError):
            return None


class DirectoryBusy(HeadstartError):
    status = 409
    code = "directory_busy"
