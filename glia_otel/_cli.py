"""The `glia` command: a thin dispatcher that imports only the subcommand it runs.

`glia run` must start the user's command fast, so nothing heavy is imported here.
"""

from __future__ import annotations

import os
import sys

# subcommand -> (module, function, one-line help). Each function takes argv (without the subcommand) and returns
# the process exit code.
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("receiver.cli", "serve_main", "run the OTLP/HTTP receiver (embedded PostgreSQL by default)"),
    "migrate": ("receiver.cli", "migrate_main", "apply (or roll back) the database schema migrations"),
    "run": ("glia_otel._run", "main", "run a command and record it as a run: glia run -- CMD ARGS..."),
    "flush": ("glia_otel._spool", "flush_main", "resend runs that were spooled while the endpoint was down"),
    "runs": ("receiver.query_cli", "runs_main", "list runs: a table, or --format json|csv, with filters"),
    "show": ("receiver.query_cli", "show_main", "show one run: attributes, child spans, samples"),
    "keys": ("receiver.query_cli", "keys_main", "create, list and revoke API keys"),
    "retention": ("receiver.query_cli", "retention_main", "drop old monthly partitions; store the daily policy"),
}


def _usage() -> str:
    lines = ["usage: glia COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in _COMMANDS.items()]
    lines += ["", "Run 'glia COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `glia` console script."""
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
    module_name, func_name, _ = entry
    # `__import__` rather than `importlib.import_module`: the `importlib` package costs `glia run` a millisecond.
    func = getattr(__import__(module_name, fromlist=[func_name]), func_name)
    code: int = func(args[1:])
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
