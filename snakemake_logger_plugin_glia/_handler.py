"""The logger plugin's handler: Snakemake's log records in, one `WorkflowRun` recorded."""

from __future__ import annotations

import time
from collections.abc import Callable
from logging import LogRecord

from snakemake_interface_logger_plugins.base import LogHandlerBase

from glia_otel._log import warn_once

from . import _shell
from ._workflow import WorkflowRun


class LogHandler(LogHandlerBase):
    """`snakemake --logger glia`: the workflow as one span, every job attempt as its child run.

    It writes nothing to the terminal or to files (Snakemake's own output stays as it is), filters nothing (it needs
    every job event whatever `--quiet` says) and never raises into Snakemake: a failure is logged once.
    """

    def __post_init__(self) -> None:
        start_ns = time.time_ns()
        self._run: WorkflowRun | None = None
        self._unhook: Callable[[], None] | None = None
        if getattr(self.common_settings, "dryrun", False):
            return  # a dry run runs nothing: nothing to record
        try:
            from glia_otel import _spool
            from glia_otel._config import load_settings

            settings = load_settings()
            if settings.disabled:
                return
            self._run = WorkflowRun(settings, start_ns)
            _spool.start_background_flush(settings)
        except Exception as e:
            warn_once("snakemake-start", "the Snakemake run is not recorded: %s: %s", type(e).__name__, e)
            self._run = None
            return
        try:
            self._unhook = _shell.install(self._run.plan)
        except Exception as e:
            warn_once("snakemake-hook", "shell jobs are recorded without glia run's measurements: %s", e)

    def emit(self, record: LogRecord) -> None:
        """Take one log record (on Snakemake's logging thread)."""
        if self._run is None:
            return
        try:
            self._run.on_record(record)
        except Exception as e:
            warn_once("snakemake-record", "a Snakemake event was not recorded: %s: %s", type(e).__name__, e)

    def close(self) -> None:
        """At Snakemake's end: the shell hook out, the workflow span sent (or spooled)."""
        try:
            if self._unhook is not None:
                self._unhook()
                self._unhook = None
            if self._run is not None:
                self._run.finish()
        except Exception as e:
            warn_once("snakemake-finish", "the workflow span was not recorded: %s: %s", type(e).__name__, e)
        finally:
            super().close()

    @property
    def writes_to_stream(self) -> bool:
        return False

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True  # Snakemake's default filter would drop job events under --quiet

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False
