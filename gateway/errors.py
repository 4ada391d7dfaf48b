"""Typed errors that handlers raise; one middleware turns them into JSON answers.

Every error carries its HTTP status, a short machine-readable code (acme-dns
style) and a one-line message that is safe to show: no secret, and no other
user's domains.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of the errors the gateway answers with."""

    status = 500
    code = "internal_error"
    # For the log only (gateway.refusals): the name refused, and why in more words
    # than the answer may use.
    name: str | None = None
    detail: str | None = None

    def __init__(
        self,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        if detail is not None:
            self.detail = detail

    @property
    def logged(self) -> str:
        """What the log says of it: the detail where there is one."""
        return self.detail or self.message


class BadRequest(GatewayError):
    """The request is malformed; ``field`` names the culprit."""

    status = 400
    code = "bad_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Unauthorized(GatewayError):
    """No or wrong credentials."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str = "authentication required") -> None:
        super().__init__(
            message,
            headers={"WWW-Authenticate": 'Basic realm="acme-dns01-gateway", charset="UTF-8"'},
        )


class Forbidden(GatewayError):
    """Authenticated, but not allowed to do this."""

    status = 403
    code = "forbidden"

    def __init__(self, message: str, *, name: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.name = name
        self.detail = detail


class NotFound(GatewayError):
    """No such resource."""

    status = 404
    code = "not_found"


class MethodNotAllowed(GatewayError):
    """The method is not offered on this path."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, allowed: list[str]) -> None:
        super().__init__("method not allowed", headers={"Allow": ", ".join(allowed)})


class Conflict(GatewayError):
    """The request conflicts with how the resource is defined (say, in a file)."""

    status = 409
    code = "conflict"


class RequestTimeout(GatewayError):
    """The client did not send its request in time."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(GatewayError):
    """The body is over the limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(GatewayError):
    """The body is not JSON."""

    status = 415
    code = "unsupported_media_type"


class TooManyRequests(GatewayError):
    """Too many failed attempts from this client address."""

    status = 429
    code = "too_many_requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many failed attempts; retry in {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )


class TooManyRecords(GatewayError):
    """The caller has as many values published as ``MAX_RECORDS_PER_USER`` allows."""

    status = 429
    code = "too_many_records"


class UpstreamFailed(GatewayError):
    """The DNS provider failed to make the change."""

    status = 502
    code = "provider_error"


class UpstreamTimeout(GatewayError):
    """The DNS provider, or DNS propagation, took too long."""

    status = 504
    code = "timeout"


class Unavailable(GatewayError):
    """The gateway cannot record changes right now (journal unwritable, shutting down)."""

    status = 503
    code = "unavailable"


class Busy(Unavailable):
    """Too much work waiting (password checks): try again in a moment."""

    code = "busy"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(
            f"{message}; retry in {retry_after}s", headers={"Retry-After": str(retry_after)}
        )
