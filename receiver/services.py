"""What every handler is handed: one typed object that the application's lifespan builds (the database, the store,
the key cache, the settings and what is derived from them, the application's metrics), and the FastAPI
dependencies that give it, and a request's key check, to a handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from . import auth, flatten
from .budget import DecodeBudget
from .database import Database
from .errors import AuthError
from .query import ReadLimits
from .ratelog import RateLimitedLog
from .settings import Settings
from .store import Store

if TYPE_CHECKING:
    from .metrics import ReceiverMetrics


@dataclass(frozen=True)
class Services:
    """The receiver's parts for one life of the application (app.py's lifespan)."""

    settings: Settings
    db: Database  # the pool: reads, the key set, maintenance
    store: Store  # ingest's writes
    keys: auth.KeyCache
    budget: DecodeBudget  # the bytes of bodies being decoded at once
    limits: flatten.Limits  # what one span may carry
    reads: ReadLimits  # what bounds one read of the query API
    auth_failures: RateLimitedLog  # refused keys, one line per client address and interval
    schema_head: str  # the schema revision this code needs (/readyz)
    metrics: ReceiverMetrics  # the application's own registry (/metrics)

    @classmethod
    def build(cls, settings: Settings, db: Database, schema_head: str, metrics: ReceiverMetrics) -> Services:
        """Every part, from the settings, the database and the application's metrics."""
        return cls(
            settings=settings,
            db=db,
            store=Store(db, on_commit=metrics.committed, max_rows=settings.write_chunk_rows),
            keys=auth.KeyCache(db, ttl=settings.key_cache_seconds),
            budget=DecodeBudget(settings.max_decoding_bytes),
            limits=flatten.Limits.from_settings(settings),
            reads=ReadLimits.from_settings(settings),
            auth_failures=auth.failure_log(settings.rejection_log_seconds),
            schema_head=schema_head,
            metrics=metrics,
        )


def services(request: Request) -> Services:
    """The application's Services (a FastAPI dependency), set by its lifespan before the first request."""
    found = request.app.state.services
    if not isinstance(found, Services):
        raise TypeError("the application's lifespan has not set its services")
    return found


Wired = Annotated[Services, Depends(services)]


def require(scope: str) -> Callable[[Request, Services], Awaitable[None]]:
    """A FastAPI dependency that checks the request's key against the key cache, logging a refusal (rate limited,
    never with the key or any part of it) before it is answered 401 or 403."""
    if scope not in auth.SCOPES:
        raise ValueError(f"unknown scope {scope!r}: expected one of {', '.join(auth.SCOPES)}")

    async def dependency(request: Request, svc: Wired) -> None:
        await check_key(svc, request, scope, request.headers.get("authorization"))

    return dependency


async def check_key(svc: Services, request: Request, scope: str, authorization: str | None) -> None:
    """Check the request's key (its `authorization` header) for `scope` (AuthError: 401 or 403), logging a refusal
    (rate limited, never with the key or any part of it); what `require` does, for the OTLP paths, which are served
    without FastAPI's routing."""
    try:
        await svc.keys.check(authorization, scope)
    except AuthError as exc:
        client = request.client.host if request.client else "unknown"
        svc.auth_failures.warning(
            client,
            "refused %s %s from %s: %d %s",
            request.method,
            request.url.path,
            client,
            exc.status_code,
            exc.message,
        )
        raise
