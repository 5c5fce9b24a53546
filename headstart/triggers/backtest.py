"""Replay history through one rule to see who it would have messaged, when and with what.

The log is read, never written. State is rebuilt from the start of the log into a scratch
``state.sqlite`` in a temporary directory, so identities and profiles are what they were,
but the rule is evaluated only for events inside [since, until). The clock follows event
timestamps: timers fire between events at their due times, and the last ones up to
``until``. Nothing is sent and nothing is appended to the log; emitted events and trait
changes are listed instead. Other rules do not run, so their sends do not count toward this
rule's frequency caps.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from headstart.errors import InvalidInput, NotFound
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.plan.model import Plan
from headstart.processor.processor import Processor
from headstart.state.store import StateStore
from headstart.timeutil import ManualClock, to_iso
from headstart.triggers.engine import TriggerOptions

BATCH_SIZE = 20_000
CONTENT_PREVIEW = ("subject", "title", "text", "body")


def backtest(
    log_path: Path,
    plan: Plan,
    rule_name: str,
    since: int,
    until: int,
    *,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Return what ``rule_name`` would have done between ``since`` and ``until``."""
    if since >= until:
        raise InvalidInput(f"--since {to_iso(since)} is not before --until {to_iso(until)}")
    only = _only_rule(plan, rule_name)
    with tempfile.TemporaryDirectory(prefix="headstart-backtest-") as scratch:
        log = SQLiteEventLog(log_path)
        store = StateStore(Path(scratch) / "state.sqlite")
        try:
            replayed = _replay(log, store, only, since, until, progress)
            return _report(store, rule_name, since, until, replayed)
        finally:
            log.close()
            store.close()


def _only_rule(plan: Plan, rule_name: str) -> Plan:
    triggers = plan.triggers
    names = [rule.name for rule in triggers.rules] if triggers is not None else []
    if triggers is None or rule_name not in names:
        known = ", ".join(names) or "the plan has no trigger rules"
        raise NotFound(
            f"no trigger rule named {rule_name!r}; known rules: {known}", code="rule_not_found"
        )
    rule = triggers.rule(rule_name).model_copy(update={"enabled": True})
    return plan.model_copy(update={"triggers": triggers.model_copy(update={"rules": [rule]})})


def _replay(
    log: SQLiteEventLog,
    store: StateStore,
    plan: Plan,
    since: int,
    until: int,
    progress: Callable[[int], None] | None,
) -> int:
    clock = ManualClock(0)
    options = TriggerOptions(event_time=True, since=since, until=until, sink=None)
    processor = Processor(
        log, store, plan, batch_size=BATCH_SIZE, clock=clock, trigger_options=options
    )
    total = 0
    while (applied := processor.run_once()) > 0:
        total += applied
        if progress is not None:
            progress(applied)
    engine = processor.triggers
    assert engine is not None
    with store.transaction():
        engine.advance_to(until)
        engine.flush(caught_up=True)
    return total


def _report(store: StateStore, rule: str, since: int, until: int, replayed: int) -> dict[str, Any]:
    conn = store.conn
    users = _user_ids(store)
    messages = [
        {
            "person_id": person_id,
            "user_id": users.get(person_id),
            "at": to_iso(not_before),
            "channel": channel,
            "step": step,
            "recipient": payload.get("recipient"),
            "template": payload.get("template"),
            "template_version": payload.get("template_version"),
            "content": {key: payload[key] for key in CONTENT_PREVIEW if key in payload},
        }
        for person_id, channel, step, not_before, payload in (
            (row[0], row[1], row[2], row[3], orjson.loads(row[4]))
            for row in conn.execute(
                "SELECT person_id, channel, step, not_before, payload FROM outbox"
                " ORDER BY not_before, outbox_id"
            )
        )
    ]
    not_sent = [
        {
            "person_id": person_id,
            "user_id": users.get(person_id),
            "at": to_iso(at),
            "step": step,
            "decision": kind,
            "reason": reason,
        }
        for person_id, at, step, kind, reason in conn.execute(
            "SELECT person_id, at, step, kind, reason FROM decisions"
            " WHERE kind IN ('suppressed', 'template_error', 'queued') ORDER BY decision_id"
        )
    ]
    emitted = [
        orjson.loads(body)
        for (body,) in conn.execute(
            "SELECT body FROM trigger_emits ORDER BY created_at, message_id"
        )
    ]
    counts = dict(conn.execute("SELECT kind, count(*) FROM decisions GROUP BY kind ORDER BY kind"))
    entered = conn.execute(
        "SELECT count(*), count(DISTINCT person_id) FROM enrollments WHERE entered_at IS NOT NULL"
    ).fetchone()
    return {
        "rule": rule,
        "since": to_iso(since),
        "until": to_iso(until),
        "events_replayed": replayed,
        "enrollments": int(entered[0]),
        "persons_entered": int(entered[1]),
        "messages": messages,
        "not_sent": not_sent,
        "emitted": emitted,
        "decisions": counts,
    }


def _user_ids(store: StateStore) -> dict[str, str | None]:
    return {
        str(person_id): user_id
        for person_id, user_id in store.conn.execute("SELECT person_id, user_id FROM persons")
    }
