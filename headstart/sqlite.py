"""SQLite connections with the settings headstart relies on."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect(
    path: Path, *, durable: bool = True, check_same_thread: bool = True
) -> sqlite3.Connection:
    """Open a SQLite file in WAL mode with explicit transactions.

    ``durable`` sets ``synchronous=FULL``, so a commit is on disk before it returns. Derived
    state that can be rebuilt from the log uses NORMAL, which survives a process crash
    (the case that matters for exactly-once processing) but not a power cut.
    """
    conn = sqlite3.connect(
        path, isolation_level=None, timeout=30.0, check_same_thread=check_same_thread
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    # 64 MiB of page cache (negative means KiB) and memory-mapped reads: the identity and
    # person tables are read at random, and the default 2 MiB cache makes every lookup a syscall.
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA mmap_size=268435456")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn
