"""Per-person profiles: identifiers, traits, activity counts and onboarding evidence."""

from headstart.profiles.person import Person, TraitValue

__all__ = ["Person", "TraitValue"]
