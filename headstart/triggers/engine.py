"""The trigger engine: the processor stage that evaluates rules and runs the scheduler.

For each event (after identity, profile and onboarding), in this order:

1. Open enrollments the event concerns first fire their own overdue timer. A timer due
   before the event's timestamp fires before the event is looked at, so the event wins
   exactly when its timestamp is at or before the deadline, however late it is processed.
2. Goals, then exits, end enrollments (and delete their timers). A watched absence is
   cancelled by its missing event; a ``wait_for`` step resumes on its event.
3. An in-app close event frees the in-app slot.
4. Entries: event entries, absence watches, trait changes, stalls, segment entries.
5. The sends decided by this event are placed by priority (headstart.triggers.sends).

Steps 1 to 3 live in headstart.triggers.lifecycle, step 4 in headstart.triggers.entries,
and what a firing timer does in headstart.triggers.timers. Entered enrollments run their
steps in headstart.triggers.journey.

Each batch then fires timers that are due (``flush``). Live, a timer fires once the
processing clock passes its due time, and while the processor works through a backlog only
once the events up to that time are applied. In event-time mode (backtests) the engine moves
a manual clock to each event's timestamp and fires timers in between.

Rebuilds: trigger tables survive ``reset_derived``. The meta key ``triggers_decided_seq``
holds the highest sequence number rules have seen; a replay skips the rules for events up to
it, since they were decided under the previous plan. Journeys in progress continue, unless
their rule was removed or its steps changed (then they end as ``exited``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from headstart.events import LoggedEvent, counted_name
from headstart.plan.model import Plan
from headstart.plan.triggers import Triggers
from headstart.profiles.person import Person
from headstart.state.store import StateStore
from headstart.timeutil import Clock, ManualClock
from headstart.triggers.conditions import Facts
from headstart.triggers.emit import EventSink
from headstart.triggers.entries import Entries, Snapshot
from headstart.triggers.journey import Journey, Moment
from headstart.triggers.lifecycle import EnrollmentLifecycle
from headstart.triggers.reaction import PersonEnrollments, Reaction, carries_traits
from headstart.triggers.rules import IN_APP_CLOSED, RuleIndex
from headstart.triggers.sends import Outbox
from headstart.triggers.tables import DECIDED_KEY, OPEN, Enrollment, Timer, TriggerTables
from headstart.triggers.templates import Templates
from headstart.triggers.timers import Timers

if TYPE_CHECKING:
    from headstart.processor.workspace import Workspace

logger = logging.getLogger(__name__)

TIMERS_PER_ROUND = 500
EMITS_PER_ROUND = 1000


@dataclass(frozen=True)
class TriggerOptions:
    """Engine settings for live processing (the default) or a backtest over history."""

    # Drive the clock (a ManualClock) by event timestamps and fire timers between events.
    event_time: bool = False
    # Evaluate rules only for events with since <= timestamp < until.
    since: int | None = None
    until: int | None = None
    # Where emitted events go after each commit; None keeps them in trigger_emits only.
    sink: EventSink | None = None


class DecidedMark:
    """The highest log sequence number whose events trigger rules have evaluated.

    It survives rebuilds (it lives in ``meta``, which ``reset_derived`` keeps apart from the
    offset), so a replay after a plan change does not decide old events again.
    """

    def __init__(self, store: StateStore):
        self.store = store
        self.value = 0
        self.reload()

    def reload(self) -> None:
        self.value = int(self.store.get_meta(DECIDED_KEY) or 0)

    def advance(self, seq: int) -> None:
        """Raise the mark inside the batch's transaction."""
        if seq > self.value:
            self.store.set_meta(DECIDED_KEY, str(seq))
            self.value = seq


