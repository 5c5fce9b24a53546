"""Email over SMTP: a text message, multipart/alternative with an HTML part when there is one.

The Message-ID is derived from the idempotency key, so a message sent again after a crash
carries the same Message-ID and the receiving side can drop the repeat.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

from headstart.channels.base import ChannelContext, DeliveryFailed, OutboundMessage, SendResult
from headstart.plan.channels import SmtpChannel

logger = logging.getLogger(__name__)

RECIPIENT_FIELDS = ("to", "recipient", "email")


class EmailChannel:
    """Sends each message in its own SMTP session."""

    def __init__(self, name: str, config: SmtpChannel, context: ChannelContext):
        self.name = name
        self.config = config
        self._credentials: tuple[str, str] | None = None
        if config.username_env is not None and config.password_env is not None:
            self._credentials = (
                context.secret(config.username_env, channel=name, setting="username_env"),
                context.secret(config.password_env, channel=name, setting="password_env"),
            )
        _, sender_address = parseaddr(config.sender)
        self._domain = sender_address.rpartition("@")[2] or "headstart.invalid"

    def send(self, message: OutboundMessage) -> SendResult:
        email = self.compose(message)
        try:
            with self._connect() as smtp:
                smtp.send_message(email)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryFailed(
                f"the SMTP server refused the recipient: {_refusals(exc)}", retryable=False
            ) from None
        except smtplib.SMTPResponseException as exc:
            # 4xx replies are temporary (RFC 5321 section 4.2.1); 5xx are permanent.
            reply = exc.smtp_error
            if isinstance(reply, bytes):
                reply = reply.decode("utf-8", "replace")
            raise DeliveryFailed(
                f"the SMTP server replied {exc.smtp_code} {reply}",
                retryable=exc.smtp_code < 500,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(
                f"SMTP delivery to {self.config.host}:{self.config.port} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        return SendResult(provider_message_id=str(email["Message-ID"]))

    def compose(self, message: OutboundMessage) -> EmailMessage:
        """Build the email for an outbox row; raise a non-retryable failure if it lacks content."""
        payload = message.payload
        recipient = _recipient(payload)
        subject = payload.get("subject")
        text = payload.get("text")
        html = payload.get("html")
        if not isinstance(subject, str) or not subject:
            raise DeliveryFailed("the payload has no 'subject' for the email", retryable=False)
        if not isinstance(text, str) and not isinstance(html, str):
            raise DeliveryFailed("the payload has neither 'text' nor 'html'", retryable=False)

        email = EmailMessage()
        email["From"] = self.config.sender
        email["To"] = recipient
        email["Subject"] = subject
        email["Date"] = formatdate(message.created_at / 1_000_000, usegmt=True)
        email["Message-ID"] = f"<{message.key_digest[:40]}@{self._domain}>"
        reply_to = payload.get("reply_to") or self.config.reply_to
        if isinstance(reply_to, str) and reply_to:
            email["Reply-To"] = reply_to
        self._add_unsubscribe(email, message.person_id, recipient)

        email.set_content(text if isinstance(text, str) else html_to_text(str(html)))
        if isinstance(html, str):
            email.add_alternative(html, subtype="html")
        return email

    def close(self) -> None:
        return None

    def _add_unsubscribe(self, email: EmailMessage, person_id: str, recipient: str) -> None:
        unsubscribe = self.config.unsubscribe
        if unsubscribe is None:
            return
        targets = []
        if unsubscribe.mailto is not None:
            targets.append(f"<mailto:{unsubscribe.mailto}?subject=unsubscribe>")
        if unsubscribe.url is not None:
            url = unsubscribe.url.replace("{person_id}", quote(person_id, safe=""))
            url = url.replace("{email}", quote(recipient, safe=""))
            targets.append(f"<{url}>")
            # RFC 8058 one-click: the receiver POSTs this body to the https URL.
            email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        email["List-Unsubscribe"] = ", ".join(targets)

    def _connect(self) -> smtplib.SMTP:
        config = self.config
        smtp: smtplib.SMTP
        if config.security == "tls":
            smtp = smtplib.SMTP_SSL(
                config.host,
                config.port,
                timeout=config.timeout_s,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout_s)
        try:
            if config.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if self._credentials is not None:
                smtp.login(*self._credentials)
        except BaseException:
            smtp.close()
            raise
        return smtp


def _recipient(payload: Any) -> str:
    for field in RECIPIENT_FIELDS:
        value = payload.get(field)
        if isinstance(value, str) and "@" in value:
            try:
                Address(addr_spec=parseaddr(value)[1])
            except (ValueError, IndexError):
                continue
            return value
    raise DeliveryFailed(
        "the payload has no valid email address in 'to', 'recipient' or 'email'",
        retryable=False,
    )


def _refusals(exc: smtplib.SMTPRecipientsRefused) -> str:
    return "; ".join(
        f"{address}: {code} {reply.decode('utf-8', 'replace')}"
        for address, (code, reply) in exc.recipients.items()
    )


class _TextExtractor(HTMLParser):
    SKIP = frozenset(("script", "style", "head"))
    BREAKS = frozenset(("br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"))

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in self.BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Return the visible text of an HTML body, for the text part when only HTML was rendered."""
    extractor = _TextExtractor()
    extractor.feed(html)
    lines = (" ".join(line.split()) for line in "".join(extractor.parts).splitlines())
    return "\n".join(line for line in lines if line) + "\n"
