"""Derived state: identity graph, person profiles, onboarding state, merge log, warnings.

Everything here can be rebuilt by replaying the event log.
"""

from headstart.state.store import StateStore

__all__ = ["StateStore"]