class TriggerEngine:
    """Evaluates the plan's trigger rules inside the processor's transactions."""

    def __init__(
        self,
        plan: Plan,
        store: StateStore,
        workspace: Workspace,
        clock: Clock,
        decided: DecidedMark,
        options: TriggerOptions,
    ):
        assert plan.triggers is not None
        self.plan = plan
        self.settings: Triggers = plan.triggers
        self.store = store
        self.workspace = workspace
        self.clock = clock
        self.decided = decided
        self.options = options
        if options.event_time and not isinstance(clock, ManualClock):
            raise TypeError("event-time mode needs a ManualClock")
        self.index = RuleIndex(plan, self.settings)
        self.tables = TriggerTables(store.conn)
        self.outbox = Outbox(self.tables, self.settings)
        self.journey = Journey(
            plan, self.settings, self.tables, self.outbox, Templates(self.settings.templates)
        )
        self.timers = Timers(
            plan, store, workspace, self.index, self.tables, self.outbox, self.journey
        )
        self.lifecycle = EnrollmentLifecycle(self.tables, self.outbox, self.journey, self.timers)
        self.entries = Entries(self.index, self.tables, self.journey, self.timers)
        self._next_due: int | None = self.tables.next_due()
        self._watermark = 0
        self._emits_pending = True

    # ---- the processor's hooks ----------------------------------------------------------

    def before(self, event: LoggedEvent, person: Person) -> Snapshot | None:
        """Capture what change-based entries compare, before the event is applied."""
        if self.options.event_time:
            self.advance_to(event.timestamp)
        if not self.index.watches_changes or not self._evaluates(event):
            return None
        name = counted_name(event.type, event.event)
        onboarding = name in self.index.onboarding_events
        facts = Facts(person, self.plan, self.index.segments)
        snapshot = self.entries.snapshot(facts, name, carries_traits(event), onboarding)
        if snapshot.traits is None and snapshot.state is None and snapshot.segments is None:
            return None
        return snapshot

    def after(self, event: LoggedEvent, person: Person, before: Snapshot | None) -> None:
        """Evaluate the rules for one applied event."""
        if not self._evaluates(event):
            return
        if event.timestamp > self._watermark:
            self._watermark = event.timestamp
        name = counted_name(event.type, event.event)
        index = self.index
        trait_event = carries_traits(event)
        onboarding_event = name in index.onboarding_events
        rules: set[str] = set()
        if name is not None:
            rules.update(index.listeners.get(name, ()))
        if trait_event:
            rules.update(index.trait_listeners)
        if onboarding_event:
            rules.update(index.onboarding_listeners)
        entries = index.entries.get(name or "")
        starts = index.starts.get(name or "")
        closes = name in IN_APP_CLOSED
        if not (rules or entries or starts or closes or before is not None):
            return
        moment = Moment(self.clock.now_us(), event.seq, person.created_seq == event.seq)
        facts = Facts(person, self.plan, index.segments)
        # Person ids are derived from identifiers, so after a rebuild with other identity
        # settings a "new" person could reuse an old id; the unique open-enrollment index
        # then stops a second open enrollment and the error is recorded.
        open_enrollments = PersonEnrollments(
            self.tables, person.person_id, new_person=moment.new_person
        )
        stale = (
            not self.options.event_time
            and event.received_at - event.timestamp > self.settings.max_event_age
        )
        reaction = Reaction(
            event,
            name,
            facts,
            moment,
            trait_event,
            onboarding_event,
            open_enrollments,
            rules,
            stale=stale,
        )
        try:
            self._react(reaction, before)
            self.outbox.settle(moment.now)
        except Exception as exc:
            self._failed(person.person_id, event.seq, exc, open_enrollments.created)

    def flush(self, *, caught_up: bool) -> None:
        """Fire due timers (live mode) and write the batch's decisions; inside the transaction.

        ``caught_up`` is True when the batch reached the log head. Until then only timers due
        before the newest applied event fire, so a backlog's events come before their timeouts.
        """
        if not self.options.event_time:
            now = self.clock.now_us()
            limit = now if caught_up else min(now, self._watermark)
            self.fire_due(limit, now)
        self.tables.flush_decisions()
        self._note_scheduled()

    def has_due(self) -> bool:
        """True when a timer is due by the processing clock (checked without a query)."""
        return self._next_due is not None and self._next_due <= self.clock.now_us()

    def fire_due(self, limit: int, now: int) -> int:
        """Fire timers due at or before ``limit``, earliest first; return how many fired.

        Sends from timers with the same due time compete by priority.
        """
        self._note_scheduled()
        if self._next_due is None or self._next_due > limit:
            return 0
        timers = self.tables.due_timers(limit, TIMERS_PER_ROUND)
        group: int | None = None
        for timer in timers:
            if group is not None and timer.due != group:
                self.outbox.settle(now)
            group = timer.due
            self._fire_guarded(timer, now)
        self.outbox.settle(now)
        self._next_due = self.tables.next_due()
        return len(timers)

    def advance_to(self, instant: int) -> None:
        """Event-time mode: fire each timer due before ``instant`` at its own due time.

        The clock then shows ``instant``, even when that is earlier than a previous event.
        """
        clock = self.clock
        assert isinstance(clock, ManualClock)
        until = self.options.until
        while True:
            self._note_scheduled()
            due = self._next_due
            if due is None or due >= instant or (until is not None and due >= until):
                break
            clock.set(due)
            self.fire_due(due, due)
        # Each event is decided at its own time, even when the log is not in time order.
        clock.set(instant)

    def after_commit(self) -> None:
        """Append the events the committed batch emitted to the log, then mark them appended."""
        sink = self.options.sink
        if sink is None or not (self._emits_pending or self.tables.emits_added):
            return
        self.tables.emits_added = False
        pending = self.tables.pending_emits(EMITS_PER_ROUND)
        self._emits_pending = len(pending) == EMITS_PER_ROUND
        if not pending:
            return
        sink.append([body for _, body in pending])
        with self.store.transaction():
            self.tables.mark_appended(
                [message_id for message_id, _ in pending], self.clock.now_us()
            )

    def rollback(self) -> None:
        """Forget in-memory work after the processor rolled the batch back."""
        self.outbox.discard()
        self.tables.drop_decisions()
        self.journey.scheduled.clear()
        self.outbox.scheduled.clear()
        self._next_due = self.tables.next_due()

    # ---- reacting to one event ----------------------------------------------------------

    def _evaluates(self, event: LoggedEvent) -> bool:
        if event.seq <= self.decided.value:
            return False
        since, until = self.options.since, self.options.until
        if since is not None and event.timestamp < since:
            return False
        return until is None or event.timestamp < until

    def _react(self, reaction: Reaction, before: Snapshot | None) -> None:
        event = reaction.event
        if reaction.rules:
            for enrollment in reaction.open.all():
                if enrollment.rule in reaction.rules:
                    self.lifecycle.react(enrollment, reaction)
        if reaction.name in IN_APP_CLOSED:
            self.lifecycle.close_in_app(reaction.person_id, event, reaction.moment)
        name = reaction.name or ""
        for rule, predicate in self.index.entries.get(name, ()):
            if predicate(event):
                self.entries.on_event(rule, reaction)
        for rule, predicate in self.index.starts.get(name, ()):
            if predicate(event):
                self.entries.start_absence(rule, reaction)
        if before is not None:
            self.entries.changes(reaction, before)

    # ---- timers -------------------------------------------------------------------------

    def _fire_guarded(self, timer: Timer, now: int) -> None:
        try:
            self.timers.fire(timer, now)
        except Exception as exc:
            reason = self._failed(timer.person_id, None, exc, [])
            self.timers.drop_broken(timer, now, reason)

    def _note_scheduled(self) -> None:
        for scheduled in (self.journey.scheduled, self.outbox.scheduled):
            if not scheduled:
                continue
            earliest = min(scheduled)
            scheduled.clear()
            if self._next_due is None or earliest < self._next_due:
                self._next_due = earliest

    # ---- failure isolation --------------------------------------------------------------

    def _failed(
        self, person_id: str, seq: int | None, exc: Exception, created: list[Enrollment]
    ) -> str:
        """Record a bug hit while evaluating rules, so it stops one person, not the batch.

        NOTE: rows written before the error stay, as the processor keeps a person's changes
        before a failed event. Enrollments this event started are ended so none is left
        active without its timer. A savepoint per event would undo the writes instead, but
        it costs about half again the time of the writes it protects.
        """
        self.outbox.discard()
        logger.exception("trigger evaluation failed for person %s (seq %s)", person_id, seq)
        reason = f"engine error: {type(exc).__name__}: {exc}"
        moment = Moment(self.clock.now_us(), seq)
        self.journey.decide(moment, person_id, "", "error", reason)
        for enrollment in created:
            if enrollment.status in OPEN:
                self.tables.end(enrollment, "exited", moment.now, reason)
        return reason
