"""The project's exception root.

Every error that reaches a user carries an HTTP status and a machine-readable code, and the
API renders it as ``{"code": ..., "message": ...}``. The CLI prints the message.
"""

from __future__ import annotations


class HeadstartError(Exception):
    """Base class for every error headstart raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class InvalidInput(HeadstartError):
    """A request, file or argument that does not match its schema."""

    status = 400
    code = "invalid"


class PayloadTooLarge(HeadstartError):
    """A body or event over its size limit."""

    status = 413
    code = "payload_too_large"


class Unauthorized(HeadstartError):
    """A missing, unknown or revoked credential."""

    status = 401
    code = "unauthorized"


class NotFound(HeadstartError):
    status = 404
    code = "not_found"


class Overloaded(HeadstartError):
    """The server cannot take more work now; the client should retry after ``retry_after`` s."""

    status = 503
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: int = 1, status: int = 503):
        super().__init__(message, status=status)
        self.retry_after = retry_after


class PlanError(HeadstartError):
    """An onboarding plan file that fails validation. ``problems`` lists each one."""

    status = 400
    code = "invalid_plan"

    def __init__(self, problems: list[PlanProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PlanProblem:
    """One validation problem in a plan file, located by file, line and field."""

    def __init__(self, file: str, line: int | None, field: str, message: str):
        self.file = file
        self.line = line
        self.field = field
        self.message = message

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}
