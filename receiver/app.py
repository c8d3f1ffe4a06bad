"""The receiver application: the composition root. `create_app` puts the parts together, and its lifespan owns
what lives as long as the application does.

At start-up the lifespan opens the pool, checks that the schema is at head, makes the partitions ahead, builds the
one `Services` object every handler is handed (services.py) and starts the maintenance loops (maintenance.py); at
shut-down it stops them and closes the pool. The OTLP pipeline (ingest.py) is a plain ASGI app beside the FastAPI
application (ingest.Dispatch), with no framework routing per request; the other endpoints are routers of their own:
the probes (health.py), the receiver's own metrics (metrics.py), the query API and the page (api.py), Swagger UI
(docs.py). Every error reaching the application is answered by http_errors.py; the Host check and the browser
headers wrap both (guard.py), and the count of OTLP answers wraps the OTLP paths' (metrics.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import ASGIApp

from glia_otel import _version

from . import answers_api, api, docs, guard, health, http_errors, ingest, maintenance, metrics, store
from .auth import KeyCache
from .database import check_schema, create_pool
from .errors import Unavailable
from .migrate import head_revision
from .services import Services
from .settings import Settings

log = logging.getLogger("glia.receiver")


def create_app(settings: Settings, database_url: str) -> ASGIApp:
    """The receiver application for one database. The lifespan owns the pool."""
    own_metrics = metrics.ReceiverMetrics()  # this application's registry, whatever else runs in the process

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(
            database_url,
            max_size=settings.pool_max_size,
            statement_timeout_ms=settings.statement_timeout_ms,
            init=store.prepare_connection,
        )
        db = metrics.MeteredDatabase(
            pool, acquire_timeout=settings.pool_acquire_timeout, waiting=own_metrics.pool_waiting
        )
        services = Services.build(settings, db, head_revision(), own_metrics)
        try:
            await check_schema(db, services.schema_head)
            await services.store.ensure_partitions_ahead()
        except BaseException:
            await pool.close()
            raise
        app.state.services = services
        await _log_auth_mode(services.keys)
        log.info("receiver ready: pool max %d connections", settings.pool_max_size)
        try:
            async with maintenance.running(
                db,
                services.store,
                settings.retention_check_seconds,
                lost_after_seconds=settings.lost_after_seconds,
                lost_sweep_seconds=settings.lost_sweep_seconds,
            ):
                yield
        finally:
            await db.close(timeout=10)

    # /docs is docs.router's: Swagger UI from this origin; FastAPI's own pages would load it from a CDN
    app = FastAPI(
        title="Glia receiver",
        summary="OTLP/HTTP in, one row per span in PostgreSQL",
        version=_version.__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    for router in (ingest.router, health.router, metrics.router, api.router, answers_api.router, docs.router):
        app.include_router(router)
    http_errors.install(app, settings.retry_after_seconds)

    # the last added runs first: headers on every response, the Host refused before anything else runs
    host_rule = guard.HostRule.make(settings.host, settings.allowed_hosts)
    refuse = functools.partial(http_errors.render, retry_after=settings.retry_after_seconds)
    app.add_middleware(guard.HostCheck, rule=host_rule, refuse=refuse, log_seconds=settings.rejection_log_seconds)
    app.add_middleware(guard.SecurityHeaders)

    # The OTLP paths, outside FastAPI (no routing or dependency injection per request: ingest.OtlpEndpoint) behind
    # the same guards; the request count outermost, so that a request refused for its Host is counted too.
    def services() -> Services:
        found: Services = app.state.services
        return found

    otlp = guard.HostCheck(
        ingest.OtlpEndpoint(services), rule=host_rule, refuse=refuse, log_seconds=settings.rejection_log_seconds
    )
    return ingest.Dispatch(app, metrics.RequestCounter(guard.SecurityHeaders(otlp), metrics=own_metrics))


async def _log_auth_mode(keys: KeyCache) -> None:
    try:
        active = await keys.keys()
    except Unavailable as exc:
        log.warning("could not read the API keys yet: %s", exc)
        return
    if active:
        log.info("API keys: %d active; ingest needs an ingest key, /api and the page a read key", len(active))
    else:
        log.warning(
            "no API keys: ingest, the query API and the page are open to anyone who can connect "
            "('glia keys create NAME' to require keys)"
        )
