"""The FastAPI application: routers, and one handler that renders every error as JSON."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from headstart import __version__
from headstart.api.analytics_routes import analytics_router
from headstart.api.identity_routes import identity_router
from headstart.api.inapp_routes import InAppCors, inapp_router
from headstart.api.ingest_routes import ingest_router
from headstart.api.lifecycle_routes import lifecycle_router
from headstart.api.messages_routes import messages_router
from headstart.api.read_routes import read_router
from headstart.api.responses import JSONBytes
from headstart.errors import HeadstartError, Overloaded
from headstart.runtime import Runtime

logger = logging.getLogger(__name__)


class JsonByDefault:
    """Read the REST API's request bodies as JSON when they come with curl's form type.

    ``curl -d`` sends ``application/x-www-form-urlencoded``, but every ``/api/`` body is JSON.
    The ingest routes likewise read JSON whatever the Content-Type header.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            scope = {
                **scope,
                "headers": [_json_type(name, value) for name, value in scope["headers"]],
            }
        await self.app(scope, receive, send)


def _json_type(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    if name == b"content-type" and value.startswith(b"application/x-www-form-urlencoded"):
        return name, b"application/json"
    return name, value


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="headstart",
        version=__version__,
        description="Segment-compatible ingest and onboarding state.",
        default_response_class=JSONBytes,
        redirect_slashes=False,
    )
    app.include_router(ingest_router(runtime))
    app.include_router(read_router(runtime))
    app.include_router(messages_router(runtime))
    app.include_router(inapp_router(runtime))
    app.add_middleware(InAppCors)
    app.add_middleware(JsonByDefault)
    app.include_router(identity_router(runtime))
    app.include_router(analytics_router(runtime))
    app.include_router(lifecycle_router(runtime))

    @app.get("/health", tags=["status"], summary="Liveness check")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(HeadstartError)
    async def headstart_error(request: Request, exc: HeadstartError) -> JSONBytes:
        headers = {}
        if isinstance(exc, Overloaded):
            headers["Retry-After"] = str(exc.retry_after)
        if exc.status >= 500:
            logger.warning(
                "%s %s -> %d %s: %s",
                request.method,
                request.url.path,
                exc.status,
                exc.code,
                exc.message,
            )
        return JSONBytes(exc.to_dict(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONBytes:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        return JSONBytes({"code": "invalid", "message": problems}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONBytes:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONBytes({"code": code, "message": str(exc.detail)}, status_code=exc.status_code)

    return app
