"""Onboarding state per person, derived from the plan and the person's evidence."""

from headstart.onboarding.state import OnboardingState, compute_state

__all__ = ["OnboardingState", "compute_state"]
