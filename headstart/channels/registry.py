"""Channel types by name, and building the configured channels of a plan.

Built-in types register through ``register_channel_type`` exactly as a plugin may. A package
can also publish a factory in the ``headstart.channels`` entry-point group, with the channel
type as the entry point's name::

    [project.entry-points."headstart.channels"]
    sms = "acme_sms:build_channel"

The factory is called as ``factory(name, config, context)`` with the plan entry (a
``PluginChannel`` whose ``options()`` holds the type's own fields) and returns a ``Channel``.
"""

from __future__ import annotations

import logging
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from headstart.channels.base import Channel, ChannelConfigError, ChannelContext, ChannelFactory
from headstart.plan.channels import ChannelConfig

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "headstart.channels"

_FACTORIES: dict[str, ChannelFactory] = {}


def register_channel_type(kind: str, factory: ChannelFactory) -> None:
    """Make channels of type ``kind`` buildable; a later registration replaces an earlier one."""
    _FACTORIES[kind] = factory


def _lazy(module: str, attribute: str) -> ChannelFactory:
    """Return a factory that imports its module on first use, so unused channels cost nothing."""

    def build(name: str, config: Any, context: ChannelContext) -> Channel:
        factory: ChannelFactory = getattr(import_module(module), attribute)
        return factory(name, config, context)

    return build


register_channel_type("smtp", _lazy("headstart.channels.email", "EmailChannel"))
register_channel_type("webhook", _lazy("headstart.channels.webhook", "WebhookChannel"))
register_channel_type("web_push", _lazy("headstart.channels.push", "WebPushChannel"))
register_channel_type("in_app", _lazy("headstart.channels.inapp", "InAppChannel"))

_plugins_loaded = False


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _FACTORIES:
            continue
        try:
            register_channel_type(entry.name, entry.load())
        except Exception:
            logger.exception("failed to load channel plugin %s = %s", entry.name, entry.value)


def channel_types() -> list[str]:
    """Return the channel types that can be built: built-in ones and installed plugins."""
    _load_plugins()
    return sorted(_FACTORIES)


def build_channel(name: str, config: ChannelConfig, context: ChannelContext) -> Channel:
    """Build the channel ``name`` from its plan entry; raise ``ChannelConfigError`` if unusable."""
    _load_plugins()
    factory = _FACTORIES.get(config.type)
    if factory is None:
        raise ChannelConfigError(
            f"channel {name!r} has type {config.type!r}, which no installed plugin provides; "
            f"expected one of {', '.join(channel_types())}"
        )
    return factory(name, config, context)
