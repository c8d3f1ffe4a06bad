-- Glia schema, revision 0006: live runs. A run still going is a row with no end (end_time and duration_ns NULL)
-- from its start record on, kept alive by heartbeats, marked lost by the receiver's sweep when they stop, and
-- replaced in place by its final span (docs/attributes.md, "Live runs"). The runs view gains the one list of
-- statuses (running, lost, error, ok) and what a live run has: elapsed time, last heartbeat, last memory.
-- Rows stored before this revision all have an end: nothing moves.

ALTER TABLE spans
    ALTER COLUMN end_time DROP NOT NULL,
    ALTER COLUMN duration_ns DROP NOT NULL,
    ADD COLUMN heartbeat_at   timestamptz,
    ADD COLUMN lost_at        timestamptz,
    ADD COLUMN last_rss_bytes bigint;

-- The runs without an end: what `--status running|lost` lists and what the lost sweep reads (a few rows at most).
CREATE INDEX spans_unfinished_idx ON spans (heartbeat_at) WHERE end_time IS NULL;

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
    -- the one list of statuses (docs/querying.md): the raw span status stays in spans.status_code
    CASE WHEN s.end_time IS NULL AND s.lost_at IS NOT NULL THEN 'lost'
         WHEN s.end_time IS NULL THEN 'running'
         WHEN s.status_code = 2 OR s.exit_code <> 0 THEN 'error'
         ELSE 'ok' END                               AS status,
    s.status_message,
    s.exit_code,
    s.start_time                                     AS started_at,
    s.end_time                                       AS ended_at,
    s.duration_ns / 1e9::double precision            AS wall_seconds,
    -- how long it has run: to its end, to now while running, to its last heartbeat once lost
    CASE WHEN s.end_time IS NOT NULL THEN s.duration_ns / 1e9::double precision
         ELSE extract(epoch FROM CASE WHEN s.lost_at IS NULL THEN now() ELSE coalesce(s.heartbeat_at, s.start_time)
                                 END - s.start_time)::double precision END AS elapsed_seconds,
    s.heartbeat_at                                   AS last_heartbeat_at,
    s.lost_at,
    s.last_rss_bytes,
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
