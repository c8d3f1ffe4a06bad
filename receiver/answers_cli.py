"""`glia suggest` and `glia compare` against the database: answers.py in the read transaction, timeout and
cancellation of `glia runs` (query_cli.py), printed by the client's formatting (`glia_otel/_answers.py`) as the API
path prints them. No web framework is imported."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from glia_otel._answers import (
    add_compare_options,
    add_suggest_options,
    compare_grouping,
    format_compare,
    format_suggest,
)

from .command_settings import database, database_options
from .query_cli import _main, _read, _settings

if TYPE_CHECKING:
    from .query import RunQueries


def suggest_main(argv: list[str]) -> int:
    """What to request (memory, time, CPUs) per program, from its successful runs: a table, JSON, #SBATCH lines, a
    Nextflow withName: block or a Snakemake resources: block."""
    parser = argparse.ArgumentParser(prog="glia suggest", description=suggest_main.__doc__)
    add_suggest_options(parser)
    database_options(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        from . import answers
        from .query import ReadLimits, parse_when

        flt = answers.SuggestFilter(
            since=parse_when(args.since, "--since"),
            until=parse_when(args.until, "--until") if args.until else None,
            program=args.program,
            task_name=args.task_name,
            workflow_name=args.workflow_name,
        )
        settings = _settings(args)

        async def work(runs: RunQueries) -> dict[str, Any]:
            return await answers.suggest(runs.conn, flt)

        with database(settings, migrate=True) as url:
            answer = _read(url, ReadLimits.from_settings(settings), work)
        print(format_suggest(answer, args.format))
        return 0

    return _main("glia suggest", body)


def compare_main(argv: list[str]) -> int:
    """One program's script versions (each against the one before), hosts or custom values (against the largest
    group): runs, median and p95 of wall time, CPU time and peak memory, and what differs."""
    parser = argparse.ArgumentParser(prog="glia compare", description=compare_main.__doc__)
    add_compare_options(parser)
    database_options(parser)
    args = parser.parse_args(argv)
    by, key = compare_grouping(parser, args.by)

    def body() -> int:
        from . import answers
        from .query import ReadLimits, parse_when

        flt = answers.CompareFilter(
            program=args.program,
            by=answers.CompareBy(by),
            key=key,
            since=parse_when(args.since, "--since") if args.since else None,
            until=parse_when(args.until, "--until") if args.until else None,
        )
        settings = _settings(args)

        async def work(runs: RunQueries) -> dict[str, Any]:
            return await answers.compare(runs.conn, flt)

        with database(settings, migrate=True) as url:
            answer = _read(url, ReadLimits.from_settings(settings), work)
        print(format_compare(answer, args.format))
        return 0

    return _main("glia compare", body)
