"""`glia runs` and `glia show` through a receiver's query API, for a machine with the client alone.

With `GLIA_API_URL` (the receiver's address, e.g. `http://glia.example.org:4318`) and a read key in `GLIA_API_KEY`
(when the receiver has keys), both commands read `/api/runs`, `/api/runs/{id}` and `/api/runs/{id}/metrics` over
HTTP instead of the database: a compute node can look at runs without the server part or database access. They take
the same options as the database path (`receiver/query_cli.py`, less `--database-url` and `--data-dir`) and print the
same bytes, through the same formatting (`_format.py`): the API answers with the rows the database path reads, under
the same limits (docs/querying.md). The standard library only, like the rest of the client.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from ._config import split_url
from ._format import OutputError, follow, format_json, format_run, terminal_safe, write_rows
from ._version import __version__

API_URL_VAR = "GLIA_API_URL"
API_KEY_VAR = "GLIA_API_KEY"
SERVER_INSTALL = "pip install 'glia[server]'"
# The query API's own choices (receiver/api.py: Sort, RUN_ID_PATTERN, MAX_LIMIT); tests/unit/test_query_client.py
# holds them equal, so the two paths refuse the same options the same way.
SORTS = (
    "-started_at",
    "started_at",
    "-wall_seconds",
    "wall_seconds",
    "-peak_rss_bytes",
    "peak_rss_bytes",
    "-cpu_seconds",
    "cpu_seconds",
)
STATUSES = ("running", "lost", "error", "ok")  # receiver/query.py STATUSES, the runs view's one list
RUN_ID = re.compile(r"^[0-9a-fA-F]{16}$")
MAX_LIMIT = 500
# The API's read timeout is 10 s by default (GLIA_READ_STATEMENT_TIMEOUT_MS); a receiver may set a longer one.
TIMEOUT_S = 60.0
# An API parameter named by the option it came from, in the messages of a refused request.
_OPTIONS = {"script_sha256": "--sha256", "service": "--program"}
_DATABASE_OPTIONS = ("--database-url", "--data-dir")


class ApiError(Exception):
    """A request the query API did not answer with runs: its message is one line for the user; `code` the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Terminated(Exception):
    """SIGTERM, raised where the command was, so that it ends like a Ctrl-C: one line and 128 + the signal."""


def asks_for_database(argv: Sequence[str]) -> bool:
    """Whether the arguments name a database (`--database-url`, `--data-dir`)."""
    for arg in argv:
        if arg == "--":
            break
        if arg in _DATABASE_OPTIONS or arg.startswith(tuple(f"{o}=" for o in _DATABASE_OPTIONS)):
            return True
    return False


