"""Signed JSON webhooks.

Each request is a POST of a JSON object with the headers

- ``Idempotency-Key``: the outbox row's key, the same on every retry;
- ``X-Headstart-Timestamp``: Unix seconds when the request was signed;
- ``X-Headstart-Signature``: ``v1=`` and the hex HMAC-SHA256, keyed with the channel's secret,
  of ``f"{timestamp}.{body}"`` over the raw body bytes.

A receiver checks a request with ``verify_signature``. Responses 2xx mean delivered; 408, 429
and 5xx are retried (honouring ``Retry-After``); any other status makes the message dead.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from headstart.channels.base import ChannelContext, DeliveryFailed, OutboundMessage, SendResult
from headstart.plan.channels import WebhookChannel as WebhookConfig
from headstart.timeutil import MICROS_PER_SECOND, to_iso

logger = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Headstart-Timestamp"
SIGNATURE_HEADER = "X-Headstart-Signature"
ATTEMPT_HEADER = "X-Headstart-Attempt"
SIGNATURE_VERSION = "v1"
RETRYABLE_STATUSES = frozenset((408, 429))
# A receiver should reject a signature older than this, so a captured request cannot be replayed.
DEFAULT_TOLERANCE_S = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the ``X-Headstart-Signature`` value for a body signed at ``timestamp``."""
    signed = str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now_s: float | None = None,
) -> bool:
    """Return True when ``signature`` matches ``body`` and ``timestamp`` is recent enough.

    Pass the raw request body (not re-serialized JSON) and the two header values.
    ``signature`` may list several comma-separated ``v1=`` values, as during a secret
    rotation; one match is enough.
    """
    if not timestamp or not signature:
        return False
    try:
        signed_at = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now_s is None else now_s
    if abs(current - signed_at) > tolerance_s:
        return False
    expected = sign(secret, signed_at, body)
    return any(
        hmac.compare_digest(candidate.strip(), expected) for candidate in signature.split(",")
    )


class WebhookChannel:
    """POSTs each message to the channel's URL or to the destination the row names."""

    def __init__(self, name: str, config: WebhookConfig, context: ChannelContext):
        self.name = name
        self.config = config
        self.clock = context.clock
        default_secret = context.secret(config.secret_env, channel=name, setting="secret_env")
        self._targets: dict[str | None, tuple[str, str]] = {}
        if config.url is not None:
            self._targets[None] = (config.url, default_secret)
        for destination, target in config.destinations.items():
            secret = default_secret
            if target.secret_env is not None:
                secret = context.secret(
                    target.secret_env,
                    channel=name,
                    setting=f"destinations.{destination}.secret_env",
                )
            self._targets[destination] = (target.url, secret)
        self._client = httpx.Client(
            timeout=config.timeout_s, follow_redirects=False, trust_env=False
        )

    def send(self, message: OutboundMessage) -> SendResult:
        url, secret = self._target(message)
        body = orjson.dumps(request_body(message))
        timestamp = self.clock.now_us() // MICROS_PER_SECOND
        headers = {
            **self.config.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": message.idempotency_key,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp, body),
            ATTEMPT_HEADER: str(message.attempt),
        }
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise DeliveryFailed(
                f"POST {url} timed out after {self.config.timeout_s:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise DeliveryFailed(f"POST {url} failed: {type(exc).__name__}: {exc}") from None
        return _result(url, response)

    def close(self) -> None:
        self._client.close()

    def _target(self, message: OutboundMessage) -> tuple[str, str]:
        """Return the URL and secret for a row: its named destination, else the default url.

        The trigger engine puts a step's ``webhook`` name, or else the user id, in
        ``recipient``, so a recipient that names no destination goes to the default url.
        """
        recipient = message.payload.get("recipient")
        if isinstance(recipient, str) and recipient in self._targets:
            return self._targets[recipient]
        default = self._targets.get(None)
        if default is not None:
            return default
        known = ", ".join(name for name in self._targets if name is not None)
        raise DeliveryFailed(
            f"channel {self.name!r} has no destination {recipient!r} and no default url; "
            f"destinations: {known}",
            retryable=False,
        )


def request_body(message: OutboundMessage) -> dict[str, Any]:
    """Return the JSON object a webhook receives for an outbox row."""
    return {
        "id": message.idempotency_key,
        "rule": message.rule,
        "step": message.step,
        "person_id": message.person_id,
        "channel": message.channel,
        "created_at": to_iso(message.created_at),
        "payload": dict(message.payload),
    }


def _result(url: str, response: httpx.Response) -> SendResult:
    status = response.status_code
    if 200 <= status < 300:
        return SendResult(provider_message_id=response.headers.get("x-request-id"))
    retryable = status in RETRYABLE_STATUSES or status >= 500
    raise DeliveryFailed(
        f"POST {url} returned {status}: {response.text[:200]}",
        retryable=retryable,
        retry_after_s=parse_retry_after(response.headers) if retryable else None,
    )


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Return the wait a ``Retry-After`` header requests, in seconds (delay or HTTP date)."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
