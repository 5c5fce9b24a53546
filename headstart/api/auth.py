"""The admin credential check shared by every /api router."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, Request

from headstart.runtime import Runtime


def admin_dependency(runtime: Runtime) -> Callable[[Request], None]:
    """Return a FastAPI dependency that requires ``Authorization: Bearer ADMIN_KEY``."""

    def require_admin(request: Request) -> None:
        header = request.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        runtime.admin.check(token.strip() if scheme.lower() == "bearer" else None)

    return require_admin


def admin_router(
    runtime: Runtime, *, prefix: str, tags: list[str], redirect_slashes: bool = False
) -> APIRouter:
    """Return a router whose every route requires the admin key."""
    return APIRouter(
        prefix=prefix,
        tags=[*tags],
        dependencies=[Depends(admin_dependency(runtime))],
        redirect_slashes=redirect_slashes,
    )
