"""Pure parts of the Nextflow integration: trace values, the import's ids and arguments, the task FIELDS glia run
reads, the Groovy escaping of the generated config."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from glia_otel import _import, _import_nextflow, _nextflow
from glia_otel._import_nextflow import (
    parse_date_ns,
    parse_duration_ms,
    parse_memory,
    parse_number,
    parse_percent,
)
from glia_otel._run import UsageError as RunUsageError
from glia_otel._run import take_task_option


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.1 MB", round(10.1 * 1024**2)),
        ("1.5 GB", round(1.5 * 1024**3)),
        ("512 B", 512),
        ("3 KB", 3072),
        ("64397312", 64397312),  # raw (trace.raw, or peak_rss:num)
        ("0", 0),
        ("-", None),
        ("", None),
    ],
)
def test_memory_values_are_read_as_nextflow_writes_them(text: str, expected: int | None) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2m 3s", 123_000.0),
        ("1.5s", 1500.0),
        ("150ms", 150.0),
        ("0ms", 0.0),
        ("1d 2h 3m 4s", ((26 * 60 + 3) * 60 + 4) * 1000.0),
        ("10m", 600_000.0),
        ("01:02:03", 3_723_000.0),
        ("549", 549.0),  # raw milliseconds
        ("-", None),
    ],
)
def test_durations_are_read_as_nextflow_writes_them(text: str, ms: float | None) -> None:
    assert parse_duration_ms(text) == ms


def test_other_values_and_what_is_refused() -> None:
    assert parse_percent("12.5%") == 12.5 and parse_percent("99") == 99.0 and parse_percent("-") is None
    assert parse_number("7") == 7 and parse_number("1.5") == 1.5 and parse_number("-") is None
    for bad in ("ten MB", "12 XB"):
        with pytest.raises(ValueError):
            parse_memory(bad)
    for bad in ("2 fortnights", "3s later", "s"):
        with pytest.raises(ValueError):
            parse_duration_ms(bad)


def test_dates_are_the_runs_local_time_or_raw_epoch_milliseconds() -> None:
    when = datetime(2026, 12, 2, 17, 57, 19, 911000, tzinfo=UTC)
    ns = int(when.timestamp()) * 10**9 + 911_000_000
    assert parse_date_ns("2026-12-02 17:57:19.911", UTC) == ns
    assert parse_date_ns("2026-12-02 18:57:19.911", ZoneInfo("Europe/Paris")) == ns  # UTC+1 in December
    assert parse_date_ns(str(ns // 10**6), None) == ns
    assert parse_date_ns("-", UTC) is None
    with pytest.raises(ValueError):
        parse_date_ns("yesterday", UTC)


HEADER = "task_id,hash,name,status,exit,attempt,submit,realtime,peak_rss"


def test_a_csv_trace_with_cached_and_broken_rows(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(
        HEADER + "\n"
        "1,ab/cdef12,A (1),CACHED,0,1,2026-12-02 10:00:00.000,1s,10 MB\n"
        "2,cd/ef0123,A (2),COMPLETED,0,1,2026-12-02 10:00:01.000,1.5s,20 MB\n"
        "3,ef/012345,B,FAILED,3,1,2026-12-02 10:00:02.000,-,-\n"
        "4,01/234567,B,COMPLETED,0,2,-,-,-\n"
        "5,23/456789,C,COMPLETED,0,1,2026-12-02 10:00:03.000,1s,ten MB\n"
        "6,45/678901,C\n"
    )
    (run,) = _import_nextflow.read(str(trace), _import.ImportOptions(timezone=UTC))
    assert [t.name for t in run.tasks] == ["A (2)", "B"]
    a, b = run.tasks
    assert a.key == ("hash", "cdef0123", "1") and a.program == "A"
    assert a.end_ns - a.start_ns == 1_500_000_000  # submit + realtime: no complete
    assert a.attributes["glia.memory.peak_rss_bytes"] == 20 * 1024**2
    assert b.failed and b.status_message == "Nextflow: FAILED, exit code 3" and b.end_ns == b.start_ns
    assert sorted(run.skipped) == sorted(
        [
            "line 5: no time (none of submit, start, complete)",
            "line 6: peak_rss: not a memory value: 'ten MB'",
            "line 7: 3 values for 9 fields",
            "1 cached task(s): the run that executed them recorded them (import its trace)",
        ]
    )
    # the run id comes from the header and the first row that ran: appending rows keeps it
    with trace.open("a") as f:
        f.write("7,67/890123,D,COMPLETED,0,1,2026-12-02 10:00:09.000,1s,1 MB\n")
    (grown,) = _import_nextflow.read(str(trace), _import.ImportOptions(timezone=UTC))
    assert grown.run_id == run.run_id and len(grown.tasks) == 3


def test_not_a_trace_or_nothing_to_import(tmp_path: Path) -> None:
    for text, reason in (
        ("sample\treads\n", "not a Nextflow trace file"),
        (HEADER + "\n", "only a header"),
        (HEADER + "\n1,ab/cdef12,A,CACHED,0,1,2026-12-02 10:00:00.000,1s,1 MB\n", "only cached tasks"),
        ("", "empty file"),
    ):
        path = tmp_path / "f.txt"
        path.write_text(text)
        with pytest.raises(_import.ImportProblem, match=reason):
            _import_nextflow.read(str(path), _import.ImportOptions())


def test_import_ids_are_derived_not_random_and_apart_from_live_ones() -> None:
    assert _import.trace_id("nextflow", "r") == _import.trace_id("nextflow", "r") != _import.trace_id("nextflow", "s")
    assert _import.task_span_id("nextflow", "r", ("hash", "ab", "1")) != _import.task_span_id(
        "nextflow", "r", ("hash", "ab", "2")
    )
    assert _import.trace_id("nextflow", "sess") != _nextflow.workflow_ids("sess", "")[0]
    assert _import.trace_id("nextflow", "r") < 1 << 128 and _import.workflow_span_id("nextflow", "r") < 1 << 64


def test_import_arguments() -> None:
    engine, options, files = _import.parse_args(["nextflow", "--run-id", "x", "--timezone=UTC", "a.txt", "b.txt"])
    assert (engine, options.run_id, options.timezone, files) == ("nextflow", "x", UTC, ["a.txt", "b.txt"])
    assert _import.parse_args(["nextflow", "--", "--odd-name"])[2] == ["--odd-name"]
    for bad, message in (
        ([], "no engine"),
        (["nextflow"], "no file"),
        (["snakemake2", "f"], "unknown engine"),
        (["nextflow", "--frobnicate", "f"], "unknown option"),
        (["nextflow", "--timezone", "Mars/Olympus", "f"], "not a time zone"),
        (["nextflow", "--run-id"], "needs a value"),
    ):
        with pytest.raises(_import.UsageError, match=message):
            _import.parse_args(bad)


def test_every_engine_has_a_reader() -> None:
    for name, engine in _import.ENGINES.items():
        assert callable(engine.reader()), name
        assert engine.peak_rss_method and engine.help


def test_batches_split_by_span_count_and_keep_every_span() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    tasks = [
        _import.ImportedTask(("k", str(i)), f"t{i}", "p" if i % 2 else "q", i * 10**9, i * 10**9 + 1) for i in range(5)
    ]
    run = _import.ImportedRun("r", "run", tasks)
    groups = _import.build_request_groups("nextflow", run, "/x/trace.txt", {})
    bodies = _import.encode_batches(groups, batch=2)
    names = []
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert len(spans) <= 2
        names += [s.name for s in spans]
    assert sorted(names) == ["run", "t0", "t1", "t2", "t3", "t4"]


def test_task_fields_become_the_runs_attributes_and_ids() -> None:
    fields = (
        "session=3b7c,run=tiny_euler,name=align%20%28S3%29,process=align,hash=ab12,attempt=2,index=7,"
        "workdir=%2Fw%2Fab%2F12,cpus=4,memory=2147483648,time=3600000,queue=short"
    )
    task = _nextflow.task_run(fields)
    assert (task.name, task.program) == ("align (S3)", "align")
    assert (task.trace_id, task.parent_span_id) == _nextflow.workflow_ids("3b7c", "tiny_euler")
    assert task.attributes == {
        "glia.run.kind": "task",
        "glia.workflow.engine": "nextflow",
        "glia.workflow.run_id": "3b7c",
        "glia.workflow.name": "tiny_euler",
        "glia.task.name": "align (S3)",
        "glia.task.attempt": 2,
        "glia.requested.cpus": 4.0,
        "glia.requested.memory_bytes": 2147483648,
        "glia.requested.seconds": 3600.0,
        "glia.nextflow.process": "align",
        "glia.nextflow.hash": "ab12",
        "glia.nextflow.workdir": "/w/ab/12",
        "glia.nextflow.queue": "short",
        "glia.nextflow.run_name": "tiny_euler",
        "glia.nextflow.task_index": 7,
    }
    assert _nextflow.task_run("session=s,run=r,manifest=rnaseq,name=x").attributes["glia.workflow.name"] == "rnaseq"
    # a new run name (-resume keeps the session): the same trace, another workflow span
    assert _nextflow.workflow_ids("s", "a")[0] == _nextflow.workflow_ids("s", "b")[0]
    assert _nextflow.workflow_ids("s", "a")[1] != _nextflow.workflow_ids("s", "b")[1]
    with pytest.raises(ValueError):
        _nextflow.task_run("no-equals-sign")


def test_glia_run_takes_the_task_option_from_among_its_options_only() -> None:
    assert take_task_option(["--nextflow-task", "F", "--", "bash"]) == (["--", "bash"], "F")
    assert take_task_option(["--name", "--nextflow-task", "--", "x"]) == (
        ["--name", "--nextflow-task", "--", "x"],
        None,
    )
    assert take_task_option(["--nextflow-task=F", "--no-args", "--", "x"]) == (["--no-args", "--", "x"], "F")
    assert take_task_option(["--", "prog", "--nextflow-task", "F"]) == (["--", "prog", "--nextflow-task", "F"], None)
    with pytest.raises(RunUsageError):
        take_task_option(["--nextflow-task"])


@pytest.mark.parametrize(
    ("text", "literal"),
    [
        ("/opt/glia/bin/glia", "'/opt/glia/bin/glia'"),
        ("it's", "'it\\'s'"),
        ("a\\b", "'a\\\\b'"),
        ("$HOME ${x}", "'$HOME ${x}'"),  # single-quoted Groovy strings do not interpolate
        ("line\nbreak\x01", "'line\\nbreak\\u0001'"),
    ],
)
def test_config_values_are_groovy_string_literals(text: str, literal: str) -> None:
    assert _nextflow.groovy_string(text) == literal


def test_the_config_quotes_glia_for_bash_inside_groovy() -> None:
    text = _nextflow.config_text("/home/a b/it's/glia", ["/bin/bash", "-euo", "pipefail"], "http://gw:4318")
    assert "return ['\\'/home/a b/it\\'\"\\'\"\\'s/glia\\'', 'run', '--nextflow-task', encoded, '--']" in text
    assert "+ ['/bin/bash', '-euo', 'pipefail']" in text
    assert "env.OTEL_EXPORTER_OTLP_ENDPOINT = 'http://gw:4318'" in text
    assert "def command = ['/home/a b/it\\'s/glia', 'nextflow-workflow']" in text
