"""Apply the event log to derived state in batches, one transaction per batch.

Each batch runs identity -> profile -> onboarding evidence -> trigger rules for every event in
log order, fires the trigger timers that are due, then writes the changed persons and the new
log offset in one SQLite transaction, together with the trigger engine's rows. A crash before
the commit loses the whole batch's effects and the batch is read again; a crash after it
never applies the batch twice.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from headstart.events import LoggedEvent, counted_name
from headstart.identity.admin import Identifier, separations_digest
from headstart.identity.resolver import IdentityResolver
from headstart.log.base import EventLog
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.plan.load import plan_hash
from headstart.plan.match import Predicate, compile_matcher
from headstart.plan.model import DEFAULT_BLOCKLIST, Plan
from headstart.processor.workspace import Workspace
from headstart.profiles.person import Person
from headstart.state.remap import PersonRemap
from headstart.state.store import OFFSET_KEY, PLAN_KEY, StateStore
from headstart.timeutil import Clock, SystemClock
from headstart.triggers.emit import LogSink
from headstart.triggers.engine import DecidedMark, TriggerEngine, TriggerOptions

logger = logging.getLogger(__name__)

NO_PLAN = "none"


@dataclass(frozen=True, slots=True)
class CompiledPlan:
    """The plan's matchers indexed by event name, so each event costs one dict lookup."""

    plan: Plan | None
    signup: dict[str, list[Predicate]]
    milestones: dict[str, list[tuple[str, int, Predicate]]]
    keep: dict[str, int]
    blocklist: frozenset[str]
    digest: str

    @classmethod
    def build(cls, plan: Plan | None) -> CompiledPlan:
        signup: dict[str, list[Predicate]] = defaultdict(list)
        milestones: dict[str, list[tuple[str, int, Predicate]]] = defaultdict(list)
        if plan is None:
            return cls(None, {}, {}, {}, frozenset(DEFAULT_BLOCKLIST), NO_PLAN)
        signup[plan.signup.event].append(compile_matcher(plan.signup))
        for milestone in plan.milestones:
            milestones[milestone.event].append(
                (milestone.name, milestone.min_count, compile_matcher(milestone))
            )
        keep = {milestone.name: milestone.min_count for milestone in plan.milestones}
        return cls(
            plan, dict(signup), dict(milestones), keep, plan.identity.blocked(), plan_hash(plan)
        )


