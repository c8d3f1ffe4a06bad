"""The receiver's exceptions: one base class, typed subclasses, each request failure carrying its HTTP status."""

from __future__ import annotations


class GliaError(Exception):
    """Base class of every error the receiver raises on purpose."""


class EmbeddedPostgresError(GliaError):
    """The embedded PostgreSQL could not be set up, started or stopped."""


class SchemaError(GliaError):
    """The database schema is not at the revision this receiver needs."""


class RequestError(GliaError):
    """A request the receiver answers with an error status; the message is sent back to the client."""

    status_code = 400
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(RequestError):
    """The body cannot be decoded: permanent, the client must not retry."""

    status_code = 400


class PayloadTooLarge(RequestError):
    """The body is over the size limit, on the wire or after decompression."""

    status_code = 413


class UnsupportedMediaType(RequestError):
    """A content type or content encoding the receiver does not speak."""

    status_code = 415


class Unavailable(RequestError):
    """PostgreSQL is unreachable or the pool is saturated: transient, the client retries after Retry-After."""

    status_code = 503
    retryable = True
