"""API keys: bearer tokens stored hashed, checked against a key set cached for a few seconds.

With no active key, everything is open (the embedded default on localhost). Once one key exists, ingest
(`/v1/traces`, `/v1/metrics`) needs a key of scope `ingest`, and the query API needs a key of scope `read`.
A missing or unknown key is 401, a key of the wrong scope 403. Each refusal is logged as a warning with the client
address, the path and the reason, at most once per client address per GLIA_REJECTION_LOG_SECONDS (the others are
counted), and never with the key or any part of it (`services.require`, the FastAPI dependency, does that). No web
framework here: `glia keys` imports this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import sqlfiles
from .errors import PermissionDenied, Unauthenticated, Unavailable
from .ratelog import RateLimitedLog

if TYPE_CHECKING:
    import asyncpg

    from .database import Database

log = logging.getLogger("glia.auth")

SCOPES = ("ingest", "read")
KEY_PREFIX = "glia_"


def new_key() -> str:
    """A fresh secret: the `glia_` prefix (so scanners can spot leaked keys) and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """What is stored for a key: its sha256 (the secret is 256 random bits, so a slow hash would add nothing)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _sql(name: str) -> str:
    return sqlfiles.load("auth.sql")[name]


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if there is one."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


STALE_TTLS = 12  # a key set not refreshed for this many ttl is no longer trusted: requests get 503


@dataclass
class KeyCache:
    """The active keys (hash -> scope), read from PostgreSQL at most once every `ttl` seconds.

    Ingest checks every request, so the set is kept in memory: a new or revoked key takes effect within `ttl`.
    While the database cannot be read, the last set is used for up to `STALE_TTLS` x `ttl` (one minute at the
    default 5 s) and re-read at most once a `ttl`; past that every request is refused with 503 (fail closed), so a
    key revoked meanwhile cannot stay valid for as long as the receiver cannot reach the database.
    """

    db: Database
    ttl: float = 5.0
    _keys: dict[str, str] | None = None
    _loaded_at: float = 0.0
    _next_load: float = 0.0  # no read before this (monotonic): a failed read waits a ttl before the next
    _failure: str | None = None  # why the last read failed; None once a read succeeds
    _closed_logged: bool = False
    _lock: asyncio.Lock | None = None

    @property
    def max_stale(self) -> float:
        """How long the last key set is trusted while it cannot be refreshed."""
        return STALE_TTLS * self.ttl

    async def keys(self) -> dict[str, str]:
        """The active keys, refreshed when older than `ttl`; Unavailable when they cannot be known."""
        if self._keys is not None and time.monotonic() < self._next_load:
            return self._usable()
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            now = time.monotonic()
            if now < self._next_load:  # another request refreshed (or failed to) while this one waited
                return self._usable()
            self._next_load = now + self.ttl
            try:
                async with self.db.connection() as conn:
                    rows = await conn.fetch(_sql("active_keys"))
            except Unavailable as exc:
                if self._failure is None:
                    log.warning("cannot refresh the API keys, using the last known set for now: %s", exc.message)
                self._failure = exc.message
                return self._usable()
            self._keys = {row["key_hash"]: row["scope"] for row in rows}
            self._loaded_at = now
            if self._failure is not None:
                log.info("API keys read again after a failure")
            self._failure = None
            self._closed_logged = False
            return self._keys

    def _usable(self) -> dict[str, str]:
        if self._keys is None:
            raise Unavailable(f"cannot read the API keys: {self._failure or 'not read yet'}")
        if self._failure is not None and time.monotonic() - self._loaded_at > self.max_stale:
            if not self._closed_logged:
                self._closed_logged = True
                log.error(
                    "API keys not refreshed for over %.0f s (%s): refusing every request until they can be read",
                    self.max_stale,
                    self._failure,
                )
            raise Unavailable(f"cannot read the API keys: {self._failure}")
        return self._keys

    async def check(self, authorization: str | None, scope: str) -> None:
        """Raise an AuthError unless a request with this `Authorization` header may do what `scope` allows (always
        allowed when no key exists)."""
        keys = await self.keys()
        if not keys:
            return
        token = bearer(authorization)
        if token is None:
            raise Unauthenticated(f"this receiver requires an API key: send 'Authorization: Bearer <{scope} key>'")
        granted = keys.get(hash_key(token))
        if granted is None:
            raise Unauthenticated("the API key is not valid (unknown or revoked)")
        if granted != scope:
            raise PermissionDenied(f"this API key has scope '{granted}'; this endpoint needs a key of scope '{scope}'")


def failure_log(interval: float) -> RateLimitedLog:
    """Where refused keys are reported: one line per client address per `interval`."""
    return RateLimitedLog(log, interval, "failed authentications")


# --- key management (`glia keys`) ---------------------------------------------------------------------------------


async def create_key(conn: asyncpg.Connection, name: str, scope: str) -> tuple[str, dict[str, Any]]:
    """Store a new key; returns the secret (shown once, never stored) and its row."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}: expected one of {', '.join(SCOPES)}")
    key = new_key()
    row = await conn.fetchrow(_sql("create_key"), name, scope, hash_key(key), key[: len(KEY_PREFIX) + 6])
    if row is None:
        raise ValueError(f"an active key named {name!r} exists already: revoke it first or pick another name")
    return key, dict(row)


async def list_keys(conn: asyncpg.Connection, include_revoked: bool = False) -> list[dict[str, Any]]:
    """The keys (never their secrets)."""
    return [dict(r) for r in await conn.fetch(_sql("list_keys"), include_revoked)]


async def revoke_key(conn: asyncpg.Connection, name_or_id: str) -> list[dict[str, Any]]:
    """Revoke the active key with this name or id; returns what was revoked (empty if nothing matched)."""
    return [dict(r) for r in await conn.fetch(_sql("revoke_key"), name_or_id)]
