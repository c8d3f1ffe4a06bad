"""Every exception the receiver and its commands raise on purpose: one base class, typed subclasses.

A `RequestError` carries what its HTTP answer needs: the status, whether the client should retry (`retryable`: the
answer then carries `Retry-After`), the headers it adds, and the message sent back. `http_errors.py` renders one as
HTTP, `database.py` is where driver errors become these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class GliaError(Exception):
    """Base class of every error the receiver raises on purpose."""


class EmbeddedPostgresError(GliaError):
    """The embedded PostgreSQL could not be set up, started or stopped."""


class SchemaError(GliaError):
    """The database schema is not at the revision this receiver needs."""


class RetentionBusy(GliaError):
    """Another process (a receiver or `glia retention`) is applying retention right now."""


class Interrupted(GliaError):
    """SIGINT or SIGTERM stopped a command's read; its query was cancelled in PostgreSQL."""

    def __init__(self, signum: int, name: str) -> None:
        super().__init__(f"interrupted by {name}; the query was cancelled")
        self.signum = signum


class ClientGone(GliaError):
    """The HTTP client disconnected before its answer was ready; its query was cancelled."""


class RequestError(GliaError):
    """A request the receiver answers with an error status; the message is sent back to the client."""

    status_code: ClassVar[int] = 400
    retryable: ClassVar[bool] = False  # transient: the client retries after Retry-After
    headers: ClassVar[Mapping[str, str]] = {}

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def detail(self) -> Any:
        """The `detail` of the JSON answer (`{"detail": ...}`) outside the OTLP paths."""
        return self.message


class BadRequest(RequestError):
    """The body cannot be decoded: permanent, the client must not retry."""

    status_code = 400


class AuthError(RequestError):
    """A request without the key it needs."""


class Unauthenticated(AuthError):
    """No key, or an unknown or revoked one, while keys exist."""

    status_code = 401
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}


class PermissionDenied(AuthError):
    """A valid key of another scope than the endpoint's."""

    status_code = 403


class HostNotAllowed(RequestError):
    """A Host header the receiver does not answer to (DNS rebinding: see guard.py)."""

    status_code = 403


class NotFound(RequestError):
    """No such run, or no such file of the page."""

    status_code = 404


class MethodNotAllowed(RequestError):
    """Anything but POST on an export path."""

    status_code = 405
    headers: ClassVar[Mapping[str, str]] = {"Allow": "POST"}


class PayloadTooLarge(RequestError):
    """The body is over the size limit, on the wire or after decompression."""

    status_code = 413


class UnsupportedMediaType(RequestError):
    """A content type or content encoding the receiver does not speak."""

    status_code = 415


class InvalidQuery(RequestError, ValueError):
    """A query parameter that cannot be used (or a value PostgreSQL refused); `param` names it when known.

    A ValueError too: the commands that share the query layer report it as a usage error."""

    status_code = 422

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.args = (f"{param}: {message}" if param else message,)
        self.param = param

    def detail(self) -> Any:
        """FastAPI's own shape for a parameter it refuses, so a client reads every 422 the same way."""
        loc = ["query", self.param] if self.param else ["query"]
        return [{"loc": loc, "msg": self.message, "type": "value_error"}]


class InternalError(RequestError):
    """A bug in the receiver: neither the client's fault nor a transient one; the details are in its log."""

    status_code = 500

    def __init__(self) -> None:
        super().__init__("internal error in the glia receiver; see its log")


class Unavailable(RequestError):
    """PostgreSQL is unreachable or busy, or the decode budget is taken: transient, the client retries."""

    status_code = 503
    retryable = True


class LockNotGranted(Unavailable):
    """A lock was not granted within the lock timeout: something else holds it for now."""
