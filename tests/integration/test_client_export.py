"""Posting: a slow name lookup cannot stall an export past its timeout, and a name is looked up once."""

from __future__ import annotations

import time
from typing import Any

import pytest

from glia_otel import _export


def test_a_stalled_name_lookup_is_bounded_and_an_answered_one_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    import _socket

    real = _socket.getaddrinfo
    calls: list[object] = []

    def slow(host: Any, *args: Any) -> Any:
        calls.append(host)
        if host == b"stalled.invalid":
            time.sleep(3)
        return real("127.0.0.1", *args)

    monkeypatch.setattr(_socket, "getaddrinfo", slow)
    monkeypatch.setattr(_export, "_resolved", {})
    t0 = time.monotonic()
    status, detail = _export.post("http://stalled.invalid:9/v1/traces", b"x", "application/x-protobuf", {}, 0.2, False)
    assert time.monotonic() - t0 < 0.5
    assert status == _export.NO_ANSWER and "timed out" in detail

    for _ in range(3):
        status, _ = _export.post("http://cached.invalid:9/v1/traces", b"x", "application/x-protobuf", {}, 1.0, False)
        assert status == _export.NO_ANSWER  # nothing listens on port 9
    assert calls.count(b"cached.invalid") == 1


def test_spool_writes_do_not_rescan_the_directory_each_time(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from glia_otel import _spool
    from glia_otel._config import Settings

    scans: list[str] = []
    real = _spool._spool_files

    def counting(directory: str) -> list[tuple[int, str]]:
        scans.append(directory)
        return real(directory)

    monkeypatch.setattr(_spool, "_spool_files", counting)
    settings = Settings(spool_dir=str(tmp_path / "spool"), spool_max_bytes=2000)
    for _ in range(30):
        assert _spool.write(settings, "traces", b"x" * 10, "pb", False) is not None
    assert len(scans) == 1  # the first write counts what is there; the others add up what they wrote
    assert _spool.has_files(settings)
    for _ in range(30):
        _spool.write(settings, "traces", b"y" * 100, "pb", False)
    files = list((tmp_path / "spool").iterdir())
    assert sum(f.stat().st_size for f in files) <= 2000
    assert len(scans) < 30  # scanned only when over the bound


def test_an_http_protocol_error_is_no_answer_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    import http.client

    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise http.client.BadStatusLine("garbage")  # an HTTPException, not an OSError

    monkeypatch.setattr(http.client.HTTPSConnection, "request", broken)
    status, detail = _export.post("https://127.0.0.1:9/v1/traces", b"x", "application/x-protobuf", {}, 1.0, False)
    assert status == _export.NO_ANSWER and "BadStatusLine" in detail
