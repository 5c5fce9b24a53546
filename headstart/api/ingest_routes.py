"""``POST /v1/{track,identify,page,screen,group,alias,batch}``, compatible with Segment's API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from headstart.api.responses import JSONBytes
from headstart.events import MESSAGE_TYPES
from headstart.runtime import Runtime

HISTORICAL_HEADER = "x-headstart-historical"

_EXAMPLE_RESPONSE: dict[int | str, dict[str, Any]] = {
    "200": {
        "description": "Every valid event is durably logged. Invalid events of a batch are "
        "listed in `rejected` with their index.",
        "content": {
            "application/json": {
                "example": {
                    "success": True,
                    "accepted": 2,
                    "duplicates": 0,
                    "rejected": [{"index": 2, "code": "missing_identity", "message": "..."}],
                }
            }
        },
    },
    "400": {"description": "Invalid body, or every event of the batch invalid."},
    "401": {"description": "Missing, unknown or revoked write key."},
    "413": {"description": "Body over 500 KB, batch over 2,500 events, or event over 32 KB."},
    "503": {"description": "Backpressure; retry after the Retry-After header's seconds."},
}


def ingest_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["ingest"], redirect_slashes=False)

    async def receive(request: Request, message_type: str | None) -> JSONBytes:
        raw = await request.body()
        flag = request.headers.get(HISTORICAL_HEADER) or request.query_params.get("historical")
        result = await runtime.ingest.handle(
            message_type, raw, request.headers.get("authorization"), flag
        )
        return JSONBytes(result.body, status_code=result.status)

    def add(path: str, message_type: str | None) -> None:
        async def endpoint(request: Request) -> JSONBytes:
            return await receive(request, message_type)

        endpoint.__name__ = f"ingest_{path}"
        summary = "Ingest a batch of messages" if message_type is None else f"Ingest a {path} call"
        router.add_api_route(
            f"/{path}",
            endpoint,
            methods=["POST"],
            summary=summary,
            responses=_EXAMPLE_RESPONSE,
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        )

    for message_type in MESSAGE_TYPES:
        add(message_type, message_type)
    add("batch", None)
    return router
