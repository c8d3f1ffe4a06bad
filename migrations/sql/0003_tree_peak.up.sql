-- Glia schema, revision 0003: two memory figures, two names.
-- peak_rss_bytes is the largest single process's peak RSS (GNU time's %M); tree_peak_bytes the whole process tree's
-- (a cgroup's charged-memory peak, else a sampled sum), with its method; oom_kills the cgroup's OOM-kill count.
-- Until now `glia run` put the tree's figure in peak_rss_bytes and its child's wait4 figure in the attribute bag
-- (glia.memory.child_max_rss_bytes): existing command rows move to the new meaning, so old and new rows compare.

ALTER TABLE spans
    ADD COLUMN tree_peak_bytes  bigint,
    ADD COLUMN tree_peak_method text,
    ADD COLUMN oom_kills        integer;

-- Only a bag value that is a whole number in bigint's range moves (the bag holds whatever a client sent).
-- That wait4 figure came from a child forked from glia's Python process: its method says so (wait4-python).
UPDATE spans
SET tree_peak_bytes  = peak_rss_bytes,
    tree_peak_method = CASE peak_rss_method WHEN 'wait4' THEN 'wait4-python' ELSE peak_rss_method END,
    peak_rss_bytes   = (attributes ->> 'glia.memory.child_max_rss_bytes')::bigint,
    peak_rss_method  = 'wait4-python',
    attributes       = attributes - 'glia.memory.child_max_rss_bytes'
WHERE run_kind = 'command'
  AND jsonb_typeof(attributes -> 'glia.memory.child_max_rss_bytes') = 'number'
  AND (attributes ->> 'glia.memory.child_max_rss_bytes') ~ '^[0-9]{1,18}$';

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
    s.service_instance_id,
    s.attributes,
    s.resource
FROM spans s
WHERE s.parent_span_id IS NULL OR s.run_kind IS NOT NULL;
