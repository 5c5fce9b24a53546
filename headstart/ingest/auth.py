"""Find the write key of an ingest request."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from headstart.errors import Unauthorized


def write_key_from(authorization: str | None, body: Any) -> str:
    """Return the write key from HTTP Basic (``key:``), a bare or Bearer key, or ``writeKey``.

    The header wins over the body when both are present.
    """
    if authorization:
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() == "basic" and rest:
            return _basic_user(rest.strip())
        if scheme.lower() == "bearer" and rest:
            return rest.strip()
        if not rest:
            return scheme
    if isinstance(body, dict):
        key = body.get("writeKey")
        if isinstance(key, str) and key:
            return key
    raise Unauthorized(
        "no write key; send it as HTTP Basic user name (key:), as the Authorization header, "
        "or as writeKey in the body",
        code="missing_write_key",
    )


def _basic_user(encoded: str) -> str:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized(
            "the Basic Authorization header is not valid base64 of 'key:'", code="invalid_write_key"
        ) from None
    user, _, _ = decoded.partition(":")
    if not user:
        raise Unauthorized(
            "the Basic Authorization header has an empty user name; put the write key there",
            code="missing_write_key",
        )
    return user
