"""The append-only event log: the source of truth that every other table is derived from."""

from headstart.log.base import AppendResult, EventLog
from headstart.log.sqlite_log import SQLiteEventLog

__all__ = ["AppendResult", "EventLog", "SQLiteEventLog"]
