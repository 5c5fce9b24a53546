"""Sources and their write keys, and the admin credential, stored beside the log.

Keys are stored as SHA-256 hashes, so a copy of the data directory does not leak them; only
the first characters are kept in clear to tell keys apart in listings.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass

from headstart.errors import InvalidInput, NotFound, Unauthorized
from headstart.timeutil import SystemClock

SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    source_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    historical INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

ADMIN_KEY_SETTING = "admin_key_hash"
# A revocation made by another process is seen by a running server within this many seconds.
CACHE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Source:
    source_id: str
    name: str
    key_prefix: str
    historical: bool
    created_at: int
    revoked_at: int | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class SourceRegistry:
    """Creates, lists, revokes and authenticates sources on the log database connection."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock | None = None):
        self._conn = conn
        self._lock = lock or threading.Lock()
        self._cache: dict[str, tuple[float, Source | None]] = {}
        with self._lock:
            self._conn.executescript(SCHEMA)

    def add(self, name: str, *, historical: bool = False) -> tuple[Source, str]:
        """Create a source and return it with its write key, which is shown only now."""
        name = name.strip()
        if not name:
            raise InvalidInput("source name is empty; pass a name such as 'web' or 'ios'")
        key = "hs_wk_" + secrets.token_urlsafe(24)
        source = Source(
            source_id="src_" + secrets.token_hex(8),
            name=name,
            key_prefix=key[:10],
            historical=historical,
            created_at=SystemClock().now_us(),
            revoked_at=None,
        )
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO sources (source_id, name, key_hash, key_prefix, historical,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        source.source_id,
                        name,
                        hash_key(key),
                        source.key_prefix,
                        int(historical),
                        source.created_at,
                    ),
                )
            except sqlite3.IntegrityError:
                raise InvalidInput(
                    f"a source named {name!r} already exists; choose another name",
                    code="source_exists",
                ) from None
        return source, key

    def list(self) -> list[Source]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT source_id, name, key_prefix, historical, created_at, revoked_at"
                " FROM sources ORDER BY created_at"
            ).fetchall()
        return [_source(row) for row in rows]

    def get(self, name: str) -> Source:
        for source in self.list():
            if source.name == name:
                return source
        raise NotFound(f"no source named {name!r}; `headstart sources list` shows them")

    def ensure(self, name: str, *, historical: bool) -> Source:
        """Return the source called ``name``, creating it (with a key nobody holds) if missing."""
        try:
            return self.get(name)
        except NotFound:
            return self.add(name, historical=historical)[0]

    def revoke(self, name: str) -> Source:
        source = self.get(name)
        with self._lock:
            self._conn.execute(
                "UPDATE sources SET revoked_at = ? WHERE source_id = ? AND revoked_at IS NULL",
                (SystemClock().now_us(), source.source_id),
            )
        self._cache.clear()
        return self.get(name)

    def authenticate(self, key: str) -> Source:
        """Return the active source whose write key is ``key``, or raise ``Unauthorized``."""
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            source = cached[1]
        else:
            with self._lock:
                row = self._conn.execute(
                    "SELECT source_id, name, key_prefix, historical, created_at, revoked_at"
                    " FROM sources WHERE key_hash = ?",
                    (digest,),
                ).fetchone()
            source = _source(row) if row else None
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, source)
        if source is None:
            raise Unauthorized(
                "unknown write key; check the key or create a source", code="invalid_write_key"
            )
        if source.revoked_at is not None:
            raise Unauthorized(
                f"the write key of source {source.name!r} was revoked", code="revoked_write_key"
            )
        return source


class AdminKey:
    """The admin credential: from HEADSTART_ADMIN_KEY when set, otherwise generated once."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock | None = None):
        self._conn = conn
        self._lock = lock or threading.Lock()
        with self._lock:
            self._conn.executescript(SCHEMA)

    def ensure(self, from_environment: str | None) -> str | None:
        """Set up the admin key hash; return a newly generated key, or None if none was made."""
        if from_environment:
            self._store(hash_key(from_environment))
            return None
        if self._stored() is not None:
            return None
        key = "hs_admin_" + secrets.token_urlsafe(24)
        self._store(hash_key(key))
        return key

    def rotate(self) -> str:
        key = "hs_admin_" + secrets.token_urlsafe(24)
        self._store(hash_key(key))
        return key

    def check(self, presented: str | None) -> None:
        stored = self._stored()
        if not presented or stored is None or not hmac.compare_digest(hash_key(presented), stored):
            raise Unauthorized(
                "missing or wrong admin key; send it as 'Authorization: Bearer KEY'",
                code="invalid_admin_key",
            )

    def _stored(self) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM settings WHERE key = ?", (ADMIN_KEY_SETTING,)
            ).fetchone()
        return str(row[0]) if row else None

    def _store(self, digest: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (ADMIN_KEY_SETTING, digest),
            )


def _source(row: tuple[object, ...]) -> Source:
    source_id, name, prefix, historical, created_at, revoked_at = row
    return Source(
        source_id=str(source_id),
        name=str(name),
        key_prefix=str(prefix),
        historical=bool(historical),
        created_at=int(created_at),  # type: ignore[call-overload]
        revoked_at=None if revoked_at is None else int(revoked_at),  # type: ignore[call-overload]
    )
