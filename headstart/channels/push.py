"""Web Push: encrypted notifications (RFC 8291, aes128gcm) authenticated with VAPID (RFC 8292).

Browsers register a subscription (endpoint plus the ``p256dh`` and ``auth`` keys) through the
in-app API; a message goes to every subscription of the person. The ``Topic`` header is derived
from the idempotency key, so a push service replaces a repeat that it has not delivered yet.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import http_ece
import httpx
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from headstart.channels.base import (
    ChannelConfigError,
    ChannelContext,
    DeliveryFailed,
    OutboundMessage,
    SendResult,
)
from headstart.channels.webhook import parse_retry_after
from headstart.channels.writes import prefer_polling, write_transaction
from headstart.plan.channels import WebPushChannel as WebPushConfig
from headstart.sqlite import connect
from headstart.state.schema import SCHEMA

logger = logging.getLogger(__name__)

# Push services accept at least 4096 bytes of encrypted body (RFC 8030 section 7.2).
MAX_PLAINTEXT_BYTES = 3000
# Lifetime of a VAPID token; RFC 8292 allows at most 24 hours.
VAPID_TOKEN_SECONDS = 12 * 3600
GONE_STATUSES = frozenset((404, 410))


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_vapid_key(text: str) -> ec.EllipticCurvePrivateKey:
    """Parse a VAPID private key: base64url of the raw 32-byte scalar, or a PEM block."""
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(stripped.encode("ascii"), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the PEM key is not an elliptic-curve key")
        return key
    raw = b64url_decode(stripped)
    if len(raw) != 32:
        raise ValueError(f"a raw VAPID key is 32 bytes; this one is {len(raw)}")
    return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())


def public_key_text(key: ec.EllipticCurvePrivateKey) -> str:
    """Return the base64url uncompressed public key, the browser's ``applicationServerKey``."""
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url_encode(point)


