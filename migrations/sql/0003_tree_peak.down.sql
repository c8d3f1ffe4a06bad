-- Undoes revision 0003: the tree's figure back in peak_rss_bytes, the largest process's in the bag.

UPDATE spans
SET attributes      = attributes || jsonb_build_object('glia.memory.child_max_rss_bytes', peak_rss_bytes),
    peak_rss_bytes  = tree_peak_bytes,
    peak_rss_method = CASE WHEN tree_peak_method IN ('wait4', 'wait4-python') THEN 'wait4' ELSE tree_peak_method END
WHERE run_kind = 'command' AND tree_peak_bytes IS NOT NULL AND peak_rss_bytes IS NOT NULL;

UPDATE spans
SET attributes = attributes || jsonb_build_object('glia.memory.oom_kills', oom_kills)
WHERE oom_kills IS NOT NULL;

DROP VIEW runs;
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
    s.io_read_bytes,
    s.io_write_bytes,
    s.service_instance_id,
    s.attributes,
    s.resource
FROM spans s
WHERE s.parent_span_id IS NULL OR s.run_kind IS NOT NULL;

ALTER TABLE spans
    DROP COLUMN tree_peak_bytes,
    DROP COLUMN tree_peak_method,
    DROP COLUMN oom_kills;
