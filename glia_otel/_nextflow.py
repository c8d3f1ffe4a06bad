"""Nextflow, live: `glia nextflow-config` writes a config that records a `nextflow run` and every task in it.

`nextflow run PIPELINE -c glia.config` (the pipeline unchanged, core Nextflow only: no plugin) then records:
- every task attempt as a run: the config's `process.shell` closure makes each task's interpreter
  `glia run --nextflow-task FIELDS -- /bin/bash -ue`, so `.command.sh` runs under `glia run` and is measured exactly
  like any command (peak RSS as GNU time's %M, CPU, I/O, exit code). FIELDS carries what the closure knows of the task
  (name, process, hash, attempt, work dir, requested cpus/memory/time) and of the run (session id, run name), each
  value percent-encoded so the line Nextflow writes into its bash wrapper holds no space, quote or glob character;
  `task_run` turns them into the run's attributes, name and ids.
- the run itself as one workflow span, sent by `glia nextflow-workflow KEY=VALUE...`, which the config's
  `workflow.onComplete` handler starts once the run has ended (succeeded or not), bounded and caught so that it
  never fails the pipeline; like any glia run it is spooled when the endpoint is down.

Ids: the trace id comes from the session id and the workflow span id from the session id and run name (`workflow_ids`),
so a task knows its parent before the workflow span exists, and each task carries glia.workflow.run_id itself.
"""

from __future__ import annotations

import os
import sys

from ._config import parse_key_values

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

ENGINE = "nextflow"
DEFAULT_SHELL = "/bin/bash -ue"  # Nextflow's own default for process.shell
ERROR_MESSAGE_MAX = 4096


