"""Admin API for the message log: outbox rows, their status, and dead-letter handling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query

from headstart.api.auth import admin_router
from headstart.delivery.outbox import STATUSES, OutboxStore
from headstart.errors import InvalidInput, NotFound
from headstart.runtime import Runtime


def messages_router(runtime: Runtime) -> APIRouter:
    router = admin_router(runtime, prefix="/api/messages", tags=["messages"])
    outbox = OutboxStore(runtime.data_dir.state_path)

    @router.get("", summary="The message log: outbox rows, newest first, with counts per status")
    def list_messages(
        status: Annotated[str | None, Query(description=f"One of {', '.join(STATUSES)}.")] = None,
        channel: str | None = None,
        rule: str | None = None,
        person: Annotated[
            str | None, Query(description="Person id, user id or anonymous id.")
        ] = None,
        before: Annotated[
            int | None, Query(description="Only rows with a smaller outbox_id (paging).")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        if status is not None and status not in STATUSES:
            raise InvalidInput(
                f"status={status!r} is not a status; expected one of {', '.join(STATUSES)}"
            )
        person_id = None
        if person is not None:
            person_id = runtime.state.find_person_id(person) or person
        rows = outbox.rows(
            status=status,
            channel=channel,
            rule=rule,
            person_id=person_id,
            before=before,
            limit=limit,
        )
        return {
            "counts": outbox.counts(),
            "messages": [row.to_json() for row in rows],
            "next_before": rows[-1].outbox_id if len(rows) == limit else None,
        }

    @router.get("/{outbox_id}", summary="One outbox row")
    def get_message(outbox_id: int) -> dict[str, Any]:
        row = outbox.get(outbox_id)
        if row is None:
            raise NotFound(f"no outbox row {outbox_id}; GET /api/messages lists them")
        return row.to_json()

    @router.post("/{outbox_id}/retry", summary="Send a dead (or dropped) message again")
    def retry_message(outbox_id: int) -> dict[str, Any]:
        return _change(outbox, outbox_id, outbox.retry, "dead or dropped")

    @router.post("/{outbox_id}/drop", summary="Give up on a dead message")
    def drop_message(outbox_id: int) -> dict[str, Any]:
        return _change(outbox, outbox_id, outbox.drop, "dead")

    return router


def _change(
    outbox: OutboxStore, outbox_id: int, action: Callable[[list[int]], int], expected: str
) -> dict[str, Any]:
    row = outbox.get(outbox_id)
    if row is None:
        raise NotFound(f"no outbox row {outbox_id}; GET /api/messages lists them")
    if action([outbox_id]) == 0:
        raise InvalidInput(
            f"outbox row {outbox_id} is {row.status}; only {expected} rows can be changed",
            code="wrong_status",
            status=409,
        )
    changed = outbox.get(outbox_id)
    assert changed is not None
    return changed.to_json()
