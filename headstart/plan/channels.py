"""The ``channels:`` section of the plan: where and how messages are delivered.

Each entry names a channel (the name outbox rows refer to) and sets its ``type``. Secrets are
never written in the plan: a field ending in ``_env`` names the environment variable that holds
the secret, and the dispatcher reads it when it builds the channel.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictStr,
    Tag,
    field_validator,
    model_validator,
)

EnvName = Annotated[StrictStr, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]
DestinationName = Annotated[
    StrictStr, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")
]
HttpUrl = Annotated[StrictStr, Field(pattern=r"^https?://[^\s/]+", max_length=2000)]

BUILTIN_TYPES = ("smtp", "webhook", "web_push", "in_app")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """Retries of a failed send: exponential backoff with jitter, then a dead letter.

    Attempt ``n`` (1-based) that fails waits ``min(max_delay_s, base_delay_s * 2**(n-1))``
    scaled by a random factor in ``[1 - jitter, 1]``. A ``Retry-After`` from the receiver
    replaces that delay. The message is dead once ``max_attempts`` attempts failed.
    """

    max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    base_delay_s: Annotated[float, Field(gt=0, le=86_400)] = 10.0
    max_delay_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 3600.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.5


class Unsubscribe(_Strict):
    """Targets of the ``List-Unsubscribe`` header.

    ``url`` enables one-click unsubscribe (``List-Unsubscribe-Post``, RFC 8058) and may hold
    ``{person_id}`` and ``{email}`` placeholders, which are URL-encoded when filled in.
    """

    mailto: Annotated[StrictStr, Field(min_length=3, max_length=320)] | None = None
    url: Annotated[StrictStr, Field(pattern=r"^https://", max_length=2000)] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Unsubscribe:
        if self.mailto is None and self.url is None:
            raise ValueError("set mailto, url or both")
        return self


class SmtpChannel(_Strict):
    """Email over SMTP with text and HTML parts."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["smtp"]
    host: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    security: Literal["none", "starttls", "tls"] = "starttls"
    username_env: EnvName | None = None
    password_env: EnvName | None = None
    sender: Annotated[StrictStr, Field(alias="from", min_length=3, max_length=320)]
    reply_to: Annotated[StrictStr, Field(min_length=3, max_length=320)] | None = None
    unsubscribe: Unsubscribe | None = None
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 30.0
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    @model_validator(mode="after")
    def _credentials_together(self) -> SmtpChannel:
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("set both username_env and password_env, or neither")
        return self


class WebhookDestination(_Strict):
    """A named receiver URL; outbox rows pick it with ``recipient``."""

    url: HttpUrl
    secret_env: EnvName | None = None


class WebhookChannel(_Strict):
    """Signed JSON POSTs to ``url``, or to the destination an outbox row names."""

    type: Literal["webhook"]
    url: HttpUrl | None = None
    secret_env: EnvName
    destinations: dict[DestinationName, WebhookDestination] = Field(default_factory=dict)
    headers: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    @model_validator(mode="after")
    def _has_target(self) -> WebhookChannel:
        if self.url is None and not self.destinations:
            raise ValueError("set url, destinations or both")
        return self

    @field_validator("headers")
    @classmethod
    def _no_reserved_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            lowered = name.lower()
            if lowered.startswith("x-headstart-") or lowered in ("idempotency-key", "content-type"):
                raise ValueError(f"header {name!r} is set by headstart; remove it")
        return headers


class WebPushChannel(_Strict):
    """Web Push (RFC 8030) with VAPID (RFC 8292) to the browsers a person subscribed."""

    type: Literal["web_push"]
    vapid_private_key_env: EnvName
    subject: Annotated[StrictStr, Field(pattern=r"^(mailto:|https://)", max_length=320)]
    # Push services keep an undelivered message at most this long (RFC 8030 TTL header).
    ttl_s: Annotated[int, Field(ge=0, le=28 * 86_400)] = 86_400
    urgency: Literal["very-low", "low", "normal", "high"] = "normal"
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    retry: RetryPolicy = Field(default_factory=RetryPolicy)


class InAppChannel(_Strict):
    """The per-person in-app inbox, read by the browser snippet over REST and SSE.

    Browser requests prove whose inbox they read with ``hmac_sha256(secret, user_id)``,
    where the secret comes from ``identity_secret_env``.
    """

    type: Literal["in_app"]
    identity_secret_env: EnvName
    # A delivered message leaves the inbox after this many days unless the payload sets
    # ``expires_at``; None keeps it until it is dismissed or completed.
    expire_after_days: Annotated[float, Field(gt=0, le=3650)] | None = 30.0
    retry: RetryPolicy = Field(default_factory=RetryPolicy)


class PluginChannel(BaseModel):
    """A channel type provided by an installed plugin; the plugin validates the other fields."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _channel_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in BUILTIN_TYPES else "plugin"


ChannelConfig = Annotated[
    Annotated[SmtpChannel, Tag("smtp")]
    | Annotated[WebhookChannel, Tag("webhook")]
    | Annotated[WebPushChannel, Tag("web_push")]
    | Annotated[InAppChannel, Tag("in_app")]
    | Annotated[PluginChannel, Tag("plugin")],
    Discriminator(_channel_tag),
]

ChannelName = Annotated[
    StrictStr, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")
]
Channels = dict[ChannelName, ChannelConfig]
