"""Delivery: the dispatcher that sends outbox rows through channels, with retries."""

from headstart.delivery.dispatcher import Dispatcher
from headstart.delivery.outbox import OutboxStore

__all__ = ["Dispatcher", "OutboxStore"]
