"""Local receivers the channel tests deliver to: SMTP (aiosmtpd), a webhook endpoint and a
Web Push endpoint that checks VAPID and decrypts like a push service and a browser would.

Every peer listens on 127.0.0.1 on a free port and records what it received.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
import jwt
from aiosmtpd.controller import Controller
from conftest import free_port
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# ---- SMTP ---------------------------------------------------------------------------------


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()
        # (code, text) replies for the next DATA commands, e.g. a 451 to test retries.
        self.data_replies: list[str] = []
        # Seconds each message takes to accept, to keep sends in flight.
        self.delay_s = 0.0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        with self.lock:
            if self.data_replies:
                return self.data_replies.pop(0)
            parsed = message_from_bytes(envelope.content, policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            self.messages.append(parsed)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


@dataclass
class SmtpPeer:
    controller: Controller
    mailbox: _Mailbox

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @property
    def messages(self) -> list[EmailMessage]:
        with self.mailbox.lock:
            return list(self.mailbox.messages)

    def message_ids(self) -> Counter[str]:
        return Counter(str(message["Message-ID"]) for message in self.messages)

    def fail_next(self, *replies: str) -> None:
        with self.mailbox.lock:
            self.mailbox.data_replies.extend(replies)


@contextmanager
def smtp_peer() -> Iterator[SmtpPeer]:
    """Run an aiosmtpd server on 127.0.0.1 that keeps every message it accepts."""
    mailbox = _Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpPeer(controller, mailbox)
    finally:
        controller.stop()


# ---- HTTP receivers -----------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpPeer:
    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    # Status and headers of the responses to the next requests; without one the response is 200.
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    check: Callable[[Received], tuple[int, dict[str, str]] | None] | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def respond(self, *answers: tuple[int, dict[str, str]]) -> None:
        with self.lock:
            self.script.extend(answers)

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def keys(self) -> Counter[str]:
        return Counter(request.headers.get("idempotency-key", "") for request in self.received())


def _handler(peer: HttpPeer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = Received(
                self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)
            )
            if peer.delay_s:
                time.sleep(peer.delay_s)
            answer = peer.check(request) if peer.check is not None else None
            with peer.lock:
                if answer is None:
                    answer = peer.script.pop(0) if peer.script else (200, {})
                if 200 <= answer[0] < 300:
                    peer.requests.append(request)
            status, headers = answer
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def http_peer() -> Iterator[HttpPeer]:
    """Run an HTTP server on 127.0.0.1 that records each POST it accepts with a 2xx response."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    peer = HttpPeer(server)
    server.RequestHandlerClass = _handler(peer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        server.shutdown()
        server.server_close()


# ---- Web Push -----------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class BrowserKeys:
    """What a browser keeps for one push subscription: its ECDH key and auth secret."""

    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    @classmethod
    def generate(cls) -> BrowserKeys:
        import os

        return cls(ec.generate_private_key(ec.SECP256R1()), os.urandom(16))

    @property
    def p256dh(self) -> str:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url(point)

    def subscription(self, endpoint: str) -> dict[str, Any]:
        return {"endpoint": endpoint, "keys": {"p256dh": self.p256dh, "auth": b64url(self.auth)}}

    def decrypt(self, body: bytes) -> dict[str, Any]:
        plain = http_ece.decrypt(
            body, private_key=self.private_key, auth_secret=self.auth, version="aes128gcm"
        )
        result: dict[str, Any] = json.loads(plain)
        return result


def vapid_check(
    expected_public_key: str, audience: str
) -> Callable[[Received], tuple[int, dict[str, str]] | None]:
    """Return a request check that responds 401 unless the VAPID token is valid (RFC 8292)."""

    def check(request: Received) -> tuple[int, dict[str, str]] | None:
        header = request.headers.get("authorization", "")
        scheme, _, params = header.partition(" ")
        fields = dict(part.split("=", 1) for part in params.split(",") if "=" in part)
        if scheme != "vapid" or fields.get("k") != expected_public_key:
            return (401, {})
        point = b64url_decode(fields["k"])
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        try:
            claims = jwt.decode(
                fields.get("t", ""), public_key, algorithms=["ES256"], audience=audience
            )
        except jwt.PyJWTError:
            return (403, {})
        if not str(claims.get("sub", "")).startswith(("mailto:", "https://")):
            return (403, {})
        if request.headers.get("content-encoding") != "aes128gcm":
            return (400, {})
        return None

    return check
