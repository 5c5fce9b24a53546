"""The dispatcher: claims due outbox rows, sends them on worker threads, records outcomes.

One step records the outcomes that finished since the last step in one transaction, then
claims due rows up to ``max_in_flight`` and queues them on the worker threads. Rows for a
channel with ``send_batch`` (the in-app inbox) go to it in groups of up to ``BATCH_SIZE``. A crash between a send and its
record leaves the row ``sending``; the next dispatcher sends it again with the same
idempotency key, so delivery is at-least-once and receivers deduplicate by that key.
"""

from __future__ import annotations

import logging
import queue
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from headstart.channels.base import BatchChannel, DeliveryFailed, OutboundMessage
from headstart.delivery.channelset import ChannelSet
from headstart.delivery.outbox import OutboxRow, OutboxStore, Outcome
from headstart.delivery.retry import after_failure
from headstart.timeutil import MICROS_PER_SECOND, Clock

logger = logging.getLogger(__name__)

# A claimed row whose outcome is not recorded within this time is claimed again. It exceeds
# every channel's maximum timeout (120 s) so a slow send is never doubled by the lease.
LEASE_SECONDS = 300.0
# Repeats of one failure message are logged at most this often.
LOG_EVERY_SECONDS = 10.0
# Rows handed to one send_batch call.
BATCH_SIZE = 250


