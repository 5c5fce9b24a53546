"""Admin identity changes over HTTP: merge two persons, keep two identifiers apart."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from headstart.api.auth import admin_dependency
from headstart.identity.admin import Separations, merge_record, resolve_identifier
from headstart.runtime import Runtime
from headstart.sqlite import connect


class MergeRequest(BaseModel):
    into: str = Field(
        description="Surviving person: person id, user id, anonymous id or kind:value."
    )
    other: str = Field(description="Person merged into it.")
    reason: str = ""


class SeparateRequest(BaseModel):
    first: str = Field(description="Identifier: person id, user id, anonymous id or kind:value.")
    second: str = Field(description="Identifier that must never be in the same person.")
    reason: str = ""


def identity_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(
        prefix="/api/identity", tags=["admin"], dependencies=[Depends(admin_dependency(runtime))]
    )

    @router.post("/merges", summary="Merge two persons (audited; replayed with the log)")
    async def post_merge(request: MergeRequest) -> dict[str, Any]:
        record = merge_record(
            resolve_identifier(runtime.state, request.into),
            resolve_identifier(runtime.state, request.other),
            request.reason,
            runtime.clock.now_us(),
        )
        await asyncio.wrap_future(runtime.writer.submit([record]))
        await asyncio.to_thread(runtime.wait_for_processor)
        return {"merged": True, "message_id": record.message_id}

    @router.post("/separations", summary="Keep two identifiers apart; rebuilds state")
    def post_separation(request: SeparateRequest) -> dict[str, Any]:
        first = resolve_identifier(runtime.state, request.first)
        second = resolve_identifier(runtime.state, request.second)
        Separations(connect(runtime.data_dir.log_path)).add(
            first, second, request.reason, runtime.clock.now_us()
        )
        return {"first": list(first), "second": list(second), "rebuilding": True}

    return router
