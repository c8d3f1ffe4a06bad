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

-- name: insert_spans
INSERT INTO spans SELECT * FROM spans_stage ON CONFLICT DO NOTHING;

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
