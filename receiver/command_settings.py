"""What the database commands (`glia runs`, `show`, `keys`, `retention`, and `migrate`) are told, and where their
database is: `--database-url`, else `$GLIA_DATABASE_URL`, else the embedded PostgreSQL in `--data-dir`.

The read commands run on compute nodes and in scripts, so they start without pydantic (about 150 ms of imports):
`CommandSettings` reads the few `GLIA_*` variables they take with the standard library, under the same names,
defaults and lower bounds as the receiver's `Settings` (`tests/unit/test_receiver_pure.py` holds the two together).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol

ENV_PREFIX = "GLIA_"
# The lower bound of each number (the receiver's Settings declares the same with `ge=`).
_AT_LEAST = {
    "read_statement_timeout_ms": 0,
    "api_response_bytes": 64 * 1024,
    "api_list_value_chars": 64,
    "api_list_row_bytes": 1024,
    "api_detail_value_chars": 64,
}


def default_data_dir() -> Path:
    """Where the embedded PostgreSQL lives when no `--data-dir` is given."""
    import platformdirs

    if os.geteuid() == 0:
        # root's home is usually closed to other users, and PostgreSQL refuses to run as root: keep the
        # cluster where a system service would.
        return Path("/var/lib/glia")
    return Path(platformdirs.user_data_dir("glia"))


@dataclass(frozen=True)
class CommandSettings:
    """The settings of a database command: arguments, then `GLIA_*` variables, then the defaults."""

    database_url: str | None = None
    data_dir: Path = field(default_factory=default_data_dir)
    # the bounds of one read (query.ReadLimits), as the query API has them
    read_statement_timeout_ms: int = 10_000
    api_response_bytes: int = 4 * 1024 * 1024
    api_list_value_chars: int = 4096
    api_list_row_bytes: int = 64 * 1024
    api_detail_value_chars: int = 65536

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **given: object) -> CommandSettings:
        """The settings from `given` (the command's options; None means not given), else `environ`
        (`os.environ`), else the defaults; ValueError naming the variable for a value that cannot be used."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            if given.get(f.name) is not None:
                values[f.name] = given[f.name]
                continue
            name = ENV_PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is None:
                continue
            if f.name == "database_url":
                values[f.name] = raw or None
            elif f.name == "data_dir":
                values[f.name] = Path(raw)
            else:
                values[f.name] = _number(name, raw, _AT_LEAST[f.name])
        unknown = set(given) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        return cls(**values)  # type: ignore[arg-type]  # each value was read as its field's type


def _number(name: str, raw: str, at_least: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if value < at_least:
        raise ValueError(f"{name}={raw!r} must be at least {at_least}")
    return value


class DatabasePlace(Protocol):
    """Where a command's database is: CommandSettings, or the receiver's Settings."""

    @property
    def database_url(self) -> str | None: ...
    @property
    def data_dir(self) -> Path: ...


def database_options(parser: argparse.ArgumentParser) -> None:
    """Add --database-url and --data-dir, which every command that opens the database takes."""
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (default: $GLIA_DATABASE_URL, else the embedded PostgreSQL in --data-dir)",
    )
    parser.add_argument("--data-dir", type=Path, help="where the embedded PostgreSQL keeps its data")


@contextlib.contextmanager
def database(settings: DatabasePlace, *, migrate: bool) -> Iterator[str]:
    """The database URL for a command: the configured one, or the embedded PostgreSQL.

    An embedded PostgreSQL that was not running is started for the command and stopped after it, unless another
    glia process (a `glia serve`, another command) is using it by then; with `migrate`, its schema is brought to head
    first.
    """
    if settings.database_url:
        from .dburl import check

        check(settings.database_url)
        yield settings.database_url
        return
    from .embedded import EmbeddedPostgres

    with EmbeddedPostgres(settings.data_dir).use() as url:
        if migrate:
            from .migrate import upgrade

            upgrade(url)
        yield url
