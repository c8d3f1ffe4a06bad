-- What receiver/store.py runs: the staging tables, the idempotent upserts and the partitions rows need.

-- name: create_stage_tables
-- Per-connection staging tables: rows are COPYed here, then upserted into the partitioned tables. Run as each
-- pooled connection opens; with no schema yet there is nothing to stage into (the start-up check says so).
DO $$
BEGIN
    IF to_regclass('spans') IS NOT NULL AND to_regclass('metric_points') IS NOT NULL THEN
        CREATE TEMP TABLE IF NOT EXISTS spans_stage (LIKE spans INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE IF NOT EXISTS metric_points_stage (LIKE metric_points INCLUDING DEFAULTS)
            ON COMMIT DELETE ROWS;
    END IF;
    IF to_regclass('log_records') IS NOT NULL THEN
        CREATE TEMP TABLE IF NOT EXISTS log_records_stage (LIKE log_records INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
    END IF;
END
$$;

-- name: create_row_type
-- The type of one flattened row of {table} (flatten's columns, in its order): a temp table with no rows, made as each
-- pooled connection opens, whose array type insert_rows takes.
DO $$
BEGIN
    IF to_regclass('{table}') IS NOT NULL THEN
        CREATE TEMP TABLE IF NOT EXISTS {table}_rows AS SELECT {columns} FROM {table} WITH NO DATA;
    END IF;
END
$$;

-- name: insert_rows
-- The rows of a shared transaction of small requests, as one array parameter: one statement, one round trip.
-- {on_conflict} is the table's own: insert_spans' merge for spans (live runs), DO NOTHING for the others.
INSERT INTO {table} ({columns}) SELECT * FROM unnest($1::{table}_rows[]) {on_conflict};

-- name: insert_spans
-- One row per span, however its records arrive (docs/attributes.md, "Live runs"): a run's start record or heartbeat
-- is stored as a row without an end, a later heartbeat replaces it, and the final span replaces either (a lost run
-- comes back to ok or error); a final row is never changed, so a resent batch adds nothing, a start record arriving
-- after its end is dropped, and stock spans are stored once as before. A heartbeat made after the sweep found the
-- run lost brings it back to running. flatten.in_key_order gives each statement its rows in key order, one per key.
-- Every column but the key and lost_at is in the SET list (tests/unit/test_live_runs.py checks it).
INSERT INTO spans SELECT * FROM spans_stage
ON CONFLICT (trace_id, span_id, start_time) DO UPDATE SET
    parent_span_id = EXCLUDED.parent_span_id, trace_state = EXCLUDED.trace_state, name = EXCLUDED.name,
    kind = EXCLUDED.kind, status_code = EXCLUDED.status_code, status_message = EXCLUDED.status_message,
    end_time = EXCLUDED.end_time, start_time_unix_nano = EXCLUDED.start_time_unix_nano,
    duration_ns = EXCLUDED.duration_ns, scope_name = EXCLUDED.scope_name, scope_version = EXCLUDED.scope_version,
    service_name = EXCLUDED.service_name, service_instance_id = EXCLUDED.service_instance_id,
    host_name = EXCLUDED.host_name, host_arch = EXCLUDED.host_arch, os_type = EXCLUDED.os_type,
    os_description = EXCLUDED.os_description, process_pid = EXCLUDED.process_pid,
    process_parent_pid = EXCLUDED.process_parent_pid, process_executable_name = EXCLUDED.process_executable_name,
    process_executable_path = EXCLUDED.process_executable_path, process_command_args = EXCLUDED.process_command_args,
    process_owner = EXCLUDED.process_owner, process_working_directory = EXCLUDED.process_working_directory,
    process_runtime_name = EXCLUDED.process_runtime_name, process_runtime_version = EXCLUDED.process_runtime_version,
    script_path = EXCLUDED.script_path, script_sha256 = EXCLUDED.script_sha256, run_kind = EXCLUDED.run_kind,
    exit_code = EXCLUDED.exit_code, cpu_user_seconds = EXCLUDED.cpu_user_seconds,
    cpu_system_seconds = EXCLUDED.cpu_system_seconds, cpu_percent = EXCLUDED.cpu_percent,
    peak_rss_bytes = EXCLUDED.peak_rss_bytes, peak_rss_method = EXCLUDED.peak_rss_method,
    tree_peak_bytes = EXCLUDED.tree_peak_bytes, tree_peak_method = EXCLUDED.tree_peak_method,
    oom_kills = EXCLUDED.oom_kills, io_read_bytes = EXCLUDED.io_read_bytes, io_write_bytes = EXCLUDED.io_write_bytes,
    workflow_engine = EXCLUDED.workflow_engine, workflow_run_id = EXCLUDED.workflow_run_id,
    workflow_name = EXCLUDED.workflow_name, task_name = EXCLUDED.task_name, task_attempt = EXCLUDED.task_attempt,
    scheduler = EXCLUDED.scheduler, scheduler_job_id = EXCLUDED.scheduler_job_id,
    requested_memory_bytes = EXCLUDED.requested_memory_bytes, requested_cpus = EXCLUDED.requested_cpus,
    requested_seconds = EXCLUDED.requested_seconds, heartbeat_at = EXCLUDED.heartbeat_at,
    last_rss_bytes = EXCLUDED.last_rss_bytes, attributes = EXCLUDED.attributes, resource = EXCLUDED.resource,
    events = EXCLUDED.events, links = EXCLUDED.links, dropped_attributes_count = EXCLUDED.dropped_attributes_count,
    received_at = EXCLUDED.received_at,
    lost_at = CASE WHEN EXCLUDED.end_time IS NULL AND EXCLUDED.heartbeat_at <= spans.lost_at THEN spans.lost_at END
WHERE spans.end_time IS NULL
  AND (EXCLUDED.end_time IS NOT NULL OR spans.heartbeat_at IS NULL OR EXCLUDED.heartbeat_at > spans.heartbeat_at);

-- name: insert_metric_points
INSERT INTO metric_points SELECT * FROM metric_points_stage ON CONFLICT DO NOTHING;

-- name: insert_log_records
INSERT INTO log_records SELECT * FROM log_records_stage ON CONFLICT DO NOTHING;

-- name: clear_spans_stage
-- Between the chunks of one request (the commit clears the staging table after the last one).
TRUNCATE spans_stage;

-- name: clear_metric_points_stage
TRUNCATE metric_points_stage;

-- name: clear_log_records_stage
TRUNCATE log_records_stage;

-- name: ensure_partition
-- The month a request's rows need, made before its transaction (or again inside it, after a retention drop).
SELECT glia_ensure_partition($1::regclass, $2::timestamptz);

-- name: ensure_partitions_ahead
-- This month's and the next months' partitions: at start-up and once a day (receiver/maintenance.py).
SELECT glia_ensure_partitions_ahead($1::integer);