def reads_api(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> bool:
    """Whether `glia runs` / `glia show` with these arguments read the query API: GLIA_API_URL is set, and no
    `--database-url` or `--data-dir` asks for a database (an option beats the environment)."""
    return bool(environ.get(API_URL_VAR, "").strip()) and not asks_for_database(argv)


def no_way_to_read(prog: str, missing: str | None) -> str:
    """The one line for `glia runs` / `glia show` with neither GLIA_API_URL nor the server part."""
    why = f" (no module named {missing!r})" if missing else ""
    return (
        f"{prog}: reads runs from a receiver's query API or from the database: set {API_URL_VAR} to the receiver's"
        f" address (and {API_KEY_VAR} to a read key), or install the server part{why}: {SERVER_INSTALL}"
    )


class Api:
    """The query API at `base_url`, with an optional read key: one GET at a time, JSON in, ApiError out."""

    def __init__(self, base_url: str, key: str | None, timeout: float = TIMEOUT_S) -> None:
        self.base_url = base_url.strip().rstrip("/")
        try:
            self._scheme, self._host, self._port, target = split_url(self.base_url)
        except ValueError:
            raise ApiError(
                f"{API_URL_VAR}={terminal_safe(base_url)!r} is not an http:// or https:// URL"
                " (the receiver's address, e.g. http://glia.example.org:4318)",
                code=2,
            ) from None
        self._prefix = target.partition("?")[0].rstrip("/")
        self._key = key.strip() if key else None
        self._timeout = timeout

    def get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> tuple[int, Any]:
        """(status, decoded JSON body or None) of GET `path`; ApiError when the API cannot be reached."""
        target = self._prefix + path + (f"?{urlencode(params)}" if params else "")
        headers = {"Accept": "application/json", "User-Agent": f"glia/{__version__}"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        conn: http.client.HTTPConnection
        if self._scheme == "https":
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            body = response.read()
            status = response.status
        except TimeoutError:
            raise ApiError(f"no answer from the query API at {self._shown()} within {self._timeout:.0f} s") from None
        except (OSError, http.client.HTTPException) as exc:
            reason = str(exc) or type(exc).__name__
            raise ApiError(
                f"cannot reach the query API at {self._shown()} ({API_URL_VAR}): {terminal_safe(reason)}"
            ) from None
        finally:
            conn.close()
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            if status == 200:
                raise self.not_the_api(path) from None
            return status, None

    def not_the_api(self, path: str) -> ApiError:
        """The error for a 200 whose body is not the query API's answer."""
        return ApiError(f"{self._shown()}{path} did not answer as glia's query API: is {API_URL_VAR} a receiver?")

    def _shown(self) -> str:
        return terminal_safe(self.base_url)

    def refused(self, path: str, status: int, body: Any) -> ApiError:
        """The error for an answer other than 200: what the API said, and what to do about it."""
        detail = _detail(body)
        if status in (401, 403):
            if self._key:
                what = f"refused the key in {API_KEY_VAR} ({status}: {detail}): set it to a read key"
            else:
                what = f"needs a read key ({status}: {detail}): set {API_KEY_VAR} to one"
            return ApiError(f"the query API at {self._shown()} {what} (glia keys create NAME --scope read)")
        if status == 422 and isinstance(body, dict) and isinstance(body.get("detail"), list) and body["detail"]:
            first = body["detail"][0] if isinstance(body["detail"][0], dict) else {}
            loc = first.get("loc") or ["?"]
            param = str(loc[-1])
            option = _OPTIONS.get(param, "--" + param.replace("_", "-"))
            return ApiError(f"{option}: {terminal_safe(str(first.get('msg', detail)))}", code=2)
        if status == 404:
            return ApiError(
                f"{self._shown()}{path} is not there (404: {detail}): is {API_URL_VAR} the receiver's address"
                " (http://host:4318)?"
            )
        if status == 503:
            return ApiError(f"the query API is unavailable (503): {detail}")
        return ApiError(f"the query API at {self._shown()} answered {status} to {path}: {detail}")


def _detail(body: Any) -> str:
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        detail = detail[0].get("msg")
    return terminal_safe(str(detail)) if detail else "no detail"


def _times(row: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """`row` with the API's ISO 8601 times read back as the datetimes the database path prints."""
    for key in keys:
        value = row.get(key)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # else printed as the API wrote it
                row[key] = datetime.fromisoformat(value)
    return row


def _api() -> Api:
    return Api(os.environ.get(API_URL_VAR, ""), os.environ.get(API_KEY_VAR))


def add_run_filters(parser: argparse.ArgumentParser) -> None:
    """The options of `glia runs` (the database path takes the same, and `--database-url`, `--data-dir`)."""
    parser.add_argument("--program", "--service", dest="program", help="service.name of the runs")
    parser.add_argument("--user", help="process.owner")
    parser.add_argument("--host", help="host.name")
    parser.add_argument("--name", help="the run name (glia run --name, the block's name)")
    parser.add_argument(
        "--status", choices=STATUSES, help="running (not ended), lost (its heartbeats stopped), error, ok"
    )
    parser.add_argument("--exit-code", type=int)
    parser.add_argument("--since", help="started at or after: ISO 8601 time or an age (7d, 12h, 30m, 2w)")
    parser.add_argument("--until", help="started before: ISO 8601 time or an age")
    parser.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE", help="custom value (repeatable)")
    parser.add_argument("--sha256", dest="script_sha256", help="the script's sha256")
    parser.add_argument(
        "--workflow",
        metavar="ID",
        help="a workflow's runs: the engine's workflow run id, or the workflow span's run id",
    )
    parser.add_argument("--sort", choices=SORTS, default=SORTS[0])
    parser.add_argument("--limit", type=int, default=50, help=f"runs per page (1-{MAX_LIMIT}, default 50)")
    parser.add_argument("--cursor", help="the next-page cursor printed by the previous call")
    parser.add_argument("--format", choices=["table", "json", "csv", "parquet"], default="table")
    parser.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout (parquet: not a terminal)")
    add_follow_options(parser)


def add_follow_options(parser: argparse.ArgumentParser) -> None:
    """`--follow` and `--interval`, on both paths of `glia runs`."""
    parser.add_argument(
        "--follow",
        action="store_true",
        help="show the table again every --interval seconds until Ctrl-C; the running runs unless --status is given",
    )
    parser.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="--follow's (default 2)")


def check_follow(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what --follow cannot do; it lists the running runs when no status is asked for."""
    if not args.follow:
        return
    if args.format != "table" or args.output is not None:
        parser.error("--follow shows a table in the terminal: it takes neither --format nor --output")
    if not args.interval >= 0.2:
        parser.error("--interval must be at least 0.2 seconds")
    if args.status is None:
        args.status = "running"


def _epilog() -> str:
    return f"Reads the query API at ${API_URL_VAR} with the read key in ${API_KEY_VAR}."


def runs_main(argv: list[str]) -> int:
    """List runs, newest first, from the query API: a table in the terminal, or JSON, CSV or Parquet."""
    parser = argparse.ArgumentParser(prog="glia runs", description=runs_main.__doc__, epilog=_epilog())
    add_run_filters(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.limit <= MAX_LIMIT:
        parser.error(f"--limit must be between 1 and {MAX_LIMIT}")
    if args.workflow is not None and not args.workflow.strip():
        parser.error("--workflow needs an id: the engine's workflow run id, or the workflow span's run id")
    check_follow(parser, args)
    params = [
        (name, str(value))
        for name, value in (
            ("program", args.program),
            ("user", args.user),
            ("host", args.host),
            ("status", args.status),
            ("exit_code", args.exit_code),
            ("since", args.since),
            ("until", args.until),
            ("script_sha256", args.script_sha256),
            ("workflow", args.workflow),
            ("name", args.name),
            ("cursor", args.cursor),
        )
        if value is not None
    ]
    params += [("attr", item) for item in args.attr]
    params += [("sort", args.sort), ("limit", str(args.limit))]

    def fetch(api: Api) -> tuple[list[dict[str, Any]], Any]:
        status, page = api.get("/api/runs", params)
        if status != 200:
            raise api.refused("/api/runs", status, page)
        if not isinstance(page, dict) or not isinstance(page.get("runs"), list):
            raise api.not_the_api("/api/runs")
        return [_times(row, ("started_at", "ended_at")) for row in page["runs"]], page

    def body() -> int:
        api = _api()
        if args.follow:
            return follow(lambda: fetch(api)[0], args.interval, f"glia runs --status {args.status}")
        rows, page = fetch(api)
        write_rows(rows, args.format, args.output)
        if page.get("next_cursor"):
            print(f"more: glia runs ... --cursor {terminal_safe(str(page['next_cursor']))}", file=sys.stderr)
        return 0

    return _main("glia runs", body)


def show_main(argv: list[str]) -> int:
    """Show one run from the query API: every column, its custom values, its child spans and its samples."""
    parser = argparse.ArgumentParser(prog="glia show", description=show_main.__doc__, epilog=_epilog())
    parser.add_argument("run_id", metavar="RUN_ID", help="the run's id (16 hex digits, from 'glia runs')")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    args = parser.parse_args(argv)
    if not RUN_ID.match(args.run_id):
        parser.error(f"{args.run_id!r} is not a run id: 16 hex digits, as 'glia runs' shows them")

    def body() -> int:
        api = _api()
        path = f"/api/runs/{quote(args.run_id)}"
        status, run = api.get(path)
        if status == 404 and _detail(run).startswith("no run with id"):
            print(f"glia show: no run with id {args.run_id}", file=sys.stderr)
            return 1
        if status != 200:
            raise api.refused(path, status, run)
        if not isinstance(run, dict) or "run_id" not in run:
            raise api.not_the_api(path)
        _times(run, ("started_at", "ended_at"))
        for child in [*(run.get("children") or []), *(run.get("workflow_tasks") or [])]:
            _times(child, ("started_at", "ended_at"))
        status, answer = api.get(path + "/metrics")
        if status == 404 and _detail(answer).startswith("no run with id"):
            answer = {"series": []}  # dropped in between (retention): shown without samples
        elif status != 200:
            raise api.refused(path + "/metrics", status, answer)
        if not isinstance(answer, dict) or not isinstance(answer.get("series"), list):
            raise api.not_the_api(path + "/metrics")
        metrics: list[dict[str, Any]] = answer["series"]
        for series in metrics:
            for point in series.get("points") or []:
                _times(point, ("time",))
        if args.format == "json":
            print(format_json({**run, "metrics": metrics}))
        else:
            print(format_run(run, metrics))
        return 0

    return _main("glia show", body)


def _main(prog: str, body: Callable[[], int]) -> int:
    """Run `body`, turning what can go wrong into one line on stderr and an exit code, as the database path does.

    An interrupted request is abandoned: closing the connection is what makes the receiver cancel its query."""

    def terminate(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return body()
    except ApiError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.code
    except OutputError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted by SIGINT; the request was abandoned", file=sys.stderr)
        return 128 + signal.SIGINT
    except _Terminated:
        print(f"{prog}: interrupted by SIGTERM; the request was abandoned", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
