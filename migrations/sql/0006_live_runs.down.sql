-- Undoes revision 0006: the runs view as revision 0004 made it, the live-run columns dropped, and every span an
-- end again. Runs still without an end (running or lost) are deleted: the older schema cannot hold them.

DROP VIEW runs;
DROP INDEX spans_unfinished_idx;
DELETE FROM spans WHERE end_time IS NULL OR duration_ns IS NULL;
ALTER TABLE spans
    ALTER COLUMN end_time SET NOT NULL,
    ALTER COLUMN duration_ns SET NOT NULL,
    DROP COLUMN heartbeat_at,
    DROP COLUMN lost_at,
    DROP COLUMN last_rss_bytes;

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
