"""The `glia` command: a thin dispatcher that imports only the subcommand it runs.

`glia run` must start the user's command fast, so nothing heavy is imported here. Each subcommand is a small
function that imports its module and calls it, so that mypy checks the call and a reader can follow it.

The client (this package) runs `glia run`, `glia flush`, and `glia runs` / `show` / `suggest` / `compare` through a
receiver's query API (`GLIA_API_URL`). The server part (`receiver/`, installed with `pip install 'glia[server]'`) runs
the rest, and those four against the database; without it, those commands say in one line how to install it.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # `typing` and `collections.abc` would cost `glia run` milliseconds
    from collections.abc import Callable

SERVER_INSTALL = "pip install 'glia[server]'"


def _run(argv: list[str]) -> int:
    from ._run import main as run_main

    return run_main(argv)


def _flush(argv: list[str]) -> int:
    from ._spool import flush_main

    return flush_main(argv)


def _import(argv: list[str]) -> int:
    from ._import import main as import_main

    return import_main(argv)


def _nextflow_config(argv: list[str]) -> int:
    from ._nextflow import config_main

    return config_main(argv)


def _nextflow_workflow(argv: list[str]) -> int:
    from ._nextflow import workflow_main

    return workflow_main(argv)


def _serve(argv: list[str]) -> int:
    from receiver.cli import serve_main

    return serve_main(argv)


def _migrate(argv: list[str]) -> int:
    from receiver.cli import migrate_main

    return migrate_main(argv)


def _runs(argv: list[str]) -> int:
    from . import _query

    if _query.reads_api(argv):
        return _query.runs_main(argv)
    from receiver.query_cli import runs_main

    return runs_main(argv)


def _show(argv: list[str]) -> int:
    from . import _query

    if _query.reads_api(argv):
        return _query.show_main(argv)
    from receiver.query_cli import show_main

    return show_main(argv)


def _suggest(argv: list[str]) -> int:
    from . import _query

    if _query.reads_api(argv):
        from ._answers import suggest_main

        return suggest_main(argv)
    from receiver.answers_cli import suggest_main as suggest_from_database

    return suggest_from_database(argv)


def _compare(argv: list[str]) -> int:
    from . import _query

    if _query.reads_api(argv):
        from ._answers import compare_main

        return compare_main(argv)
    from receiver.answers_cli import compare_main as compare_from_database

    return compare_from_database(argv)


def _keys(argv: list[str]) -> int:
    from receiver.query_cli import keys_main

    return keys_main(argv)


def _retention(argv: list[str]) -> int:
    from receiver.query_cli import retention_main

    return retention_main(argv)


# Which part of glia a command needs: the client alone, the server part, or either (the query API or the database).
CLIENT, SERVER, EITHER = "client", "server", "either"

# subcommand -> (function of argv without the subcommand, returning the exit code; the part it needs; one-line help)
_COMMANDS: dict[str, tuple[Callable[[list[str]], int], str, str]] = {
    "run": (_run, CLIENT, "run a command and record it as a run: glia run -- CMD ARGS..."),
    "flush": (_flush, CLIENT, "resend runs that were spooled while the endpoint was down"),
    "import": (_import, CLIENT, "record past runs from a workflow engine's files: glia import nextflow trace.txt"),
    "nextflow-config": (_nextflow_config, CLIENT, "print a Nextflow config that records each run and its tasks"),
    "nextflow-workflow": (_nextflow_workflow, CLIENT, "record a finished Nextflow run (that config runs it)"),
    "runs": (_runs, EITHER, "list runs: a table, or --format json|csv|parquet, with filters"),
    "show": (_show, EITHER, "show one run: attributes, child spans, samples"),
    "suggest": (_suggest, EITHER, "what to request per program: memory, time, CPUs (--format slurm|nextflow|...)"),
    "compare": (_compare, EITHER, "a program's script versions, hosts or values against each other: what got worse"),
    "serve": (_serve, SERVER, "run the OTLP/HTTP receiver (embedded PostgreSQL by default)"),
    "migrate": (_migrate, SERVER, "apply (or roll back) the database schema migrations"),
    "keys": (_keys, SERVER, "create, list and revoke API keys"),
    "retention": (_retention, SERVER, "drop old monthly partitions; store the daily policy"),
}


def _usage() -> str:
    lines = ["usage: glia COMMAND [ARGS...]"]
    width = max(10, *(len(name) for name in _COMMANDS))
    for part, title in (
        (CLIENT, "commands:"),
        (EITHER, "reading runs (from the query API at $GLIA_API_URL, else from the database: the server part):"),
        (SERVER, f"the server part ({SERVER_INSTALL}):"),
    ):
        lines += ["", title]
        lines += [f"  {name:<{width}} {help_}" for name, (_, needs, help_) in _COMMANDS.items() if needs == part]
    lines += ["", "Run 'glia COMMAND --help' for a command's options."]
    return "\n".join(lines)


def _without_server(name: str, argv: list[str], exc: ModuleNotFoundError) -> str | None:
    """The one line for a command whose server part is not installed, or None when `exc` is something else."""
    missing = exc.name or ""
    if not missing or missing.partition(".")[0] == "glia_otel":
        return None  # the client itself is broken: that is a bug to see whole
    needs = _COMMANDS[name][1]
    if needs == CLIENT:
        return None
    if needs == EITHER:
        from . import _query

        if _query.reads_api(argv):
            return None
        if not _query.asks_for_database(argv):
            return _query.no_way_to_read(f"glia {name}", missing)
    return f"glia {name}: needs the server part, which is not installed (no module named {missing!r}): {SERVER_INSTALL}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `glia` console script."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # `glia ... | head`: the reader left. Say nothing more (the interpreter's own flush at exit would raise
        # again into a traceback) and end as a command killed by SIGPIPE does, which a shell's pipefail expects.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + 13


def _main(argv: list[str] | None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from ._version import __version__

        print(f"glia {__version__}")
        return 0
    entry = _COMMANDS.get(args[0])
    if entry is None:
        print(f"glia: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    command = entry[0]
    try:
        code = command(args[1:])
    except ModuleNotFoundError as exc:
        # the server part imports some of its dependencies only when a command needs them: caught wherever it is
        hint = _without_server(args[0], args[1:], exc)
        if hint is None:
            raise
        print(hint, file=sys.stderr)
        return 1
    if argv is None and args[0] == "run":
        # The command's run is recorded and its cgroup removed: the interpreter's teardown (several ms) would
        # only delay the exit. glia run leaves no thread with work to finish (the background resend is safe to
        # stop at any point: files are deleted only after they were delivered).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