def _id(bits: int, *parts: str) -> int:
    try:
        from _sha256 import sha256  # type: ignore[import-not-found] # builtin: `hashlib` loads OpenSSL first
    except ImportError:  # pragma: no cover - builds without it
        from hashlib import sha256
    digest = sha256("\0".join(parts).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[: bits // 8], "big") or 1


def workflow_ids(session_id: str, run_name: str) -> tuple[int, int]:
    """(trace id, workflow span id) of one `nextflow run`: the trace from the session, the span from the run too
    (`-resume` keeps the session and makes a new run name)."""
    return _id(128, ENGINE, session_id), _id(64, ENGINE, session_id, run_name, "workflow")


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


class NextflowTask:
    """What `glia run --nextflow-task FIELDS` records about the task it runs."""

    __slots__ = ("attributes", "name", "parent_span_id", "program", "trace_id")

    def __init__(self, name: str, program: str, trace_id: int, parent_span_id: int, attributes: dict[str, Any]):
        self.name = name
        self.program = program
        self.trace_id = trace_id  # 0: not known (no session id): glia run makes its own
        self.parent_span_id = parent_span_id
        self.attributes = attributes


def task_run(fields: str) -> NextflowTask:
    """The task's name, program (its process), ids and attributes from the config's FIELDS; ValueError if malformed."""
    v = parse_key_values("--nextflow-task", fields)
    session, run = v.get("session", ""), v.get("run", "")
    process = v.get("process") or (v.get("name") or "task").split(" (", 1)[0]
    name = v.get("name") or process
    attrs: dict[str, Any] = {"glia.run.kind": "task", "glia.workflow.engine": ENGINE, "glia.task.name": name}
    if session:
        attrs["glia.workflow.run_id"] = session
    workflow_name = v.get("manifest") or run
    if workflow_name:
        attrs["glia.workflow.name"] = workflow_name
    attempt = _int(v.get("attempt"))
    if attempt is not None:
        attrs["glia.task.attempt"] = attempt
    cpus, memory, time_ms = _float(v.get("cpus")), _int(v.get("memory")), _float(v.get("time"))
    if cpus is not None:
        attrs["glia.requested.cpus"] = cpus
    if memory is not None:
        attrs["glia.requested.memory_bytes"] = memory
    if time_ms is not None:
        attrs["glia.requested.seconds"] = time_ms / 1000.0
    attrs["glia.nextflow.process"] = process
    for key in ("hash", "workdir", "queue"):
        if v.get(key):
            attrs[f"glia.nextflow.{key}"] = v[key]
    if run:
        attrs["glia.nextflow.run_name"] = run
    index = _int(v.get("index"))
    if index is not None:
        attrs["glia.nextflow.task_index"] = index
    trace_id, parent = workflow_ids(session, run) if session else (0, 0)
    return NextflowTask(name, process, trace_id, parent, attrs)


LOG_NAME = ".command.glia.log"


class TaskLog:
    """glia's own messages during a task, appended to `.command.glia.log` in its work dir (opened only if there is one).

    A task's stderr is the task's: Nextflow shows it as the failing task's "Command error", and a process may declare
    it an output, so glia's warnings (an endpoint down, say) must not be mixed into it.
    """

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, LOG_NAME)

    def write(self, text: str) -> int:
        try:
            with open(self.path, "a", encoding="utf-8", errors="replace") as f:
                return f.write(text)
        except OSError:
            stream = sys.__stderr__
            return stream.write(text) if stream is not None else 0

    def flush(self) -> None:
        pass


def task_log(task: NextflowTask) -> TaskLog:
    """Where glia's messages go while it runs `task` (its work dir, also when the task runs in a scratch dir)."""
    directory = task.attributes.get("glia.nextflow.workdir") or os.environ.get("NXF_TASK_WORKDIR") or "."
    return TaskLog(str(directory))


# --- the config ------------------------------------------------------------------------------------------------


def groovy_string(text: str) -> str:
    """`text` as a Groovy single-quoted string literal (no interpolation: `$` stays itself)."""
    out = ["'"]
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append("'")
    return "".join(out)


def _groovy_list(items: Sequence[str]) -> str:
    return "[" + ", ".join(groovy_string(i) for i in items) + "]"


CONFIG = """\
// Glia for Nextflow, written by `glia nextflow-config` (glia {version}).
// Use: nextflow run PIPELINE -c THIS_FILE    (the pipeline itself is unchanged; no plugin is needed)
//
// Every task attempt becomes a run of its own, a child of this Nextflow run: its script runs under `glia run`,
// which measures it (peak RSS as GNU time's %M, CPU, I/O, exit code) and records the task's name, process,
// hash, attempt, work dir and requested cpus/memory/time. The run itself is recorded when it ends, by the
// workflow.onComplete handler below. Runs go to the endpoint in the environment (OTEL_EXPORTER_OTLP_ENDPOINT,
// keys in OTEL_EXPORTER_OTLP_HEADERS), or to glia's spool while it is down: the pipeline never waits or fails for it.
//
// Any executor: glia must be at {glia_comment} on every machine that runs tasks, and the endpoint reachable
// from there. A process script with its own #! line runs under that interpreter, not under glia.
// A config of your own that sets process.shell (e.g. -o pipefail) needs it here: glia nextflow-config --shell.
{env}
process.shell = {{
    try {{
        def enc = {{ v ->
            java.net.URLEncoder.encode(String.valueOf(v), 'UTF-8').replace('+', '%20').replace('*', '%2A')
        }}
        def fields = [
            session: workflow.sessionId, run: workflow.runName, manifest: workflow.manifest?.name,
            name: task.name, process: task.process, hash: task.hash, attempt: task.attempt, index: task.index,
            workdir: task.workDir, cpus: task.cpus, memory: task.memory?.toBytes(), time: task.time?.toMillis(),
            queue: task.queue
        ]
        def encoded = fields.findAll {{ k, v -> v != null }}.collect {{ k, v -> k + '=' + enc(v) }}.join(',')
        return [{glia_shell}, 'run'{keep}, '--nextflow-task', encoded, '--'] + {shell_quoted}
    }} catch (Throwable e) {{
        // never the task's failure: without its record it still runs as it would without glia
        return {shell}
    }}
}}

workflow.onComplete = {{
    try {{
        def w = workflow
        def nanos = {{ t -> t == null ? null : t.toInstant().epochSecond * 1000000000L + t.toInstant().nano }}
        def values = [
            session: w.sessionId, run: w.runName, manifest: w.manifest?.name, project: w.projectName,
            script: w.scriptFile, start: nanos(w.start), end: nanos(w.complete), success: w.success,
            exit_status: w.exitStatus, error: w.errorMessage, resume: w.resume, profile: w.profile,
            command_line: w.commandLine, launch_dir: w.launchDir, work_dir: w.workDir,
            nextflow_version: w.nextflow?.version, pid: ProcessHandle.current().pid(),
            succeeded: w.stats?.succeededCount, failed: w.stats?.failedCount, ignored: w.stats?.ignoredCount,
            cached: w.stats?.cachedCount, retries: w.stats?.retriesCount, aborted: w.stats?.abortedCount
        ]
        def command = [{glia_exec}, 'nextflow-workflow']
        command += values.findAll {{ k, v -> v != null }}.collect {{ k, v -> k + '=' + v }}
        def builder = new ProcessBuilder(command.collect {{ String.valueOf(it) }}).inheritIO()
        builder.redirectInput(ProcessBuilder.Redirect.from(new File('/dev/null')))
{handler_env}        def proc = builder.start()
        if( !proc.waitFor({wait_s}, java.util.concurrent.TimeUnit.SECONDS) ) {{
            proc.destroy()
            System.err.println('glia: recording the Nextflow run took over {wait_s} s; left out')
        }}
    }} catch (Throwable e) {{
        System.err.println('glia: could not record the Nextflow run: ' + e)
    }}
}}
"""


def config_text(
    glia: str, shell: Sequence[str], endpoint: str | None = None, wait_s: int = 30, keep_stderr: Sequence[str] = ()
) -> str:
    """The Nextflow config for `glia` (its absolute path), tasks' interpreter `shell`, an optional endpoint, and the
    `glia run --keep-stderr` option tasks run with (`_stderr.wrapper_options`), if any."""
    import shlex

    from ._version import __version__

    # Nextflow joins process.shell's items with spaces into its bash wrapper: each item must be one bash word.
    quoted_shell = [shlex.quote(item) for item in shell]
    env = ""
    handler_env = ""
    if endpoint:
        env = f"\nenv.OTEL_EXPORTER_OTLP_ENDPOINT = {groovy_string(endpoint)}\n"
        handler_env = f"        builder.environment().put('OTEL_EXPORTER_OTLP_ENDPOINT', {groovy_string(endpoint)})\n"
    return CONFIG.format(
        version=__version__,
        glia_comment=glia.replace("\n", " "),
        env=env,
        glia_shell=groovy_string(shlex.quote(glia)),
        glia_exec=groovy_string(glia),
        shell_quoted=_groovy_list(quoted_shell),
        shell=_groovy_list(list(shell)),
        handler_env=handler_env,
        wait_s=int(wait_s),
        keep="".join(f", {groovy_string(option)}" for option in keep_stderr),
    )


def _default_glia() -> str | None:
    """This glia's absolute path: the running console script, else the first `glia` on PATH."""
    import shutil

    me = sys.argv[0] if sys.argv else ""
    if os.path.basename(me) == "glia" and os.path.isfile(me):
        return os.path.abspath(me)
    found = shutil.which("glia")
    return os.path.abspath(found) if found else None


CONFIG_USAGE = """usage: glia nextflow-config [--glia PATH] [--shell CMD] [--endpoint URL] [--keep-stderr[=always]]
                           [-o FILE]

Print a Nextflow config that records a `nextflow run` and every task attempt in it as Glia runs:
    glia nextflow-config > glia.config && nextflow run main.nf -c glia.config

options:
  --glia PATH      glia as tasks will run it (default: this glia, {glia})
  --shell CMD      the tasks' shell, as process.shell would be (default: {shell})
  --endpoint URL   the OTLP endpoint, written into the config for tasks and the run (default: the environment's)
  --keep-stderr[=always]
                   tasks run with `glia run --keep-stderr`: a failed task's last 64 lines of stderr are stored with
                   its run (=always: every task's); default: GLIA_KEEP_STDERR here. The task's stderr is then a pipe
  -o, --output F   write the config to F instead of printing it
  -h, --help       show this help
"""


def config_main(argv: list[str]) -> int:
    """`glia nextflow-config`: print (or write) the config."""
    import argparse
    import shlex

    from ._config import parse_endpoint

    default_glia = _default_glia()
    parser = argparse.ArgumentParser(prog="glia nextflow-config", add_help=False)
    parser.add_argument("--glia", default=default_glia)
    parser.add_argument("--shell", default=DEFAULT_SHELL)
    parser.add_argument("--endpoint")
    parser.add_argument("--keep-stderr", nargs="?", const="true", default=None)
    parser.add_argument("-o", "--output")
    parser.add_argument("-h", "--help", action="store_true")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.help:
        print(CONFIG_USAGE.format(glia=default_glia or "not found on PATH", shell=DEFAULT_SHELL))
        return 0
    if not args.glia:
        print("glia nextflow-config: cannot tell where glia is; give --glia PATH", file=sys.stderr)
        return 2
    shell = shlex.split(args.shell)
    if not shell:
        print("glia nextflow-config: --shell is empty", file=sys.stderr)
        return 2
    if args.endpoint:
        try:
            parse_endpoint("--endpoint", args.endpoint)
        except ValueError as e:
            print(f"glia nextflow-config: {e}", file=sys.stderr)
            return 2
    from . import _stderr

    try:
        if args.keep_stderr is not None:
            keep = _stderr.wrapper_options({_stderr.ENV: args.keep_stderr})
        else:
            keep = _stderr.wrapper_options(os.environ)
    except ValueError as e:
        print(f"glia nextflow-config: {e}", file=sys.stderr)
        return 2
    text = config_text(os.path.abspath(args.glia), shell, args.endpoint, keep_stderr=keep)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


# --- the workflow span ----------------------------------------------------------------------------------------


def _bool(text: str | None) -> bool | None:
    if text in ("true", "false"):
        return text == "true"
    return None


def workflow_span(values: Mapping[str, str], record_args: bool) -> tuple[dict[str, Any], Any] | None:
    """(resource, span) of the run `workflow.onComplete` described; None without a session id or start."""
    import shlex
    import time

    from ._otlp import SpanData
    from ._redact import redact_args
    from ._resource import base_attributes, service_name_for, sha256_file

    session, run = values.get("session", ""), values.get("run", "")
    start = _int(values.get("start"))
    if not session or start is None:
        return None
    end = _int(values.get("end")) or time.time_ns()
    script = values.get("script") or ""
    program = values.get("manifest") or (service_name_for(script) if script else ENGINE)

    resource: dict[str, Any] = dict(base_attributes())
    resource.update({"service.name": program, "process.runtime.name": ENGINE})
    if values.get("nextflow_version"):
        resource["process.runtime.version"] = values["nextflow_version"]
    pid = _int(values.get("pid"))
    if pid is not None:
        resource["process.pid"] = pid
    resource["process.executable.name"] = ENGINE
    if values.get("launch_dir"):
        resource["process.working_directory"] = values["launch_dir"]
    if record_args and values.get("command_line"):
        try:
            args = shlex.split(values["command_line"])
        except ValueError:
            args = values["command_line"].split()
        resource["process.command_args"] = redact_args(args)
    if script:
        resource["glia.script.path"] = script
        digest = sha256_file(script)
        if digest is not None:
            resource["glia.script.sha256"] = digest

    attrs: dict[str, Any] = {
        "glia.run.kind": "workflow",
        "glia.workflow.engine": ENGINE,
        "glia.workflow.run_id": session,
        "glia.workflow.name": values.get("manifest") or run,
        "glia.nextflow.run_name": run,
    }
    for key in ("project", "profile", "launch_dir", "work_dir"):
        if values.get(key):
            attrs[f"glia.nextflow.{key}"] = values[key]
    resume = _bool(values.get("resume"))
    if resume is not None:
        attrs["glia.nextflow.resume"] = resume
    exit_status = _int(values.get("exit_status"))
    if exit_status is not None:
        attrs["glia.nextflow.exit_status"] = exit_status
    for key in ("succeeded", "failed", "ignored", "cached", "retries", "aborted"):
        count = _int(values.get(key))
        if count is not None:
            attrs[f"glia.nextflow.tasks.{key}"] = count
    success = _bool(values.get("success"))
    error = (values.get("error") or "").strip()
    if error:
        attrs["glia.nextflow.error_message"] = error[:ERROR_MESSAGE_MAX]
    failed = success is False
    trace_id, span_id = workflow_ids(session, run)
    span = SpanData(
        trace_id=trace_id,
        span_id=span_id,
        name=run or session,
        start_ns=start,
        end_ns=max(end, start),
        attributes=attrs,
        status_code=2 if failed else 0,
        status_message=(error.splitlines()[0][:500] if error else "the Nextflow run failed") if failed else "",
    )
    return resource, span


WORKFLOW_USAGE = """usage: glia nextflow-workflow KEY=VALUE...

Record one finished `nextflow run` as a workflow run; the config `glia nextflow-config` writes runs it from
workflow.onComplete with the run's session, run, start, end, success, ... Not meant to be typed.
"""


def workflow_main(argv: list[str]) -> int:
    """`glia nextflow-workflow KEY=VALUE...`: send the workflow span (spooled when the endpoint is down); never
    fails the pipeline: problems are printed and the exit code is 0 unless the arguments are unusable."""
    import time

    if not argv or argv[0] in ("-h", "--help"):
        print(WORKFLOW_USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    values: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key:
            values[key] = value
    from ._config import load_settings

    try:
        settings = load_settings()
    except ValueError as e:
        print(f"glia nextflow-workflow: {e}; the Nextflow run is not recorded", file=sys.stderr)
        return 0
    if settings.disabled:
        return 0
    built = workflow_span(values, settings.record_args)
    if built is None:
        print("glia nextflow-workflow: no session id or start time given; nothing recorded", file=sys.stderr)
        return 2
    resource, span = built
    from ._scheduler import scheduler_attributes

    # the scheduler the run itself runs under (a head job in Slurm, a CI job), as every glia client records it
    resource.update(scheduler_attributes(os.environ, settings.resource_attributes))
    resource = {**resource, **settings.resource_attributes, "service.name": resource["service.name"]}
    from ._deliver import send
    from ._otlp import encode_request
    from ._version import __version__

    body = encode_request([(resource, "glia_otel.nextflow", __version__, [span])])
    send(settings, "traces", body, time.monotonic() + settings.export_deadline_s)
    return 0
