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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from headstart.channels.inapp import inbox_message_id
from headstart.events import LoggedEvent, counted_name
from headstart.onboarding.state import OnboardingState
from headstart.plan.match import MISSING
from headstart.plan.model import Plan
from headstart.plan.triggers import Triggers
from headstart.profiles.person import Person
from headstart.state.store import StateStore
from headstart.timeutil import Clock, ManualClock, to_iso
from headstart.triggers.conditions import Facts
from headstart.triggers.emit import EventSink
from headstart.triggers.journey import Journey, Moment
from headstart.triggers.localtime import next_local_time, time_of_day
from headstart.triggers.rules import IN_APP_CLOSED, CompiledRule, RuleIndex
from headstart.triggers.sends import Outbox
from headstart.triggers.tables import DECIDED_KEY, OPEN, Enrollment, Timer, TriggerTables
from headstart.triggers.templates import Templates

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


@dataclass(slots=True)
class Snapshot:
    """Watched traits, onboarding state and segments, as change-based entries compare them."""

    traits: dict[str, Any] | None = None
    state: OnboardingState | None = None
    segments: frozenset[str] | None = None


class _PersonEnrollments:
    """One person's open enrollments and entry history, each read at most once per event.

    Both stay in step with the engine's writes during the event. Open entries whose status
    changed to a closed one are skipped, so ``TriggerTables.end`` on a cached object needs no
    extra bookkeeping.
    """

    def __init__(self, tables: TriggerTables, person_id: str, *, new_person: bool = False):
        self.tables = tables
        self.person_id = person_id
        self.new_person = new_person
        # A person created by the event being evaluated has no trigger rows yet: skip the reads.
        self._rows: dict[tuple[str, str], Enrollment] | None = {} if new_person else None
        self._entered: dict[tuple[str, str], int] | None = {} if new_person else None
        # enrollments started during this event, ended if evaluating the event fails
        self.created: list[Enrollment] = []

    def last_entered(self, rule: str, key: str) -> int | None:
        if self._entered is None:
            self._entered = self.tables.entry_history(self.person_id)
        return self._entered.get((rule, key))

    def note_entry(self, enrollment: Enrollment) -> None:
        if self._entered is not None and enrollment.entered_at is not None:
            slot = (enrollment.rule, enrollment.key)
            self._entered[slot] = max(self._entered.get(slot, 0), enrollment.entered_at)

    def _load(self) -> dict[tuple[str, str], Enrollment]:
        if self._rows is None:
            rows = self.tables.open_enrollments(self.person_id)
            self._rows = {(row.rule, row.key): row for row in rows}
        return self._rows

    def all(self) -> list[Enrollment]:
        return [row for row in self._load().values() if row.status in OPEN]

    def get(self, rule: str, key: str) -> Enrollment | None:
        row = self._load().get((rule, key))
        return row if row is not None and row.status in OPEN else None

    def add_new(self, enrollment: Enrollment) -> None:
        self.created.append(enrollment)
        self.put(enrollment)

    def put(self, enrollment: Enrollment) -> None:
        """Record a new or re-read enrollment (a closed one is dropped)."""
        if self._rows is None:
            return
        slot = (enrollment.rule, enrollment.key)
        if enrollment.status in OPEN:
            self._rows[slot] = enrollment
        elif slot in self._rows and _same_enrollment(self._rows[slot], enrollment):
            del self._rows[slot]


