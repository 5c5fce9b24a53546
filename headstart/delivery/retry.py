"""Deciding what follows a failed send: another attempt after a backoff, or a dead letter."""

from __future__ import annotations

import random

from headstart.channels.base import DeliveryFailed
from headstart.delivery.outbox import Outcome
from headstart.plan.channels import RetryPolicy
from headstart.timeutil import MICROS_PER_SECOND

# A receiver's Retry-After longer than this is capped, so one bad header cannot park a row for
# months.
MAX_RETRY_AFTER_S = 7 * 86_400


def backoff_s(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Return the wait after failed attempt ``attempt`` (1-based): capped exponential, jittered."""
    factor = float(2 ** min(attempt - 1, 60))
    ceiling = min(policy.max_delay_s, policy.base_delay_s * factor)
    return ceiling * (1.0 - policy.jitter * rng.random())


def after_failure(
    outbox_id: int,
    attempt: int,
    failure: DeliveryFailed,
    policy: RetryPolicy,
    now: int,
    rng: random.Random,
) -> Outcome:
    """Return the outcome of a failed attempt: ``failed`` with a retry time, or ``dead``."""
    if not failure.retryable:
        return Outcome(outbox_id, "dead", now, error=f"not retryable: {failure.message}")
    if attempt >= policy.max_attempts:
        return Outcome(
            outbox_id,
            "dead",
            now,
            error=f"gave up after {attempt} attempts: {failure.message}",
        )
    if failure.retry_after_s is not None:
        delay = min(max(failure.retry_after_s, 0.0), MAX_RETRY_AFTER_S)
    else:
        delay = backoff_s(policy, attempt, rng)
    return Outcome(
        outbox_id,
        "failed",
        now,
        next_attempt_at=now + int(delay * MICROS_PER_SECOND),
        error=failure.message,
    )
