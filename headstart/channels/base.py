"""The interface every channel implements, built-in or provided by a plugin.

A channel gets one ``OutboundMessage`` at a time and either returns a ``SendResult`` or raises
``DeliveryFailed``. Sends are at-least-once: after a crash the dispatcher sends the same row
again with the same ``idempotency_key``, so a channel passes the key to its receiver in a form
the receiver can deduplicate on (an SMTP Message-ID, an ``Idempotency-Key`` header, a push
topic, a unique inbox key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from headstart.errors import HeadstartError
from headstart.timeutil import Clock


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One outbox row handed to a channel.

    ``payload`` is the rendered content the trigger engine wrote: ``subject``, ``text``,
    ``html``, ``title``, ``body``, ``url``, ``data``, ``recipient``, ``template``,
    ``template_version`` and ``priority``, as far as the channel uses them.
    ``attempt`` is 1 on the first try.
    """

    outbox_id: int
    idempotency_key: str
    person_id: str
    rule: str
    step: str
    channel: str
    payload: Mapping[str, Any]
    created_at: int
    attempt: int = 1

    @property
    def key_digest(self) -> str:
        """Return a stable hex digest of the idempotency key, safe in headers and ids."""
        return hashlib.sha256(self.idempotency_key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class SendResult:
    """A message the receiver accepted, with the receiver's id for it when there is one."""

    provider_message_id: str | None = None


class DeliveryFailed(Exception):
    """A send that did not succeed.

    ``retryable`` False makes the message dead at once (for example a webhook's 400 or an
    email without a recipient). ``retry_after_s`` is the receiver's requested wait, which
    replaces the backoff delay.
    """

    def __init__(self, message: str, *, retryable: bool = True, retry_after_s: float | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class ChannelConfigError(HeadstartError):
    """A channel whose configuration cannot be used, such as an unset secret variable."""

    status = 400
    code = "invalid_channel"


@runtime_checkable
class Channel(Protocol):
    """A delivery channel. ``send`` is called from worker threads, one message per call."""

    name: str

    def send(self, message: OutboundMessage) -> SendResult: ...

    def close(self) -> None: ...


@runtime_checkable
class BatchChannel(Channel, Protocol):
    """A channel that can also send many messages in one call, for example in one transaction.

    The dispatcher hands rows for such a channel over in groups. The result list is in the order
    of ``messages`` and holds a ``SendResult`` or a ``DeliveryFailed`` for each message.
    """

    def send_batch(self, messages: list[OutboundMessage]) -> list[SendResult | DeliveryFailed]: ...


@dataclass(frozen=True)
class ChannelContext:
    """What a channel factory gets besides its own configuration."""

    state_path: Path
    clock: Clock
    environ: Mapping[str, str] = field(default_factory=dict)

    def secret(self, variable: str, *, channel: str, setting: str) -> str:
        """Return the value of the environment variable ``variable``, or raise if it is unset."""
        value = self.environ.get(variable)
        if not value:
            raise ChannelConfigError(
                f"channel {channel!r}: environment variable {variable} (named by {setting}) "
                "is not set; export it before starting headstart"
            )
        return value


ChannelFactory = Callable[[str, Any, ChannelContext], Channel]
"""Build a channel from its name, its validated plan entry and the context."""
