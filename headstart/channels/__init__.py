"""Delivery channels: email, webhook, Web Push and the in-app inbox, behind one interface."""

from headstart.channels.base import (
    Channel,
    ChannelContext,
    DeliveryFailed,
    OutboundMessage,
    SendResult,
)

__all__ = ["Channel", "ChannelContext", "DeliveryFailed", "OutboundMessage", "SendResult"]
