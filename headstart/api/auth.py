"""The admin credential check shared by every /api router."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from headstart.runtime import Runtime


def admin_dependency(runtime: Runtime) -> Callable[[Request], None]:
    """Return a FastAPI dependency that requires ``Authorization: Bearer ADMIN_KEY``."""

    def require_admin(request: Request) -> None:
        header = request.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        runtime.admin.check(token.strip() if scheme.lower() == "bearer" else None)

    return require_admin