def generate_vapid_key() -> tuple[str, str]:
    """Return a new (private, public) VAPID key pair, both base64url."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    return b64url_encode(private), public_key_text(key)


@dataclass(frozen=True, slots=True)
class Subscription:
    endpoint: str
    user_id: str
    p256dh: str
    auth: str


class PushSubscriptions:
    """Subscriptions in ``state.sqlite``, keyed by endpoint; safe to share between threads."""

    def __init__(self, path: Path):
        self._conn = connect(path, durable=True, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(SCHEMA)
            prefer_polling(self._conn)

    def add(self, user_id: str, endpoint: str, p256dh: str, auth: str, now: int) -> None:
        """Store a subscription; one registered again (or by another user) is replaced."""
        with self._lock, write_transaction(self._conn):
            self._conn.execute(
                "INSERT INTO push_subscriptions (endpoint, user_id, p256dh, auth, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint) DO UPDATE SET"
                " user_id = excluded.user_id, p256dh = excluded.p256dh, auth = excluded.auth,"
                " created_at = excluded.created_at",
                (endpoint, user_id, p256dh, auth, now),
            )

    def remove(self, endpoint: str, user_id: str | None = None) -> bool:
        """Delete a subscription (only ``user_id``'s when given); return whether one existed."""
        query = "DELETE FROM push_subscriptions WHERE endpoint = ?"
        params: tuple[str, ...] = (endpoint,)
        if user_id is not None:
            query += " AND user_id = ?"
            params = (endpoint, user_id)
        with self._lock, write_transaction(self._conn):
            return self._conn.execute(query, params).rowcount > 0

    def of_user(self, user_id: str) -> list[Subscription]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT endpoint, user_id, p256dh, auth FROM push_subscriptions"
                " WHERE user_id = ? ORDER BY created_at",
                (user_id,),
            ).fetchall()
        return [Subscription(*map(str, row)) for row in rows]

    def of_person(self, person_id: str) -> list[Subscription]:
        """Return the subscriptions of every user id that belongs to the person now."""
        with self._lock:
            survivor = self._conn.execute(
                "SELECT merged_into FROM merged_persons WHERE person_id = ?", (person_id,)
            ).fetchone()
            current = str(survivor[0]) if survivor is not None else person_id
            rows = self._conn.execute(
                "SELECT s.endpoint, s.user_id, s.p256dh, s.auth FROM push_subscriptions s"
                " JOIN identifiers i ON i.kind = 'user_id' AND i.value = s.user_id"
                " WHERE i.person_id = ? ORDER BY s.created_at",
                (current,),
            ).fetchall()
        return [Subscription(*map(str, row)) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class WebPushChannel:
    def __init__(self, name: str, config: WebPushConfig, context: ChannelContext):
        self.name = name
        self.config = config
        secret = context.secret(
            config.vapid_private_key_env, channel=name, setting="vapid_private_key_env"
        )
        try:
            self._vapid = Vapid02(private_key=load_vapid_key(secret))
        except ValueError as exc:
            raise ChannelConfigError(
                f"channel {name!r}: the key in {config.vapid_private_key_env} is not a VAPID "
                f"private key ({exc}); `headstart messages vapid-keys` makes one"
            ) from None
        self._subscriptions = PushSubscriptions(context.state_path)
        self._client = httpx.Client(
            timeout=config.timeout_s, follow_redirects=False, trust_env=False
        )

    def send(self, message: OutboundMessage) -> SendResult:
        subscriptions = self._subscriptions.of_person(message.person_id)
        if not subscriptions:
            raise DeliveryFailed(
                f"person {message.person_id} has no push subscription", retryable=False
            )
        plaintext = orjson.dumps(notification(message))
        if len(plaintext) > MAX_PLAINTEXT_BYTES:
            raise DeliveryFailed(
                f"the notification is {len(plaintext)} bytes; push allows about "
                f"{MAX_PLAINTEXT_BYTES}, so shorten the title, body or data",
                retryable=False,
            )

        accepted: list[str] = []
        failures: list[DeliveryFailed] = []
        for subscription in subscriptions:
            try:
                accepted.append(self._push(subscription, plaintext, message))
            except DeliveryFailed as exc:
                failures.append(exc)
        if accepted:
            for failure in failures:
                logger.warning(
                    "outbox row %d: one push subscription failed: %s",
                    message.outbox_id,
                    failure.message,
                )
            return SendResult(provider_message_id=" ".join(accepted)[:1000])
        retryable = [failure for failure in failures if failure.retryable]
        if retryable:
            raise retryable[0]
        raise failures[0]

    def close(self) -> None:
        self._client.close()
        self._subscriptions.close()

    def _push(self, subscription: Subscription, plaintext: bytes, message: OutboundMessage) -> str:
        body = encrypt(plaintext, subscription)
        headers = {
            **self._vapid_headers(subscription.endpoint),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self.config.ttl_s),
            "Urgency": self.config.urgency,
            "Topic": topic(message.idempotency_key),
        }
        try:
            response = self._client.post(subscription.endpoint, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise DeliveryFailed(
                f"push to {_origin(subscription.endpoint)} failed: {type(exc).__name__}: {exc}"
            ) from None
        status = response.status_code
        if status in GONE_STATUSES:
            self._subscriptions.remove(subscription.endpoint)
            logger.info(
                "push subscription at %s is gone; removed it", _origin(subscription.endpoint)
            )
            raise DeliveryFailed(f"the push subscription is gone ({status})", retryable=False)
        if not 200 <= status < 300:
            retryable = status in (408, 429) or status >= 500
            raise DeliveryFailed(
                f"push service {_origin(subscription.endpoint)} returned {status}: "
                f"{response.text[:200]}",
                retryable=retryable,
                retry_after_s=parse_retry_after(response.headers) if retryable else None,
            )
        return response.headers.get("location") or _origin(subscription.endpoint)

    def _vapid_headers(self, endpoint: str) -> dict[str, str]:
        claims = {
            "aud": _origin(endpoint),
            "sub": self.config.subject,
            # Push services check the expiry against their own wall clock, never a test clock.
            "exp": int(time.time()) + VAPID_TOKEN_SECONDS,
        }
        headers: dict[str, str] = self._vapid.sign(claims)
        return headers


def notification(message: OutboundMessage) -> dict[str, Any]:
    """Return the JSON a service worker receives; ``tag`` lets it replace a repeat."""
    payload = message.payload
    content = {
        key: payload[key] for key in ("title", "body", "url", "icon", "data") if key in payload
    }
    return {
        "id": message.key_digest[:24],
        "tag": message.key_digest[:24],
        "rule": message.rule,
        "step": message.step,
        **content,
    }


def topic(idempotency_key: str) -> str:
    """Return a Topic header value (at most 32 base64url characters) for a send intent."""
    return b64url_encode(hashlib.sha256(idempotency_key.encode("utf-8")).digest())[:32]


def encrypt(plaintext: bytes, subscription: Subscription) -> bytes:
    """Encrypt for one subscription with a fresh server key and salt (RFC 8291)."""
    server_key = ec.generate_private_key(ec.SECP256R1())
    encrypted: bytes = http_ece.encrypt(
        plaintext,
        salt=os.urandom(16),
        private_key=server_key,
        dh=b64url_decode(subscription.p256dh),
        auth_secret=b64url_decode(subscription.auth),
        version="aes128gcm",
    )
    return encrypted


def _origin(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"
