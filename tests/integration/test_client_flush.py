"""`glia flush` over what a spool can hold besides fresh requests: one the receiver refuses at flush time, the
temporary files of writers that died, a lock file replaced by a link."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ReceiverServer
from tests.helpers import GLIA, Sql, client_env, run_python

BIG_RUN = "import glia_otel\nwith glia_otel.track('big', pad='x' * 4000):\n    pass\n"
SMALL_RUN = "import glia_otel\nwith glia_otel.track('small'):\n    pass\n"


def flush(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GLIA, "flush"], env=env, capture_output=True, text=True, timeout=60)


def spool_while_down(tmp_path: Path, spool: Path, script: str) -> None:
    """Run `script` with the endpoint down, so its run waits in `spool`."""
    proc = run_python(tmp_path, script, client_env(None, spool, OTEL_EXPORTER_OTLP_COMPRESSION="none"))
    assert proc.returncode == 0, proc.stderr


def requests_in(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.iterdir() if p.name != ".lock")


def test_a_request_refused_at_flush_is_set_aside_and_the_rest_are_sent(
    tmp_path: Path, receiver_factory: Callable[..., ReceiverServer], sql: Sql
) -> None:
    spool = tmp_path / "spool"
    spool_while_down(tmp_path, spool, BIG_RUN)
    spool_while_down(tmp_path, spool, SMALL_RUN)
    big, small = requests_in(spool)  # oldest first

    proc = flush(client_env(receiver_factory(max_body_bytes=3000).url, spool))
    assert proc.returncode == 1, proc.stderr
    assert "sent 1 request(s), 1 span(s)" in proc.stderr and "1 rejected" in proc.stderr, proc.stderr
    assert f"glia flush: {big}: " in proc.stderr and "413" in proc.stderr and "kept as .rejected" in proc.stderr
    assert requests_in(spool) == [big + ".rejected"], "the refused request is kept, not deleted"
    assert [r["name"] for r in sql("SELECT name FROM spans")] == ["small"]
    assert small not in requests_in(spool)


def test_stale_temporary_files_are_removed_and_fresh_ones_left(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    spool = tmp_path / "spool"
    spool_while_down(tmp_path, spool, SMALL_RUN)
    (request,) = requests_in(spool)
    stale, fresh = spool / "1-1-dead.pb.tmp", spool / "2-2-live.pb.tmp"
    stale.write_bytes(b"half a request")
    fresh.write_bytes(b"being written")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    proc = flush(client_env(receiver.url, spool))
    assert proc.returncode == 0, proc.stderr
    assert requests_in(spool) == [fresh.name], "a writer that died an hour ago leaves nothing; a live one is left be"
    assert [r["name"] for r in sql("SELECT name FROM spans")] == ["small"]
    assert request not in requests_in(spool)


def test_a_lock_file_replaced_by_a_link_is_not_followed(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    spool = tmp_path / "spool"
    spool_while_down(tmp_path, spool, SMALL_RUN)
    (request,) = requests_in(spool)
    target = tmp_path / "elsewhere"
    target.write_text("not glia's")
    lock = spool / ".lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(target)

    proc = flush(client_env(receiver.url, spool))
    assert f"glia flush: cannot lock the spool {spool} (.lock: it is a symbolic link)" in proc.stderr, proc.stderr
    assert proc.returncode == 1, "a flush that could not even lock the spool sent nothing: the caller must know"
    assert target.read_text() == "not glia's"
    assert requests_in(spool) == [request], "nothing is sent without the lock"
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 0}]
