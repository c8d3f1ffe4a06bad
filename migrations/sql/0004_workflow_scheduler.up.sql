-- Glia schema, revision 0004: workflow engines and batch schedulers in typed columns.
-- A run of a workflow engine (Nextflow, Snakemake) carries its workflow and task; a run under a scheduler (Slurm,
-- PBS, LSF, SGE, Kubernetes, CI) carries the scheduler, its job id, and what the job asked for (docs/attributes.md).
-- New columns only: rows stored before this revision keep these attributes in their JSONB bags, nothing moves.

ALTER TABLE spans
    ADD COLUMN workflow_engine        text,
    ADD COLUMN workflow_run_id        text,
    ADD COLUMN workflow_name          text,
    ADD COLUMN task_name              text,
    ADD COLUMN task_attempt           integer,
    ADD COLUMN scheduler              text,
    ADD COLUMN scheduler_job_id       text,
    ADD COLUMN requested_memory_bytes bigint,
    ADD COLUMN requested_cpus         double precision,
    ADD COLUMN requested_seconds      double precision;

-- A workflow's tasks by its engine's id (`glia runs --workflow ID`), whether or not the workflow span arrived.
-- Partial: most spans belong to no workflow, and the rows stored before this revision hold none.
CREATE INDEX spans_workflow_run_idx ON spans (workflow_run_id, start_time DESC) WHERE workflow_run_id IS NOT NULL;

DROP VIEW runs;
-- Runs: every span glia tracked and every root span, with the names users think in.
CREATE VIEW runs AS
SELECT
    s.span_id                                        AS run_id,
    s.trace_id,
    s.parent_span_id                                 AS parent_run_id,
    s.name                                           AS run_name,
    s.service_name                                   AS program_name,
    s.run_kind,
    s.process_owner                                  AS user_name,
    s.host_name,
    s.os_type,
    s.process_runtime_name || coalesce(' ' || s.process_runtime_version, '') AS runtime,
    s.script_path,
    s.script_sha256,
    s.process_command_args                           AS command_args,
    s.process_working_directory                      AS working_directory,
    CASE s.status_code WHEN 2 THEN 'error' WHEN 1 THEN 'ok' ELSE 'unset' END AS status,
    s.status_message,
    s.exit_code,
    s.start_time                                     AS started_at,
    s.end_time                                       AS ended_at,
    s.duration_ns / 1e9::double precision            AS wall_seconds,
    s.cpu_user_seconds,
    s.cpu_system_seconds,
    s.cpu_user_seconds + s.cpu_system_seconds        AS cpu_seconds,
    s.cpu_percent,
    s.peak_rss_bytes,
    s.peak_rss_bytes / 1024                          AS max_rss_kb,
    s.peak_rss_method,
    s.tree_peak_bytes,
    s.tree_peak_method,
    s.oom_kills,
    s.io_read_bytes,
    s.io_write_bytes,
    s.workflow_engine,
    s.workflow_run_id,
    s.workflow_name,
    s.task_name,
    s.task_attempt,
    s.scheduler,
    s.scheduler_job_id,
    s.requested_memory_bytes,
    s.requested_cpus,
    s.requested_seconds,
    s.service_instance_id,
    s.attributes,
    s.resource
FROM spans s
WHERE s.parent_span_id IS NULL OR s.run_kind IS NOT NULL;
