-- Every query the receiver runs, each under a `-- name:` header; loaded once by receiver/queries.py.

-- name: create_stage_tables
-- Per-connection staging tables: rows are COPYed here, then upserted into the partitioned tables.
CREATE TEMP TABLE IF NOT EXISTS spans_stage (LIKE spans INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS metric_points_stage (LIKE metric_points INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;

-- name: insert_spans
INSERT INTO spans SELECT * FROM spans_stage ON CONFLICT DO NOTHING;

-- name: insert_metric_points
INSERT INTO metric_points SELECT * FROM metric_points_stage ON CONFLICT DO NOTHING;

-- name: clear_spans_stage
-- Between the chunks of one request (the commit clears the staging table after the last one).
TRUNCATE spans_stage;

-- name: clear_metric_points_stage
TRUNCATE metric_points_stage;

-- name: ensure_partition
SELECT glia_ensure_partition($1::regclass, $2::timestamptz);

-- name: ensure_partitions_ahead
SELECT glia_ensure_partitions_ahead($1::integer);

-- name: schema_revision
SELECT version_num FROM alembic_version;
