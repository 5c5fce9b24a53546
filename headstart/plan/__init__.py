"""The onboarding plan: one YAML file that says what sign-up, milestones and activation are."""

from headstart.plan.load import load_plan, parse_plan
from headstart.plan.model import Plan

__all__ = ["Plan", "load_plan", "parse_plan"]
