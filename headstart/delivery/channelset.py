"""The channels configured in a plan, built once and shared by the dispatcher's threads."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from headstart.channels.base import (
    Channel,
    ChannelConfigError,
    ChannelContext,
    DeliveryFailed,
)
from headstart.channels.registry import build_channel
from headstart.plan.channels import RetryPolicy
from headstart.plan.model import Plan

logger = logging.getLogger(__name__)

DEFAULT_POLICY = RetryPolicy()


class ChannelSet:
    """Built channels by name; a channel that failed to build keeps its error for each send."""

    def __init__(
        self,
        channels: Mapping[str, Channel],
        errors: Mapping[str, str] | None = None,
        policies: Mapping[str, RetryPolicy] | None = None,
    ):
        self._channels = dict(channels)
        self._errors = dict(errors or {})
        self._policies = dict(policies or {})

    @classmethod
    def from_plan(cls, plan: Plan | None, context: ChannelContext) -> ChannelSet:
        channels: dict[str, Channel] = {}
        errors: dict[str, str] = {}
        policies: dict[str, RetryPolicy] = {}
        for name, config in (plan.channels if plan is not None else {}).items():
            policies[name] = config.retry
            try:
                channels[name] = build_channel(name, config, context)
            except ChannelConfigError as exc:
                logger.error("%s", exc.message)
                errors[name] = exc.message
        if channels:
            logger.info("channels ready: %s", ", ".join(sorted(channels)))
        return cls(channels, errors, policies)

    def get(self, name: str) -> Channel:
        """Return the channel ``name``, or raise a retryable failure that names the problem."""
        channel = self._channels.get(name)
        if channel is not None:
            return channel
        error = self._errors.get(name)
        if error is not None:
            raise DeliveryFailed(f"channel {name!r} is not usable: {error}")
        configured = ", ".join(sorted(self._channels)) or "none"
        raise DeliveryFailed(
            f"channel {name!r} is not configured in the plan's channels (configured: "
            f"{configured}); add it, then `headstart messages retry` the dead rows"
        )

    def policy(self, name: str) -> RetryPolicy:
        return self._policies.get(name, DEFAULT_POLICY)

    def names(self) -> list[str]:
        return sorted(self._channels)

    def close(self) -> None:
        for name, channel in self._channels.items():
            try:
                channel.close()
            except Exception:
                logger.exception("failed to close channel %s", name)
