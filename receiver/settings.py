"""Receiver settings: one object per process, from arguments, then `GLIA_*` environment variables, then defaults.

The database commands (`glia runs`, ...) start without pydantic: they read their few settings with
`command_settings.CommandSettings`, which keeps the same names, defaults and bounds as the fields here.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .command_settings import default_data_dir


class Settings(BaseSettings):
    """Everything the receiver can be told. Environment variables carry the `GLIA_` prefix."""

    model_config = SettingsConfigDict(env_prefix="GLIA_", extra="ignore")

    database_url: str | None = Field(
        default=None, description="PostgreSQL URL; unset means the embedded PostgreSQL in data_dir"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=4318, ge=0, le=65535)
    # Receiver processes sharing the port (receiver/workers.py): one process's decode and flatten use one core.
    workers: int = Field(default=1, ge=1, le=64)
    data_dir: Path = Field(default_factory=default_data_dir)
    # A dead embedded PostgreSQL is restarted this often within 10 minutes, then `glia serve` exits non-zero.
    embedded_restarts: int = Field(default=3, ge=0)

    # Request limits. The body limit applies to the bytes on the wire and again after decompression.
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_attributes_per_span: int = Field(default=2048, ge=1)
    max_attribute_value_bytes: int = Field(default=64 * 1024, ge=256)
    max_events_per_span: int = Field(default=1024, ge=0)
    # Spans are accepted when they start from earliest_span_date (UTC) to max_span_future_days ahead; partitions are
    # made on demand for any month in between, so imported history is stored. Every clock fault seen (an unset time,
    # seconds or microseconds read as nanoseconds) reads 1970, before the default. max_span_age_days, when set, also
    # refuses spans older than that many days (docs/receiver.md, "Old history").
    earliest_span_date: date = date(2000, 1, 1)
    max_span_age_days: int | None = Field(default=None, ge=1)
    max_span_future_days: int = Field(default=31, ge=1)
    # Bytes of request bodies being decoded and written at once (decoding costs several times a body's size); a
    # request that cannot get its share within decode_wait_seconds is answered 503 + Retry-After.
    max_decoding_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    decode_wait_seconds: float = Field(default=2.0, ge=0)
    # Rows flattened and written at a time, each chunk under its own savepoint in the request's one transaction.
    write_chunk_rows: int = Field(default=4096, ge=1)

    # Database pool: bounded, so a burst of short jobs never exhausts PostgreSQL's connections.
    pool_max_size: int = Field(default=8, ge=1)
    pool_acquire_timeout: float = Field(default=5.0, gt=0)
    statement_timeout_ms: int = Field(default=30_000, ge=0)
    # Reads (the query API, the page, glia runs / glia show) stop sooner than ingest, so they cannot hold the
    # connections ingest needs; 0 turns the timeout off.
    read_statement_timeout_ms: int = Field(default=10_000, ge=0)
    # Bounds on one answer of the query API (and the CLI, which runs the same queries): docs/querying.md.
    api_response_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    api_list_value_chars: int = Field(default=4096, ge=64)
    api_list_row_bytes: int = Field(default=64 * 1024, ge=1024)
    api_detail_value_chars: int = Field(default=65536, ge=64)
    retry_after_seconds: int = Field(default=2, ge=1)
    connect_timeout: float = Field(default=30.0, ge=0, description="how long start-up waits for PostgreSQL")

    # The HTTP edge (receiver/server.py, receiver/guard.py). A connection on which a request is coming in is closed
    # after this many seconds without a byte (not a bound on the total time: slow but steady uploads get through).
    request_idle_timeout: float = Field(default=10.0, gt=0)
    # Open connections at most; the next is answered 503 at once. The open files limit is raised to fit them.
    max_connections: int = Field(default=1024, ge=1)
    # Host names answered besides loopback ones (comma-separated; `*.example.org` for a domain, `*` for any). Unset:
    # a receiver bound to loopback answers only to loopback names, one bound elsewhere to any.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Refused requests (authentication, Host, timeouts) are logged once per client address per this many seconds.
    rejection_log_seconds: float = Field(default=60.0, gt=0)

    # API keys are read from the database at most this often (a new or revoked key takes effect within it).
    key_cache_seconds: float = Field(default=5.0, ge=0)
    # How often the receiver checks the stored retention policy (it is applied at most once a day).
    retention_check_seconds: float = Field(default=3600.0, gt=0)
    # Live runs: a run without an end whose last start record or heartbeat is older than lost_after_seconds is marked
    # lost, checked every lost_sweep_seconds by one receiver at a time. Longer than the collector's batching and retry
    # delays and many times the clients' heartbeat interval (GLIA_HEARTBEAT_INTERVAL_MS, 30 s by default).
    lost_after_seconds: float = Field(default=300.0, gt=0)
    lost_sweep_seconds: float = Field(default=30.0, gt=0)

    log_level: str = "info"

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        return [h.strip() for h in value.split(",") if h.strip()] if isinstance(value, str) else value
