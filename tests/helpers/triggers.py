"""A real log, state store and processor with trigger rules and a manual clock.

``TriggerWorld`` appends Segment messages through the ingest normalization, runs the processor
until the log and the due timers are worked off, and reads back outbox rows, decisions and
enrollments. ``restart`` opens a new processor on the same files, as a restarted server would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from headstart.ingest.normalize import IngestContext, LogRecord, normalize
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.plan.load import parse_plan
from headstart.plan.model import Plan
from headstart.processor.processor import Processor
from headstart.state.store import StateStore
from headstart.timeutil import ManualClock, parse_iso
from tests.helpers.pipeline import SOURCE_ID

# Sign-up, three milestones and the four built-in channel types; tests append `triggers:`.
BASE_PLAN = """\
version: 1
signup:
  event: Signed Up
milestones:
  - name: created_project
    event: Project Created
  - name: invited_team
    event: Teammate Invited
  - name: viewed_report
    event: Report Viewed
activation:
  milestones: [created_project, invited_team]
  within_days: 14
channels:
  email:
    type: smtp
    host: 127.0.0.1
    from: hello@example.com
    security: none
  webhook:
    type: webhook
    secret_env: HOOK_SECRET
    destinations:
      crm: {url: "http://127.0.0.1:9/hook"}
  in_app:
    type: in_app
    identity_secret_env: INAPP_SECRET
  push:
    type: web_push
    vapid_private_key_env: VAPID_KEY
    subject: "mailto:ops@example.com"
"""


# Events without a timestamp are received at this time; any test date before it is valid.
RECEIVED_AT = parse_iso("2030-01-01T00:00:00Z")


def to_record(raw: dict[str, Any], received_at: int | None = None) -> LogRecord:
    """Log ``raw`` as received when it happened (a live event), or at ``received_at``."""
    if received_at is None:
        stamp = raw.get("timestamp")
        received_at = parse_iso(stamp) if isinstance(stamp, str) else RECEIVED_AT
    ctx = IngestContext(source_id=SOURCE_ID, received_at=received_at, historical=True)
    return normalize(raw, None, ctx)


def plan_with(triggers: str) -> Plan:
    """Return the base plan with ``triggers`` (YAML starting at ``triggers:``) appended."""
    return parse_plan(BASE_PLAN + triggers)


def at(text: str) -> int:
    """Return the UTC microseconds of an ISO-8601 time."""
    return parse_iso(text)


@dataclass(frozen=True)
class OutboxRow:
    key: str
    person_id: str
    rule: str
    step: str
    channel: str
    not_before: int
    payload: dict[str, Any]


@dataclass(frozen=True)
class DecisionRow:
    rule: str
    kind: str
    step: str | None
    reason: str
    person_id: str


class TriggerWorld:
    """Events in, outbox rows and decisions out, with a clock the test moves."""

    def __init__(self, root: Path, plan: Plan, start: int):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.plan = plan
        self.clock = ManualClock(start)
        self._open()

    def _open(self) -> None:
        self.log = SQLiteEventLog(self.root / "log.sqlite")
        self.store = StateStore(self.root / "state.sqlite")
        self.processor = Processor(self.log, self.store, self.plan, clock=self.clock)
        self.processor.use_plan(self.plan)

    def restart(self, plan: Plan | None = None) -> None:
        """Close everything and open a new processor on the same files (optionally a new plan)."""
        self.close()
        if plan is not None:
            self.plan = plan
        self._open()

    def close(self) -> None:
        self.log.close()
        self.store.close()

    def append(self, messages: Iterable[dict[str, Any]]) -> None:
        self.log.append([to_record(raw) for raw in messages])

    def send(self, *messages: dict[str, Any]) -> None:
        """Append messages and process, without moving the clock."""
        self.append(messages)
        self.process()

    def advance(self, instant: int) -> None:
        """Move the clock to ``instant`` and process (due timers fire)."""
        self.clock.set(instant)
        self.process()

    def process(self) -> None:
        """Run until the log is applied, emitted events included, and no timer is due."""
        processor = self.processor
        for _ in range(100):
            applied = processor.catch_up()
            triggers = processor.triggers
            idle = triggers is None or not triggers.has_due()
            if applied == 0 and idle and self.log.head() == processor.offset:
                return
        raise AssertionError("the processor did not settle within 100 rounds")

    # ---- reading results ----------------------------------------------------------------

    def outbox(self) -> list[OutboxRow]:
        rows = self.store.conn.execute(
            "SELECT idempotency_key, person_id, rule, step, channel, not_before, payload"
            " FROM outbox ORDER BY outbox_id"
        ).fetchall()
        return [OutboxRow(*row[:6], orjson.loads(row[6])) for row in rows]

    def sends(self) -> list[tuple[str, str, int]]:
        """Return (rule, step, not_before) of every outbox row, in insertion order."""
        return [(row.rule, row.step, row.not_before) for row in self.outbox()]

    def decisions(self, kind: str | None = None) -> list[DecisionRow]:
        rows = self.store.conn.execute(
            "SELECT rule, kind, step, reason, person_id FROM decisions ORDER BY decision_id"
        ).fetchall()
        found = [DecisionRow(*row) for row in rows]
        return [row for row in found if kind is None or row.kind == kind]

    def kinds(self) -> list[str]:
        return [row.kind for row in self.decisions()]

    def enrollments(self) -> list[tuple[str, str, str]]:
        """Return (rule, key, status) of every enrollment, oldest first."""
        rows = self.store.conn.execute(
            "SELECT rule, key, status FROM enrollments ORDER BY enrollment_id"
        ).fetchall()
        return [(str(rule), str(key), str(status)) for rule, key, status in rows]

    def timers(self) -> list[tuple[str, int]]:
        rows = self.store.conn.execute("SELECT kind, due FROM timers ORDER BY due").fetchall()
        return [(str(kind), int(due)) for kind, due in rows]

    def person_id(self, user_id: str) -> str:
        person_id = self.store.find_person_id(user_id)
        assert person_id is not None, f"no person for {user_id!r}"
        return person_id