class Dispatcher:
    def __init__(
        self,
        outbox: OutboxStore,
        channels: ChannelSet,
        clock: Clock,
        *,
        max_in_flight: int = 1000,
        threads: int = 16,
        lease_s: float = LEASE_SECONDS,
        rng: random.Random | None = None,
    ):
        self.outbox = outbox
        self.channels = channels
        self.clock = clock
        self.max_in_flight = max_in_flight
        self.lease_us = int(lease_s * MICROS_PER_SECOND)
        self._rng = rng or random.Random()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="send")
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._in_flight: set[int] = set()
        # Claim only when this many rows are free: every claim is a write transaction, and
        # it waits whenever the processor holds the write lock of state.sqlite.
        self._claim_batch = max(1, max_in_flight // 4)
        self._batch_channels: dict[tuple[int, str], BatchChannel | None] = {}
        self._last_logged: dict[str, float] = {}
        self.sent = 0
        self.failed = 0
        self.dead = 0

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def recover(self) -> int:
        """Make rows a dead dispatcher left ``sending`` due now; return how many there were."""
        released = self.outbox.release_orphans(self.clock.now_us())
        if released:
            logger.warning(
                "%d messages were being sent when the last dispatcher stopped; "
                "sending them again with their idempotency keys",
                released,
            )
        return released

    def step(self, wait_s: float = 0.0) -> int:
        """Record finished sends, claim and start due rows; return how many rows moved.

        With nothing to claim, waits up to ``wait_s`` for a send in flight to finish.
        """
        recorded = self._record(self._drain(0.0))
        started = self._start_due()
        if recorded == 0 and started == 0 and wait_s > 0:
            if self._in_flight:
                recorded = self._record(self._drain(wait_s))
            else:
                time.sleep(wait_s)
        return recorded + started

    def run_until_idle(self, timeout_s: float = 30.0) -> None:
        """Send every row due now and record the outcomes (tests and benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while True:
            moved = self.step(0.01)
            if moved == 0 and not self._in_flight:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self._in_flight)} sends still in flight")

    def drain(self, timeout_s: float) -> None:
        """Stop claiming and wait (up to ``timeout_s``) until every send in flight is recorded."""
        deadline = time.monotonic() + timeout_s
        while self._in_flight and time.monotonic() < deadline:
            self._record(self._drain(0.05))

    def replace_channels(self, channels: ChannelSet, timeout_s: float = 60.0) -> None:
        """Switch to newly built channels after the sends in flight finished."""
        self.drain(timeout_s)
        old, self.channels = self.channels, channels
        self._batch_channels.clear()
        old.close()

    def close(self, timeout_s: float = 30.0) -> None:
        self.drain(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.channels.close()

    # ---- internals ------------------------------------------------------------------------

    def _start_due(self) -> int:
        free = self.max_in_flight - len(self._in_flight)
        # Claim in batches, not one row per finished send: each claim is a write transaction.
        if self._in_flight and free < self._claim_batch:
            return 0
        rows = self.outbox.claim(self.clock.now_us(), free, self.lease_us, self._in_flight)
        groups: dict[str, list[OutboxRow]] = {}
        for row in rows:
            self._in_flight.add(row.outbox_id)
            if self._batch_channel(row.channel) is None:
                self._pool.submit(self._send, row)
            else:
                groups.setdefault(row.channel, []).append(row)
        for group in groups.values():
            for start in range(0, len(group), BATCH_SIZE):
                self._pool.submit(self._send_group, group[start : start + BATCH_SIZE])
        return len(rows)

    def _batch_channel(self, name: str) -> BatchChannel | None:
        # Cached per channel set: a runtime Protocol check costs about 0.2 ms.
        key = (id(self.channels), name)
        if key not in self._batch_channels:
            try:
                channel = self.channels.get(name)
            except DeliveryFailed:
                return None
            self._batch_channels[key] = channel if isinstance(channel, BatchChannel) else None
        return self._batch_channels[key]

    def _send_group(self, rows: list[OutboxRow]) -> None:
        outcomes: dict[int, Outcome] = {}
        messages: list[OutboundMessage] = []
        for row in rows:
            try:
                messages.append(outbound_message(row))
            except DeliveryFailed as unusable:
                outcomes[row.outbox_id] = self._failed(row, unusable)
        by_id = {row.outbox_id: row for row in rows}
        try:
            channel = self._batch_channel(rows[0].channel)
            if channel is None:
                raise DeliveryFailed(f"channel {rows[0].channel!r} is no longer configured")
            results = list(channel.send_batch(messages))
            if len(results) != len(messages):
                raise RuntimeError(
                    f"channel {rows[0].channel!r} returned {len(results)} results for "
                    f"{len(messages)} messages"
                )
        except BaseException as exc:  # a bug in a channel becomes a retry, not a lost row
            logger.exception("sending %d outbox rows as a batch raised", len(messages))
            if isinstance(exc, DeliveryFailed):
                group_failure = exc
            else:
                group_failure = DeliveryFailed(f"{type(exc).__name__}: {exc}")
            results = [group_failure] * len(messages)
        now = self.clock.now_us()
        for message, result in zip(messages, results, strict=True):
            row = by_id[message.outbox_id]
            if isinstance(result, DeliveryFailed):
                outcomes[row.outbox_id] = self._failed(row, result)
            else:
                outcomes[row.outbox_id] = Outcome(
                    row.outbox_id, "sent", now, provider_message_id=result.provider_message_id
                )
        for outcome in outcomes.values():
            self._done.put(outcome)

    def _send(self, row: OutboxRow) -> None:
        try:
            outcome = self._attempt(row)
        except BaseException as exc:  # a bug in a channel becomes a retry, not a lost row
            logger.exception("sending outbox row %d raised", row.outbox_id)
            failure = DeliveryFailed(f"{type(exc).__name__}: {exc}")
            outcome = self._failed(row, failure)
        self._done.put(outcome)

    def _attempt(self, row: OutboxRow) -> Outcome:
        try:
            message = outbound_message(row)
            result = self.channels.get(row.channel).send(message)
        except DeliveryFailed as failure:
            return self._failed(row, failure)
        return Outcome(
            row.outbox_id,
            "sent",
            self.clock.now_us(),
            provider_message_id=result.provider_message_id,
        )

    def _failed(self, row: OutboxRow, failure: DeliveryFailed) -> Outcome:
        policy = self.channels.policy(row.channel)
        outcome = after_failure(
            row.outbox_id, row.attempts, failure, policy, self.clock.now_us(), self._rng
        )
        self._log_failure(row, outcome)
        return outcome

    def _drain(self, wait_s: float) -> list[Outcome]:
        outcomes: list[Outcome] = []
        try:
            if wait_s > 0:
                outcomes.append(self._done.get(timeout=wait_s))
            while True:
                outcomes.append(self._done.get_nowait())
        except queue.Empty:
            return outcomes

    def _record(self, outcomes: list[Outcome]) -> int:
        if not outcomes:
            return 0
        self.outbox.record(outcomes)
        for outcome in outcomes:
            self._in_flight.discard(outcome.outbox_id)
            if outcome.status == "sent":
                self.sent += 1
            elif outcome.status == "failed":
                self.failed += 1
            else:
                self.dead += 1
        return len(outcomes)

    def _log_failure(self, row: OutboxRow, outcome: Outcome) -> None:
        key = f"{row.channel}:{outcome.status}:{outcome.error}"
        now = time.monotonic()
        last = self._last_logged.get(key)
        if last is not None and now - last < LOG_EVERY_SECONDS:
            return
        if len(self._last_logged) > 1000:
            self._last_logged.clear()
        self._last_logged[key] = now
        level = logging.ERROR if outcome.status == "dead" else logging.WARNING
        logger.log(
            level,
            "outbox row %d (rule %s, channel %s, attempt %d) %s: %s",
            row.outbox_id,
            row.rule,
            row.channel,
            row.attempts,
            "is dead" if outcome.status == "dead" else "failed; will retry",
            outcome.error,
        )


def outbound_message(row: OutboxRow) -> OutboundMessage:
    """Return the message a channel gets for a claimed row; raise if the payload is unusable."""
    try:
        payload: Any = orjson.loads(row.payload)
    except orjson.JSONDecodeError as exc:
        raise DeliveryFailed(f"the payload is not valid JSON: {exc}", retryable=False) from None
    if not isinstance(payload, dict):
        raise DeliveryFailed(
            f"the payload is a JSON {type(payload).__name__}, expected an object",
            retryable=False,
        )
    return OutboundMessage(
        outbox_id=row.outbox_id,
        idempotency_key=row.idempotency_key,
        person_id=row.person_id,
        rule=row.rule,
        step=row.step,
        channel=row.channel,
        payload=payload,
        created_at=row.created_at,
        attempt=row.attempts,
    )