@dataclass
class _Reaction:
    """One event with its person's facts, open enrollments and stored event context."""

    event: LoggedEvent
    name: str | None
    facts: Facts
    moment: Moment
    trait_event: bool
    onboarding_event: bool
    open: _PersonEnrollments
    rules: set[str] = field(default_factory=set)
    _context: dict[str, Any] | None = None

    def context(self) -> dict[str, Any]:
        """Return the event as enrollments store it (computed once, on first entry)."""
        if self._context is None:
            self._context = _event_context(self.event)
        return self._context


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
        self.rules = self.index.rules
        self.tables = TriggerTables(store.conn)
        self.outbox = Outbox(self.tables, self.settings)
        self.journey = Journey(
            plan, self.settings, self.tables, self.outbox, Templates(self.settings.templates)
        )
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
        traits = _carries_traits(event)
        onboarding = name in self.index.onboarding_events
        snapshot = Snapshot()
        facts = Facts(person, self.plan, self.index.segments)
        if traits and self.index.trait_entries:
            snapshot.traits = {trait: facts.trait(trait) for trait in self.index.trait_entries}
        if onboarding and self.index.stall_rules:
            snapshot.state = facts.state
        if self.index.segment_entries and self._segments_may_change(name, traits, onboarding):
            snapshot.segments = self._segments_of(facts)
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
        trait_event = _carries_traits(event)
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
        open_enrollments = _PersonEnrollments(
            self.tables, person.person_id, new_person=moment.new_person
        )
        reaction = _Reaction(
            event, name, facts, moment, trait_event, onboarding_event, open_enrollments, rules
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

    def _react(self, reaction: _Reaction, before: Snapshot | None) -> None:
        event, facts = reaction.event, reaction.facts
        person_id = facts.person.person_id
        if reaction.rules:
            for enrollment in reaction.open.all():
                if enrollment.rule in reaction.rules:
                    self._react_enrollment(enrollment, reaction)
        if reaction.name in IN_APP_CLOSED:
            self._close_in_app(person_id, event, reaction.moment)
        name = reaction.name or ""
        for rule, predicate in self.index.entries.get(name, ()):
            if predicate(event):
                self._enter_on_event(rule, reaction)
        for rule, predicate in self.index.starts.get(name, ()):
            if predicate(event):
                self._start_absence(rule, reaction)
        if before is not None:
            self._changes(reaction, before)

    def _react_enrollment(self, enrollment: Enrollment, reaction: _Reaction) -> None:
        event, moment = reaction.event, reaction.moment
        current = self._catch_up(enrollment, event.timestamp, moment, reaction.open)
        if current is None:
            return
        rule = self._rule_for(current, moment)
        if rule is None:
            return
        if self._until(rule, current, reaction, "goal") or self._until(
            rule, current, reaction, "exit"
        ):
            return
        if current.status == "watching":
            missing = rule.missing
            if missing is not None and self._matches(
                missing.event, missing.predicate, missing.same_key, rule, current, reaction
            ):
                within = (
                    f"{reaction.name} arrived by {to_iso(current.due)}"
                    if current.due
                    else f"{reaction.name} arrived"
                )
                self.journey.end(current, "cancelled", moment, within)
            return
        step = rule.steps.get(current.step or "")
        wait_for = step.wait_for if step is not None else None
        if step is None or wait_for is None:
            return
        if not self._matches(
            wait_for.event, wait_for.predicate, wait_for.same_key, rule, current, reaction
        ):
            return
        if current.timer_id is not None:
            self.tables.delete_timer(current.timer_id)
        context = {**current.context, **_event_context(event, keep_zone=current.context)}
        self.tables.set_step(current, None)
        self.tables.set_context(current, context)
        reason = f"{reaction.name} arrived at {to_iso(event.timestamp)}, by the deadline {to_iso(current.due)}"
        self.journey.decide(
            moment, current.person_id, rule.name, "resumed", reason, current, step.id
        )
        self.journey.run(
            rule, current, step.branches["on_event"], reaction.facts, event.timestamp, moment
        )

    def _matches(
        self,
        name: str,
        predicate: Callable[[LoggedEvent], bool],
        same_key: bool,
        rule: CompiledRule,
        enrollment: Enrollment,
        reaction: _Reaction,
    ) -> bool:
        if reaction.name != name or not predicate(reaction.event):
            return False
        return not same_key or rule.key is None or rule.key_of(reaction.event) == enrollment.key

    def _until(
        self, rule: CompiledRule, enrollment: Enrollment, reaction: _Reaction, which: str
    ) -> bool:
        """End the enrollment when the rule's goal or exit is met; return True if it ended."""
        until = rule.goal if which == "goal" else rule.exit
        if until is None:
            return False
        status = "goal" if which == "goal" else "exited"
        if enrollment.status == "watching":
            status = "cancelled"  # it ends before the person entered the rule
        for test in until.events:
            if self._matches(test.event, test.predicate, test.same_key, rule, enrollment, reaction):
                self.journey.end(
                    enrollment, status, reaction.moment, f"{which}: {test.event} happened"
                )
                return True
        if until.condition is None or not self._may_change(until.needs, reaction):
            return False
        if until.condition(reaction.facts):
            self.journey.end(enrollment, status, reaction.moment, f"{which}: its conditions hold")
            return True
        return False

    def _may_change(self, needs: Any, reaction: _Reaction) -> bool:
        return bool(
            (needs.traits and reaction.trait_event)
            or (needs.onboarding and reaction.onboarding_event)
            or (reaction.name is not None and reaction.name in needs.counts)
        )

    def _close_in_app(self, person_id: str, event: LoggedEvent, moment: Moment) -> None:
        slot = self.tables.open_slot(person_id)
        if slot is None:
            return
        properties = event.properties
        names = {slot.idempotency_key, inbox_message_id(slot.idempotency_key)}
        named = {
            str(properties.get(key))
            for key in ("message_id", "idempotency_key")
            if properties.get(key) is not None
        }
        if not names & named:
            return
        self.outbox.close_in_app(slot, moment.now, f"{event.event} by the person", moment.seq)

    # ---- entries ------------------------------------------------------------------------

    def _enter_on_event(self, rule: CompiledRule, reaction: _Reaction) -> None:
        event = reaction.event
        key = rule.key_of(event)
        if key is None:
            reason = f"{reaction.name} has no correlation key {rule.rule.entry.key}"
            self.journey.decide(
                reaction.moment, reaction.facts.person.person_id, rule.name, "not_entered", reason
            )
            return
        reason = f"{reaction.name} at {to_iso(event.timestamp)}"
        self._enter(rule, reaction, key, event.timestamp, reason)

    def _enter(
        self,
        rule: CompiledRule,
        reaction: _Reaction,
        key: str,
        t: int,
        reason: str,
    ) -> None:
        facts, moment = reaction.facts, reaction.moment
        person_id = facts.person.person_id
        if self._is_open(rule, reaction, key, t):
            return
        blocked = self._reentry_blocked(rule, reaction.open.last_entered(rule.name, key), t)
        if blocked is not None:
            if rule.reentry != "never":
                self.journey.decide(moment, person_id, rule.name, "not_entered", blocked)
            return
        if not rule.conditions(facts):
            self.journey.decide(
                moment,
                person_id,
                rule.name,
                "not_entered",
                f"{reason}, but the rule's conditions do not hold",
            )
            return
        enrollment = self.tables.new_enrollment(
            rule=rule.name,
            person_id=person_id,
            key=key,
            occurrence=str(reaction.event.seq),
            status="active",
            version=rule.version,
            started_at=t,
            entered_at=t,
            context=reaction.context(),
        )
        reaction.open.add_new(enrollment)
        reaction.open.note_entry(enrollment)
        self.journey.decide(
            moment, person_id, rule.name, "entered", reason, enrollment, detail=_key_detail(key)
        )
        self.journey.run(rule, enrollment, rule.first, facts, t, moment)

    def _is_open(self, rule: CompiledRule, reaction: _Reaction, key: str, t: int) -> bool:
        """True when the person has this rule and key open (after firing its overdue timer)."""
        current = reaction.open.get(rule.name, key)
        if current is None:
            return False
        return self._catch_up(current, t, reaction.moment, reaction.open) is not None

    def _reentry_blocked(self, rule: CompiledRule, last: int | None, t: int) -> str | None:
        """Return why the re-entry policy keeps the person out, given their last entry time."""
        if last is None:
            return None
        if rule.reentry == "never":
            return f"entered before at {to_iso(last)}; re-entry is never"
        if rule.reentry == "cooldown" and rule.cooldown is not None and t - last < rule.cooldown:
            return (
                f"entered at {to_iso(last)}; the cooldown runs until {to_iso(last + rule.cooldown)}"
            )
        return None

    def _start_absence(self, rule: CompiledRule, reaction: _Reaction) -> None:
        event, moment = reaction.event, reaction.moment
        person_id = reaction.facts.person.person_id
        key = rule.key_of(event)
        if key is None:
            reason = f"{reaction.name} has no correlation key {rule.rule.entry.key}"
            self.journey.decide(moment, person_id, rule.name, "not_entered", reason)
            return
        if self._is_open(rule, reaction, key, event.timestamp):
            return
        last = reaction.open.last_entered(rule.name, key)
        if self._reentry_blocked(rule, last, event.timestamp) is not None:
            return
        within = rule.rule.entry.within
        assert within is not None
        self._watch(rule, reaction, key, event.timestamp, event.timestamp + within, "absence")

    def _watch(
        self,
        rule: CompiledRule,
        reaction: _Reaction,
        key: str,
        started_at: int,
        due: int,
        kind: str,
    ) -> None:
        """Start watching for an absence or a stall; the timer enters the rule at ``due``.

        Watches record no decision: they start and end on frequent events, and the
        enrollment row with its timer shows them (see Journey.end).
        """
        person_id = reaction.facts.person.person_id
        enrollment = self.tables.new_enrollment(
            rule=rule.name,
            person_id=person_id,
            key=key,
            occurrence=str(reaction.event.seq),
            status="watching",
            version=rule.version,
            started_at=started_at,
            entered_at=None,
            context=reaction.context(),
        )
        reaction.open.add_new(enrollment)
        self.tables.add_timer(due, kind, person_id, enrollment)
        self.journey.scheduled.append(due)

    def _changes(self, reaction: _Reaction, before: Snapshot) -> None:
        facts = reaction.facts
        if before.traits is not None:
            self._trait_changes(reaction, before.traits)
        if before.state is not None:
            after = facts.state
            if (
                after.signup_at != before.state.signup_at
                or after.milestones != before.state.milestones
            ):
                for rule in self.index.stall_rules:
                    self._restart_stall(rule, reaction)
        if before.segments is not None:
            entered = self._segments_of(facts) - before.segments
            for segment in sorted(entered):
                for rule in self.index.segment_entries[segment]:
                    reason = f"entered segment {segment}"
                    self._enter(rule, reaction, "", reaction.event.timestamp, reason)

    def _trait_changes(self, reaction: _Reaction, old_traits: dict[str, Any]) -> None:
        facts = reaction.facts
        for trait, rules in self.index.trait_entries.items():
            old, new = old_traits.get(trait, MISSING), facts.trait(trait)
            if _same(old, new):
                continue
            for rule in rules:
                if rule.trait_from is not None and not rule.trait_from(old):
                    continue
                if rule.trait_to is not None and not rule.trait_to(new):
                    continue
                reason = f"trait {trait} changed from {_shown(old)} to {_shown(new)}"
                self._enter(rule, reaction, "", reaction.event.timestamp, reason)

    def _restart_stall(self, rule: CompiledRule, reaction: _Reaction) -> None:
        """Re-arm the stall watch after onboarding progress: one watch per next milestone."""
        facts, moment = reaction.facts, reaction.moment
        state = facts.state
        following = next((name for name, at in state.milestones.items() if at is None), None)
        stalled_for = rule.rule.entry.stalled_for
        assert stalled_for is not None
        anchor = None
        if state.signup_at is not None:
            anchor = max(
                [state.signup_at, *(at for at in state.milestones.values() if at is not None)]
            )
        due = None if anchor is None else anchor + stalled_for
        for enrollment in reaction.open.all():
            if enrollment.rule != rule.name or enrollment.status != "watching":
                continue
            if enrollment.key == following and enrollment.due == due:
                return
            progress = "sign-up or milestone progress" if following else "every milestone reached"
            self.journey.end(enrollment, "cancelled", moment, f"{progress}; watching again")
        if following is None or anchor is None or due is None:
            return
        if self._is_open(rule, reaction, following, reaction.event.timestamp):
            return
        last = reaction.open.last_entered(rule.name, following)
        if self._reentry_blocked(rule, last, due) is not None:
            return
        self._watch(rule, reaction, following, anchor, due, "stall")

    def _segments_may_change(self, name: str | None, traits: bool, onboarding: bool) -> bool:
        needs = self.index.segment_needs
        return bool(
            (needs.traits and traits)
            or (needs.onboarding and onboarding)
            or (name is not None and name in needs.counts)
        )

    def _segments_of(self, facts: Facts) -> frozenset[str]:
        return frozenset(name for name in self.index.segment_entries if facts.in_segment(name))

    # ---- timers -------------------------------------------------------------------------

    def _catch_up(
        self, enrollment: Enrollment, t: int, moment: Moment, cache: _PersonEnrollments
    ) -> Enrollment | None:
        """Fire the enrollment's timer if it was due before ``t``; return it if still open."""
        if enrollment.timer_id is None or enrollment.due is None:
            return enrollment
        if enrollment.due >= t or enrollment.due > moment.now:
            return enrollment
        timer = self.tables.timer(enrollment.timer_id)
        if timer is not None:
            self._fire(timer, moment.now)
        current = self.tables.enrollment(enrollment.enrollment_id)
        if current is None:
            return None
        cache.put(current)
        return current if current.status in OPEN else None

    def _fire_guarded(self, timer: Timer, now: int) -> None:
        try:
            self._fire(timer, now)
        except Exception as exc:
            reason = self._failed(timer.person_id, None, exc, [])
            self._drop_broken_timer(timer, now, reason)

    def _fire(self, timer: Timer, now: int) -> None:
        if not self.tables.delete_timer(timer.timer_id):
            return
        moment = Moment(now, None)
        if timer.kind == "in_app_expiry":
            slot = self.tables.open_slot(timer.person_id)
            if slot is not None and slot.idempotency_key == timer.ref:
                self.outbox.close_in_app(slot, now, "in-app message expired", None)
            return
        enrollment = self.tables.enrollment(timer.enrollment_id or 0)
        if enrollment is None or enrollment.status not in OPEN:
            return
        enrollment.timer_id = enrollment.due = None
        rule = self._rule_for(enrollment, moment)
        if rule is None:
            return
        person = self._person(enrollment.person_id)
        if person is None:
            self.journey.end(enrollment, "exited", moment, "the person no longer exists")
            return
        if self._late(rule, enrollment, timer, person, moment):
            return
        facts = Facts(person, self.plan, self.index.segments)
        t = timer.due
        if timer.kind in ("absence", "stall"):
            self._enter_watched(rule, enrollment, facts, t, moment)
            return
        step = rule.steps[timer.step or ""]
        if timer.kind == "wait_for":
            reason = f"no {step.wait_for.event if step.wait_for else 'event'} by {to_iso(t)}"
            self.journey.decide(
                moment, enrollment.person_id, rule.name, "timed_out", reason, enrollment, step.id
            )
            self.journey.run(rule, enrollment, step.branches["on_timeout"], facts, t, moment)
            return
        self.journey.run(rule, enrollment, step.next, facts, t, moment)

    def _late(
        self,
        rule: CompiledRule,
        enrollment: Enrollment,
        timer: Timer,
        person: Person,
        moment: Moment,
    ) -> bool:
        """Apply the rule's lateness policy; return True when the timer must not go on."""
        lateness = rule.rule.lateness
        late = moment.now - timer.due
        if late <= lateness.after or lateness.policy == "send":
            return False
        behind = f"timer due {to_iso(timer.due)} fired {late // 1_000_000} s late"
        if lateness.policy == "skip":
            self.journey.end(
                enrollment, "exited", moment, f"{behind}; the lateness policy skips it"
            )
            return True
        zone = self.journey.zone(person, enrollment.context)
        slot = next_local_time(moment.now, time_of_day(timer.due, zone), zone)
        self.tables.add_timer(slot, timer.kind, enrollment.person_id, enrollment, timer.step)
        self.journey.scheduled.append(slot)
        reason = f"{behind}; moved to the next slot {to_iso(slot)}"
        self.journey.decide(
            moment, enrollment.person_id, rule.name, "rescheduled", reason, enrollment, timer.step
        )
        return True

    def _enter_watched(
        self, rule: CompiledRule, enrollment: Enrollment, facts: Facts, t: int, moment: Moment
    ) -> None:
        """Enter the rule for a watched absence or stall whose deadline passed, if allowed."""
        person_id = enrollment.person_id
        if rule.kind == "absence":
            missing = rule.missing.event if rule.missing else "the event"
            reason = f"no {missing} by {to_iso(t)}"
        else:
            reason = f"no progress to milestone {enrollment.key} by {to_iso(t)}"
        last = self.tables.last_entered(rule.name, person_id, enrollment.key)
        blocked = self._reentry_blocked(rule, last, t)
        if blocked is None and not rule.conditions(facts):
            blocked = "the rule's conditions do not hold"
        if blocked is not None:
            why = f"{reason}, but {blocked}"
            self.journey.end(enrollment, "cancelled", moment, why)
            self.journey.decide(moment, person_id, rule.name, "not_entered", why, enrollment)
            return
        self.tables.activate(enrollment, t, rule.version)
        self.journey.decide(
            moment,
            person_id,
            rule.name,
            "entered",
            reason,
            enrollment,
            detail=_key_detail(enrollment.key),
        )
        self.journey.run(rule, enrollment, rule.first, facts, t, moment)

    def _rule_for(self, enrollment: Enrollment, moment: Moment) -> CompiledRule | None:
        """Return the enrollment's rule, or end the enrollment when the plan no longer has it."""
        rule = self.rules.get(enrollment.rule)
        if rule is None:
            self.journey.end(
                enrollment, "exited", moment, "the rule was removed or disabled in the plan"
            )
            return None
        if enrollment.status == "active" and enrollment.rule_version != rule.version:
            self.journey.end(enrollment, "exited", moment, "the rule's steps changed in the plan")
            return None
        return rule

    def _person(self, person_id: str) -> Person | None:
        try:
            return self.workspace.person(person_id)
        except LookupError:
            pass
        canonical = self.store.canonical_person(person_id)
        if canonical is None or canonical == person_id:
            return None
        try:
            return self.workspace.person(canonical)
        except LookupError:
            return None

    def _drop_broken_timer(self, timer: Timer, now: int, reason: str) -> None:
        self.tables.delete_timer(timer.timer_id)
        enrollment = self.tables.enrollment(timer.enrollment_id or 0)
        if enrollment is not None and enrollment.status in OPEN:
            self.journey.end(enrollment, "exited", Moment(now, None), reason)

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


def _same_enrollment(first: Enrollment, second: Enrollment) -> bool:
    return first is second or (first.saved and first.enrollment_id == second.enrollment_id)


def _carries_traits(event: LoggedEvent) -> bool:
    return event.type == "identify" or event.may_carry_traits


def _event_context(event: LoggedEvent, keep_zone: dict[str, Any] | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {
        "event": {
            "name": counted_name(event.type, event.event) or event.type,
            "properties": event.properties,
            "timestamp": to_iso(event.timestamp),
            "seq": event.seq,
        }
    }
    body_context = event.body.get("context")
    zone = body_context.get("timezone") if isinstance(body_context, dict) else None
    if isinstance(zone, str):
        context["timezone"] = zone
    elif keep_zone is not None and "timezone" in keep_zone:
        context["timezone"] = keep_zone["timezone"]
    return context


def _key_detail(key: str) -> dict[str, Any]:
    return {"key": key} if key else {}


def _same(old: Any, new: Any) -> bool:
    return type(old) is type(new) and old == new


def _shown(value: Any) -> str:
    return "(unset)" if value is MISSING else repr(value)
