"""From a send step to an outbox row: priorities, quiet hours, frequency caps, the in-app slot.

Sends decided at the same moment (by one event, or by timers due at the same instant) are
collected first and then placed in priority order, so when a cap leaves room for one message
the rule with the higher priority gets it. Ties go to the send proposed first.

- Quiet hours are checked at the send time in the person's zone. A rule delays the send to
  the end of the quiet period (``not_before``), skips it, or ignores quiet hours.
- A cap counts the person's outbox rows on the channel (all channels for ``"*"``) that are
  not dead: rolling caps those less than the window away from the send time, day caps those
  on the same local calendar day. Rules with ``ignore_caps`` are not checked, but their sends
  count toward the caps of others.
- At most one in-app message is open per person. Another in-app send waits in a queue until
  the open one is dismissed, completed or expires; the queue releases the highest priority
  first. Caps apply when the send is decided, not again when it is released.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from headstart.plan.triggers import Cap, Triggers, format_duration, local_time_parts
from headstart.timeutil import to_iso
from headstart.triggers.localtime import local_day_bounds, quiet_until, to_local
from headstart.triggers.tables import Decision, Enrollment, InAppSlot, TriggerTables


@dataclass(slots=True)
class SendIntent:
    """A message a rule wants to send, before priorities, quiet hours and caps decide."""

    key: str
    person_id: str
    rule: str
    step: str
    channel: str
    payload: dict[str, Any]
    # earliest send time, UTC microseconds
    at: int
    zone: ZoneInfo
    priority: int
    quiet_hours: str
    ignore_caps: bool
    enrollment: Enrollment | None
    seq: int | None
    # the person was created by the deciding event: no earlier outbox rows or in-app slots
    new_person: bool = False
    order: int = 0


@dataclass
class Outbox:
    """Places send intents into the outbox table, recording a decision for each."""

    tables: TriggerTables
    settings: Triggers
    candidates: list[SendIntent] = field(default_factory=list)
    # due times of the timers this object added, for the engine's next-due bookkeeping
    scheduled: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        quiet = self.settings.quiet_hours
        self._quiet: tuple[time, time] | None = None
        if quiet is not None:
            self._quiet = (time(*local_time_parts(quiet.start)), time(*local_time_parts(quiet.end)))
        self._counter = 0
        # persons given an outbox row or in-app slot in the current settle
        self._placed: set[str] = set()

    def propose(self, intent: SendIntent) -> None:
        self._counter += 1
        intent.order = self._counter
        self.candidates.append(intent)

    def discard(self) -> None:
        self.candidates.clear()

    def settle(self, now: int) -> None:
        """Place every proposed send, highest priority first."""
        if not self.candidates:
            return
        ordered = sorted(self.candidates, key=lambda intent: (-intent.priority, intent.order))
        self.candidates.clear()
        for intent in ordered:
            self._place(intent, now)
        self._placed.clear()

    # ---- placing one send ---------------------------------------------------------------

    def _place(self, intent: SendIntent, now: int) -> None:
        at = max(intent.at, now)
        delayed = ""
        quiet_end = self._quiet_end(intent, at)
        if quiet_end is not None:
            if intent.quiet_hours == "skip":
                self._decide(
                    intent,
                    now,
                    "suppressed",
                    f"{self._quiet_text(intent)}; the rule skips sends in quiet hours",
                )
                return
            delayed = f"; delayed by {self._quiet_text(intent)} until {to_iso(quiet_end)}"
            at = quiet_end
        if not intent.ignore_caps and not self._fresh(intent):
            reason = self._cap_reached(intent, at)
            if reason is not None:
                self._decide(intent, now, "suppressed", reason)
                return
        if intent.channel == self.settings.in_app.channel:
            self._place_in_app(intent, at, now, delayed)
            return
        self._enqueue(intent, intent.payload, at, now, delayed)

    def _enqueue(
        self, intent: SendIntent, payload: dict[str, Any], at: int, now: int, note: str
    ) -> None:
        self._placed.add(intent.person_id)
        outbox_id = self.tables.enqueue(
            key=intent.key,
            person_id=intent.person_id,
            rule=intent.rule,
            step=intent.step,
            channel=intent.channel,
            payload=orjson.dumps(payload).decode(),
            created_at=now,
            not_before=at,
        )
        if outbox_id is None:
            self._decide(intent, now, "duplicate", f"already enqueued under key {intent.key}")
            return
        detail = {
            "outbox_id": outbox_id,
            "channel": intent.channel,
            "not_before": to_iso(at),
            "template": payload.get("template"),
            "template_version": payload.get("template_version"),
            "idempotency_key": intent.key,
        }
        reason = f"{intent.channel} message enqueued for {to_iso(at)}{note}"
        self._decide(intent, now, "enqueued", reason, detail)

    # ---- quiet hours and caps -----------------------------------------------------------

    def _quiet_end(self, intent: SendIntent, at: int) -> int | None:
        quiet = self.settings.quiet_hours
        if self._quiet is None or quiet is None or intent.quiet_hours == "ignore":
            return None
        if quiet.channels is not None and intent.channel not in quiet.channels:
            return None
        return quiet_until(at, self._quiet[0], self._quiet[1], intent.zone)

    def _quiet_text(self, intent: SendIntent) -> str:
        quiet = self.settings.quiet_hours
        assert quiet is not None
        return f"quiet hours {quiet.start}-{quiet.end} in {intent.zone.key}"

    def _cap_reached(self, intent: SendIntent, at: int) -> str | None:
        for cap in self.settings.caps:
            if cap.channel not in ("*", intent.channel):
                continue
            channel = None if cap.channel == "*" else intent.channel
            if cap.per == "calendar_day":
                start, end = local_day_bounds(at, intent.zone)
                count = self.tables.count_sends(intent.person_id, channel, start - 1, end)
                window = f"calendar day {to_local(at, intent.zone).date()} in {intent.zone.key}"
            else:
                count = self.tables.count_sends(
                    intent.person_id, channel, at - cap.per, at + cap.per
                )
                window = f"{format_duration(cap.per)} window around {to_iso(at)}"
            if count >= cap.max:
                return (
                    f"frequency cap reached: {count} {_cap_scope(cap)} sends in the {window}"
                    f" (max {cap.max})"
                )
        return None

    # ---- the in-app slot ----------------------------------------------------------------

    def _place_in_app(self, intent: SendIntent, at: int, now: int, note: str) -> None:
        current = None if self._fresh(intent) else self.tables.open_slot(intent.person_id)
        if current is not None and current.idempotency_key == intent.key:
            self._decide(intent, now, "duplicate", f"already enqueued under key {intent.key}")
            return
        if current is not None and current.expires_at is not None and current.expires_at <= now:
            # Its expiry timer is armed only while a message waits, so it may not have fired.
            self.close_in_app(current, now, "in-app message expired", intent.seq)
            current = self.tables.open_slot(intent.person_id)
        self._placed.add(intent.person_id)
        payload = orjson.dumps(intent.payload).decode()
        if current is not None:
            self._queue_in_app(intent, current, payload, now)
            return
        expires = at + self.settings.in_app.expire_after
        self.tables.put_slot(_slot(intent, "open", payload, now, expires), at)
        self._enqueue(intent, {**intent.payload, "expires_at": to_iso(expires)}, at, now, note)

    def _queue_in_app(self, intent: SendIntent, current: InAppSlot, payload: str, now: int) -> None:
        if not self.tables.put_slot(_slot(intent, "queued", payload, now), now):
            return
        if current.timer_id is None:
            self.scheduled.append(self.tables.arm_expiry(current))
        reason = f"in-app message queued behind the open one from rule {current.rule}"
        self._decide(intent, now, "queued", reason)

    def close_in_app(self, slot: InAppSlot, now: int, reason: str, seq: int | None) -> None:
        """Close the open in-app message ``slot`` and release the next queued one, if any."""
        person_id = slot.person_id
        self.tables.close_slot(slot, now)
        detail = {"idempotency_key": slot.idempotency_key}
        self.tables.decide(
            Decision(
                now, person_id, slot.rule, "in_app_closed", reason, None, slot.step, seq, detail
            )
        )
        queued = self.tables.next_queued(person_id)
        if queued is None:
            return
        expires = now + self.settings.in_app.expire_after
        opened = self.tables.open_queued_slot(queued, now, expires)
        if self.tables.next_queued(person_id) is not None:
            self.scheduled.append(self.tables.arm_expiry(opened))
        intent = SendIntent(
            key=queued.idempotency_key,
            person_id=person_id,
            rule=queued.rule,
            step=queued.step,
            channel=queued.channel,
            payload=orjson.loads(queued.payload),
            at=now,
            zone=ZoneInfo("UTC"),
            priority=queued.priority,
            quiet_hours="ignore",
            ignore_caps=True,
            enrollment=None,
            seq=seq,
        )
        payload = {**intent.payload, "expires_at": to_iso(expires)}
        self._enqueue(intent, payload, now, now, "; released from the in-app queue")

    def _fresh(self, intent: SendIntent) -> bool:
        """True when the person can have no sends yet, so caps and the in-app slot need no read."""
        return intent.new_person and intent.person_id not in self._placed

    def _decide(
        self,
        intent: SendIntent,
        now: int,
        kind: str,
        reason: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.tables.decide(
            Decision(
                at=now,
                person_id=intent.person_id,
                rule=intent.rule,
                kind=kind,
                reason=reason,
                enrollment=intent.enrollment,
                step=intent.step,
                seq=intent.seq,
                detail=detail,
            )
        )


def _slot(
    intent: SendIntent, status: str, payload: str, now: int, expires_at: int | None = None
) -> InAppSlot:
    """Build the in-app slot row for ``intent``; ``payload`` is its JSON text."""
    return InAppSlot(
        intent.key,
        intent.person_id,
        status,
        intent.priority,
        intent.rule,
        intent.step,
        intent.channel,
        payload,
        now,
        expires_at,
    )


def _cap_scope(cap: Cap) -> str:
    return "messages (all channels)" if cap.channel == "*" else f"{cap.channel}"
