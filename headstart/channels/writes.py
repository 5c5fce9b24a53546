"""Write transactions on ``state.sqlite`` that are not starved by the processor.

The processor holds the write lock of ``state.sqlite`` for a whole batch and takes it again
soon after each commit. SQLite's default busy handler sleeps up to 100 ms between tries, so
another writer can keep missing the short gaps. These helpers set a 1 ms busy timeout and
retry every millisecond instead, so the dispatcher and the in-app API can take the lock while
the processor reads its next batch from the log.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

POLL_SECONDS = 0.001
TIMEOUT_SECONDS = 60.0


def prefer_polling(conn: sqlite3.Connection) -> None:
    """Make the connection's own busy wait short, so ``write_transaction`` does the waiting."""
    conn.execute("PRAGMA busy_timeout=1")


def _locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


@contextmanager
def write_transaction(
    conn: sqlite3.Connection, timeout_s: float = TIMEOUT_SECONDS
) -> Iterator[sqlite3.Connection]:
    """Run the block in a ``BEGIN IMMEDIATE`` transaction, retrying the begin while locked.

    Raises ``sqlite3.OperationalError`` when the lock stays taken for ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError as exc:
            if not _locked(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(POLL_SECONDS)
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
