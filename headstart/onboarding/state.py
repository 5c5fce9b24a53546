"""Derive a person's onboarding state from the plan.

Rules, stated once here and in the docs:

- The sign-up time is the earliest event that matches ``signup``.
- A milestone is reached at its ``min_count``-th matching event, by event time. Events before
  sign-up count (a visitor may take the tour before creating an account).
- A person is activated when every activation milestone is reached no later than
  ``within_days`` after sign-up. The activation time is the latest of those milestones, and
  time-to-value (TTV) is activation time minus sign-up time, floored at zero.
- Without a sign-up there is no onboarding clock: milestones are still listed, but the
  person is neither activated nor counted in the report's denominators.
"""

from __future__ import annotations

from dataclasses import dataclass

from headstart.plan.model import Plan
from headstart.profiles.person import Person
from headstart.timeutil import MICROS_PER_DAY


@dataclass(frozen=True, slots=True)
class OnboardingState:
    signup_at: int | None
    milestones: dict[str, int | None]
    activated_at: int | None

    @property
    def activated(self) -> bool:
        return self.activated_at is not None

    @property
    def ttv_us(self) -> int | None:
        if self.activated_at is None or self.signup_at is None:
            return None
        return max(0, self.activated_at - self.signup_at)


def compute_state(plan: Plan, person: Person) -> OnboardingState:
    reached: dict[str, int | None] = {}
    for milestone in plan.milestones:
        times = person.evidence.get(milestone.name, [])
        reached[milestone.name] = (
            times[milestone.min_count - 1] if len(times) >= milestone.min_count else None
        )

    return OnboardingState(
        signup_at=person.signup_at,
        milestones=reached,
        activated_at=activation_time(plan, person.signup_at, reached),
    )


def activation_window_us(plan: Plan) -> int:
    """Return the activation window in microseconds, rounded to the nearest microsecond.

    Truncating would cut a microsecond off windows such as 0.7 days, because the binary
    product 0.7 * 86_400_000_000 is 60_479_999_999.99999.
    """
    return round(plan.activation.within_days * MICROS_PER_DAY)


def activation_time(
    plan: Plan, signup_at: int | None, reached: dict[str, int | None]
) -> int | None:
    if signup_at is None:
        return None
    deadline = signup_at + activation_window_us(plan)
    times = [reached[name] for name in plan.activation.milestones]
    if any(time is None or time > deadline for time in times):
        return None
    return max(max(time for time in times if time is not None), signup_at)
