"""The errors a user can cause, and how each maps to HTTP.

    DtaasError
     ├── InvalidInput ........... 422  bad values the schema could not catch
     ├── BadRequest ............. 400  a malformed request (e.g. an unsafe path)
     ├── NotAuthenticated ....... 401  no, expired or revoked session or token
     ├── PermissionDenied ....... 403  the role or grant is missing
     │    ├── CsrfFailed ........ 403  a cookie request without a valid CSRF token
     │    └── QuotaExceeded ..... 403  accounting refuses the work
     ├── NotFound ............... 404  no such resource, or the caller may not know it
     ├── Conflict ............... 409  a duplicate, or a state change not allowed now
     ├── PreconditionFailed ..... 412  a stale write (If-Match does not match)
     ├── PreconditionRequired ... 428  an overwrite without If-Match
     ├── PayloadTooLarge ........ 413  a body over the configured limit
     ├── TooManyRequests ........ 429  a rate limit; carries ``retry_after`` seconds
     └── BackendUnavailable ..... 503  a database, broker or cluster is unreachable

Every error renders as ``{"detail": [{"type", "msg", "loc"}]}``, the shape of FastAPI's
own validation errors, so clients parse one format. ``dtaas.client`` rebuilds the same
class from ``type``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

Loc = Sequence[str | int]


class DtaasError(Exception):
    """Base of every error the platform raises on purpose."""

    status_code: ClassVar[int] = 500
    type: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, loc: Loc | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.loc: list[str | int] = list(loc) if loc is not None else []

    def to_detail(self) -> list[dict[str, object]]:
        """The error as the items of a response's ``detail`` list."""
        return [{"type": self.type, "msg": self.message, "loc": self.loc}]


class InvalidInput(DtaasError):
    """Raised when values are well-formed but wrong for the domain.

    ``problems`` carries one (message, loc) per field when several are wrong at once.
    """

    status_code = 422
    type = "invalid_input"

    def __init__(
        self,
        message: str,
        *,
        loc: Loc | None = None,
        problems: Sequence[tuple[str, Loc]] = (),
    ) -> None:
        super().__init__(message, loc=loc)
        self.problems = [(text, list(where)) for text, where in problems]

    def to_detail(self) -> list[dict[str, object]]:
        if not self.problems:
            return super().to_detail()
        return [{"type": self.type, "msg": text, "loc": where} for text, where in self.problems]


class BadRequest(DtaasError):
    """Raised when a request is malformed in a way the schema could not express."""

    status_code = 400
    type = "bad_request"


class NotAuthenticated(DtaasError):
    """Raised when there is no session or token, or it expired or was revoked."""

    status_code = 401
    type = "not_authenticated"


class PermissionDenied(DtaasError):
    """Raised when the caller is known but lacks the role or grant."""

    status_code = 403
    type = "permission_denied"


class CsrfFailed(PermissionDenied):
    """Raised when a cookie-authenticated unsafe request lacks a valid CSRF token."""

    type = "csrf_failed"


class QuotaExceeded(PermissionDenied):
    """Raised when accounting refuses work because a quota is used up."""

    type = "quota_exceeded"


class NotFound(DtaasError):
    """Raised when there is no such resource, or the caller may not know it exists."""

    status_code = 404
    type = "not_found"


class Conflict(DtaasError):
    """Raised on a duplicate name or a state transition that is not allowed now."""

    status_code = 409
    type = "conflict"


class PreconditionFailed(DtaasError):
    """Raised when a conditional write is based on a stale version."""

    status_code = 412
    type = "precondition_failed"


class PreconditionRequired(DtaasError):
    """Raised when a write would replace a file without saying which version it read."""

    status_code = 428
    type = "precondition_required"


class PayloadTooLarge(DtaasError):
    """Raised when a request body exceeds the configured limit."""

    status_code = 413
    type = "payload_too_large"


class TooManyRequests(DtaasError):
    """Raised when a rate limit is hit; ``retry_after`` says when to try again."""

    status_code = 429
    type = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, loc: Loc | None = None) -> None:
        super().__init__(message, loc=loc)
        self.retry_after = max(1, retry_after)


class BackendUnavailable(DtaasError):
    """Raised when a database, broker or cluster the request needs is unreachable."""

    status_code = 503
    type = "backend_unavailable"


ERROR_TYPES: dict[str, type[DtaasError]] = {
    cls.type: cls
    for cls in (
        DtaasError,
        InvalidInput,
        BadRequest,
        NotAuthenticated,
        PermissionDenied,
        CsrfFailed,
        QuotaExceeded,
        NotFound,
        Conflict,
        PreconditionFailed,
        PreconditionRequired,
        PayloadTooLarge,
        TooManyRequests,
        BackendUnavailable,
    )
}
