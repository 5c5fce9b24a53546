"""headstart: a self-hostable user onboarding engine."""

__version__ = "0.1.0"
