"""Decode an ingest request body: gzip whatever the headers say, size limits, JSON."""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from headstart.errors import InvalidInput, PayloadTooLarge

GZIP_MAGIC = b"\x1f\x8b"


def decode_body(raw: bytes, max_bytes: int) -> Any:
    """Return the JSON value of a request body of at most ``max_bytes`` once decompressed.

    A body that starts with the gzip magic number is decompressed even when Content-Type
    or Content-Encoding say otherwise, because some SDKs send gzip without the header.
    """
    data = _gunzip(raw, max_bytes) if raw[:2] == GZIP_MAGIC else raw
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"request body is {len(data)} bytes, over the limit of {max_bytes} bytes; "
            "split it into smaller batches",
            code="batch_too_large",
        )
    if not data.strip():
        raise InvalidInput("request body is empty; send a JSON object", code="invalid_json")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}", code="invalid_json") from None


def _gunzip(raw: bytes, max_bytes: int) -> bytes:
    # wbits 16+MAX_WBITS reads the gzip container; the output cap stops decompression bombs.
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(raw, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidInput(f"request body is not valid gzip: {exc}", code="invalid_gzip") from None
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"request body is over {max_bytes} bytes once decompressed; split it into smaller "
            "batches",
            code="batch_too_large",
        )
    if not decompressor.eof:
        raise InvalidInput("request body is truncated gzip", code="invalid_gzip")
    return data
