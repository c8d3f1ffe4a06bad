"""glia's spawner: where it is cached, what is trusted, and how its report is read."""

from __future__ import annotations

import os
from pathlib import Path

from glia_otel import _spawner
from glia_otel._run import _Report


def test_cache_dir_follows_xdg() -> None:
    assert _spawner.cache_dir({"XDG_CACHE_HOME": "/x/cache"}) == "/x/cache/glia"
    assert _spawner.cache_dir({}) == os.path.join(os.path.expanduser("~"), ".cache", "glia")


def test_the_name_changes_with_the_source() -> None:
    a, b = _spawner.binary_name(b"int main(){}"), _spawner.binary_name(b"int main(){return 1;}")
    assert a != b and a.startswith("spawn-") and os.uname().machine in a
    assert _spawner.binary_name(b"int main(){}") == a


def test_a_spawner_others_could_write_is_not_run(tmp_path: Path) -> None:
    directory = tmp_path / "glia"
    binary = directory / "spawn-x"
    assert _spawner._untrusted(str(directory), str(binary)) == "missing"
    directory.mkdir(mode=0o700)
    assert _spawner._untrusted(str(directory), str(binary)) == "missing"
    binary.write_bytes(b"")
    binary.chmod(0o700)
    assert _spawner._untrusted(str(directory), str(binary)) is None
    binary.chmod(0o722)
    assert "not yours alone" in (_spawner._untrusted(str(directory), str(binary)) or "")
    binary.chmod(0o700)
    directory.chmod(0o777)
    assert "writable by others" in (_spawner._untrusted(str(directory), str(binary)) or "")
    directory.chmod(0o700)
    binary.unlink()
    binary.symlink_to("/bin/true")
    assert "not a regular file" in (_spawner._untrusted(str(directory), str(binary)) or "")


def _report(data: bytes) -> _Report:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    os.close(write_fd)
    report = _Report(read_fd)
    report.read_until_pid()
    report.read_to_end()
    return report


def test_the_report_is_read_in_any_order() -> None:
    r = _report(b"C\nE 2\nP 42\nO 10 20\nR 256 1500 1000000 2000000 3500000 500000\n")
    assert r.pid == 42 and r.joined is False and r.exec_errno == 2 and r.live_io == (10, 20)
    assert r.status == 256
    # the peak is the command's own, CPU the spawner's children's (the command and the orphans it reaped)
    assert r.rusage == (1500, 3.5, 0.5)


def test_a_spawner_killed_midway_leaves_no_figures() -> None:
    r = _report(b"P 42\nR 0 15")  # cut short, no newline
    assert r.pid == 42 and r.status is None and r.rusage is None
    r = _report(b"")
    assert r.pid is None and r.status is None