class Processor:
    def __init__(
        self,
        log: EventLog,
        store: StateStore,
        plan: Plan | None,
        *,
        batch_size: int = 5000,
        clock: Clock | None = None,
        trigger_options: TriggerOptions | None = None,
    ):
        self.log = log
        self.store = store
        self.batch_size = batch_size
        self.workspace = Workspace(store)
        self.clock = clock or SystemClock()
        if trigger_options is None:
            sink = LogSink(log, self.clock) if isinstance(log, SQLiteEventLog) else None
            trigger_options = TriggerOptions(sink=sink)
        self._trigger_options = trigger_options
        self.decided = DecidedMark(store)
        self.remap = PersonRemap(store.conn)
        self.compiled = CompiledPlan.build(plan)
        self.triggers = self._trigger_engine(plan)
        self._resolver = IdentityResolver(
            self.workspace, self.compiled.blocklist, self.compiled.keep
        )
        self._offset = store.offset()
        self._digest = f"{self.compiled.digest}:{separations_digest(())}"

    @property
    def offset(self) -> int:
        return self._offset

    def use_plan(
        self, plan: Plan | None, separations: Sequence[tuple[Identifier, Identifier]] = ()
    ) -> bool:
        """Switch to ``plan`` and the admin separations; rebuild state from the log when the
        two differ from what built the stored state.

        Returns True when a rebuild was started.
        """
        self.compiled = CompiledPlan.build(plan)
        self.triggers = self._trigger_engine(plan)
        self._resolver = IdentityResolver(
            self.workspace, self.compiled.blocklist, self.compiled.keep, separations
        )
        digest = f"{self.compiled.digest}:{separations_digest(separations)}"
        self._digest = digest
        if self.store.get_meta(PLAN_KEY) == digest:
            return False
        logger.info("plan or separations changed (now %s); rebuilding state from the log", digest)
        with self.store.transaction():
            self.decided.reload()
            self.remap.begin(self.decided.value)
            self.store.reset_derived()
            self.store.set_meta(PLAN_KEY, digest)
        self.workspace.drop_caches()
        self._offset = 0
        return True

    def run_once(self) -> int:
        """Process one batch; return the number of events applied (0 when caught up)."""
        events = self.log.read(self._offset, self.batch_size)
        if self.remap.pending:
            events = self._up_to_remap(events)
        if not events:
            self._fire_timers()
            return 0
        try:
            with self.store.transaction():
                stored = self.store.offset()
                if stored != self._offset:
                    # Another processor committed since we read; start again from its offset.
                    raise _Fenced(stored)
                self.workspace.prefetch(events)
                for event in events:
                    self._apply_guarded(event)
                if self.triggers is not None:
                    self.triggers.flush(caught_up=len(events) < self.batch_size)
                self.workspace.flush(self.compiled.plan, events[-1].seq)
                self.store.set_meta(OFFSET_KEY, str(events[-1].seq))
                self.store.set_meta(PLAN_KEY, self._digest)
                self.decided.advance(events[-1].seq)
        except _Fenced as fenced:
            logger.warning("log offset moved to %d under this processor; reloading", fenced.offset)
            self._rolled_back()
            self._offset = fenced.offset
            return 0
        except BaseException:
            self._rolled_back()
            raise
        self._offset = events[-1].seq
        self.workspace.after_commit()
        if self.triggers is not None:
            self.triggers.after_commit()
        return len(events)

    def _up_to_remap(self, events: list[LoggedEvent]) -> list[LoggedEvent]:
        """Stop a rebuild's replay where the last decided event was, and there move the
        trigger and delivery rows to the new person ids before later events are decided."""
        remap_at = self.remap.remap_at
        assert remap_at is not None
        if not self.remap.due(self._offset, events[0].seq if events else None):
            return [event for event in events if event.seq <= remap_at]
        with self.store.transaction():
            self.remap.apply(self._event_ids)
        self.workspace.drop_caches()
        if self.triggers is not None:
            self.triggers.rollback()
        return events

    def _event_ids(self, seqs: list[int]) -> dict[int, tuple[str | None, str | None]]:
        return {
            event.seq: (event.user_id, event.anonymous_id) for event in self.log.events_at(seqs)
        }

    def _fire_timers(self) -> None:
        """Fire the trigger timers that are due while no events are waiting."""
        triggers = self.triggers
        if triggers is None or not triggers.has_due():
            return
        try:
            with self.store.transaction():
                triggers.flush(caught_up=True)
        except BaseException:
            self._rolled_back()
            raise
        triggers.after_commit()

    def _rolled_back(self) -> None:
        self.workspace.drop_caches()
        self.decided.reload()
        if self.triggers is not None:
            self.triggers.rollback()

    def _trigger_engine(self, plan: Plan | None) -> TriggerEngine | None:
        if plan is None or plan.triggers is None or not plan.triggers.rules:
            return None
        return TriggerEngine(
            plan, self.store, self.workspace, self.clock, self.decided, self._trigger_options
        )

    def catch_up(self) -> int:
        """Process until the log head seen at the start; return the number of events applied."""
        total = 0
        while True:
            applied = self.run_once()
            if applied == 0:
                return total
            total += applied

    def _apply_guarded(self, event: LoggedEvent) -> None:
        """Apply one event; a bug triggered by one event is recorded, not fatal to the batch."""
        try:
            self.apply(event)
        except Exception as exc:
            logger.exception(
                "failed to apply event seq=%d message_id=%s", event.seq, event.message_id
            )
            self.store.record_failure(event.seq, f"{type(exc).__name__}: {exc}")

    def apply(self, event: LoggedEvent) -> None:
        person = self._resolver.resolve(event)
        if person is None:
            return
        triggers = self.triggers
        before = triggers.before(event, person) if triggers is not None else None
        person.see(event.timestamp)
        person.remember_event(event.timestamp, event.seq)
        if event.type == "identify":
            person.set_traits(event.traits, event.timestamp, event.seq)
        elif event.may_carry_traits:
            context_traits = event.context_traits
            if context_traits:
                person.set_traits(context_traits, event.timestamp, event.seq)
        if event.type == "group":
            group_id = event.body.get("groupId")
            if group_id is not None and str(group_id) not in person.groups:
                person.groups.append(str(group_id))

        name = counted_name(event.type, event.event)
        changed = False
        if name is not None:
            person.count(name)
            changed = self._match_onboarding(name, event, person)
        self.workspace.touch(person, rewrite=changed)
        if triggers is not None:
            triggers.after(event, person, before)

    def _match_onboarding(self, name: str, event: LoggedEvent, person: Person) -> bool:
        """Record sign-up and milestone evidence; return True when onboarding inputs changed."""
        changed = False
        for predicate in self.compiled.signup.get(name, ()):
            if predicate(event):
                changed = person.record_signup(event.timestamp)
                break
        for milestone, keep, predicate in self.compiled.milestones.get(name, ()):
            if predicate(event):
                changed = person.record_evidence(milestone, event.timestamp, keep) or changed
        return changed


class _Fenced(Exception):
    def __init__(self, offset: int):
        super().__init__(offset)
        self.offset = offset
