"""Identity resolution: which person an event belongs to, merging devices into one person."""

from headstart.identity.resolver import IdentityResolver

__all__ = ["IdentityResolver"]
