"""The in-app channel: puts messages into the person's inbox, read by the browser snippet.

Browser requests are scoped to one person by identity verification: the product's backend
computes ``user_hash = hex(hmac_sha256(secret, user_id))`` and hands it to the page, which
sends ``user_id`` and ``user_hash`` with every inbox request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from headstart.channels.base import ChannelContext, DeliveryFailed, OutboundMessage, SendResult
from headstart.channels.inbox import InboxStore
from headstart.plan.channels import InAppChannel as InAppConfig
from headstart.timeutil import MICROS_PER_DAY, parse_iso

logger = logging.getLogger(__name__)

# Payload fields that steer delivery rather than being content for the widget.
_CONTROL_FIELDS = frozenset(("recipient", "priority", "expires_at"))


def user_hash(secret: str, user_id: str) -> str:
    """Return the identity-verification hash of ``user_id``: hex HMAC-SHA256 keyed by ``secret``."""
    return hmac.new(secret.encode("utf-8"), user_id.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_user_hash(secrets: list[str], user_id: str, presented: str) -> bool:
    """Return True when ``presented`` is the hash of ``user_id`` under one of ``secrets``."""
    return any(
        hmac.compare_digest(user_hash(secret, user_id), presented.lower()) for secret in secrets
    )


def inbox_message_id(idempotency_key: str) -> str:
    """Return the public id of the inbox message for an outbox row: stable across retries."""
    return "msg_" + hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:24]


class InAppChannel:
    def __init__(self, name: str, config: InAppConfig, context: ChannelContext):
        self.name = name
        self.config = config
        self.clock = context.clock
        # Check the secret now: without it no browser can read the inbox, so nothing is delivered.
        context.secret(config.identity_secret_env, channel=name, setting="identity_secret_env")
        self._inbox = InboxStore(context.state_path)

    def send(self, message: OutboundMessage) -> SendResult:
        result = self.send_batch([message])[0]
        if isinstance(result, DeliveryFailed):
            raise result
        return result

    def send_batch(self, messages: list[OutboundMessage]) -> list[SendResult | DeliveryFailed]:
        """Put messages into the inbox in one transaction, so a backlog costs one write."""
        now = self.clock.now_us()
        results: list[SendResult | DeliveryFailed] = []
        rows: list[dict[str, Any]] = []
        for message in messages:
            try:
                rows.append(self._row(message, now))
            except DeliveryFailed as failure:
                results.append(failure)
                continue
            results.append(SendResult(provider_message_id=rows[-1]["message_id"]))
        inserted = iter(self._inbox.deliver_many(rows))
        for message, result in zip(messages, results, strict=True):
            if isinstance(result, SendResult) and not next(inserted):
                logger.info(
                    "in-app message %s was already in the inbox (outbox row %d)",
                    result.provider_message_id,
                    message.outbox_id,
                )
        return results

    def _row(self, message: OutboundMessage, now: int) -> dict[str, Any]:
        payload = message.payload
        return {
            "message_id": inbox_message_id(message.idempotency_key),
            "idempotency_key": message.idempotency_key,
            "outbox_id": message.outbox_id,
            "person_id": message.person_id,
            "rule": message.rule,
            "step": message.step,
            "priority": _priority(payload),
            "content": {k: v for k, v in payload.items() if k not in _CONTROL_FIELDS},
            "delivered_at": now,
            "expires_at": self._expires_at(payload, now),
        }

    def close(self) -> None:
        self._inbox.close()

    def _expires_at(self, payload: Any, now: int) -> int | None:
        explicit = payload.get("expires_at")
        if isinstance(explicit, str):
            try:
                return parse_iso(explicit)
            except ValueError:
                raise DeliveryFailed(
                    f"payload expires_at={explicit!r} is not an ISO-8601 timestamp",
                    retryable=False,
                ) from None
        if isinstance(explicit, int) and not isinstance(explicit, bool):
            return explicit
        days = self.config.expire_after_days
        return None if days is None else now + int(days * MICROS_PER_DAY)


def _priority(payload: Any) -> int:
    value = payload.get("priority", 0)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float):
        return int(value)
    return 0
