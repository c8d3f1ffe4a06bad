"""Snakemake logger plugin for Glia: `snakemake --logger glia ...` records the workflow and every job.

Snakemake finds it by its module name (`snakemake_logger_plugin_*`, a top-level package installed with glia). The
workflow is one span (`glia.run.kind = "workflow"`); each job attempt is its child run, and every `shell:` job runs
under `glia run` (see `_shell`), so its row has the exact peak memory, CPU, I/O and exit code. Settings are the
client's: the `OTEL_EXPORTER_OTLP_*` and `GLIA_*` variables; with the endpoint down everything goes to the spool.
"""

from ._handler import LogHandler

__all__ = ["LogHandler"]
