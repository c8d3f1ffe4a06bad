"""The probes: `/healthz` (the process is alive) and `/readyz` (PostgreSQL is reachable and its schema at head)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from .database import check_schema
from .errors import SchemaError, Unavailable
from .services import Wired

router = APIRouter()


@router.get("/healthz", summary="the process is alive")
async def healthz() -> dict[str, str]:
    """200 while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", summary="the database is reachable and its schema is at head")
async def readyz(svc: Wired) -> JSONResponse:
    """200 when PostgreSQL answers and its schema is the one this code needs, else 503 with the reason."""
    try:
        await check_schema(svc.db, svc.schema_head)
    except Unavailable as exc:
        return JSONResponse({"status": "unavailable", "reason": exc.message}, status_code=503)
    except SchemaError as exc:
        return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
    return JSONResponse({"status": "ready"})
