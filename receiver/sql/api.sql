-- The query API's and the CLI's SQL (receiver/api.py, receiver/query_cli.py), each under a `-- name:` header.

-- name: list_runs
-- A filter whose parameter is NULL is off. The run is planned with plan_cache_mode = force_custom_plan, so the
-- planner folds the NULL tests away and uses the index of the filters that are set.
-- {sort_expr}, {direction}, {cmp} and {cursor_type} come from the fixed table of sort keys in receiver/api.py.
SELECT run_id, trace_id, parent_run_id, run_name, program_name, run_kind, user_name, host_name, status,
       status_message, exit_code, started_at, ended_at, wall_seconds, cpu_seconds, cpu_percent, peak_rss_bytes,
       peak_rss_method, io_read_bytes, io_write_bytes, script_path, script_sha256, attributes,
       {sort_expr} AS sort_value
FROM runs
WHERE ($1::text IS NULL OR program_name = $1)
  AND ($2::text IS NULL OR user_name = $2)
  AND ($3::text IS NULL OR host_name = $3)
  AND ($4::text IS NULL OR status = $4)
  AND ($5::integer IS NULL OR exit_code = $5)
  AND ($6::timestamptz IS NULL OR started_at >= $6)
  AND ($7::timestamptz IS NULL OR started_at < $7)
  AND ($8::jsonb IS NULL OR attributes @> $8)
  AND ($9::text IS NULL OR script_sha256 = $9)
  -- the keyset: after the last row of the previous page (the first test lets an index bound the scan)
  AND ($10::{cursor_type} IS NULL OR {sort_expr} {cmp}= $10
                                    AND ({sort_expr}, trace_id, run_id) {cmp} ($10, $11::text, $12::text))
ORDER BY {sort_expr} {direction}, trace_id {direction}, run_id {direction}
LIMIT $13;

-- name: get_run
SELECT * FROM runs WHERE run_id = $1 ORDER BY started_at DESC;

-- name: run_children
-- Every span below the run in its trace, depth first, with its depth (1 = a direct child).
WITH RECURSIVE tree AS (
    SELECT s.trace_id, s.span_id, s.parent_span_id, 1 AS depth
    FROM spans s
    WHERE s.trace_id = $1 AND s.parent_span_id = $2
    UNION ALL
    SELECT s.trace_id, s.span_id, s.parent_span_id, t.depth + 1
    FROM spans s
    JOIN tree t ON s.trace_id = t.trace_id AND s.parent_span_id = t.span_id
    WHERE t.depth < 50
)
SELECT s.span_id, s.parent_span_id, t.depth, s.name, s.kind, s.run_kind,
       CASE s.status_code WHEN 2 THEN 'error' WHEN 1 THEN 'ok' ELSE 'unset' END AS status,
       s.status_message, s.start_time AS started_at, s.end_time AS ended_at,
       s.duration_ns / 1e9::double precision AS wall_seconds, s.peak_rss_bytes, s.attributes
FROM tree t
JOIN spans s ON s.trace_id = t.trace_id AND s.span_id = t.span_id
ORDER BY s.start_time, s.span_id
LIMIT 1000;

-- name: run_metrics
-- The points of the run's process (same service.instance.id) while the run was going, and any point tied to the
-- run's span explicitly (glia.trace_id / glia.span_id or an exemplar).
SELECT metric_name, unit, metric_type, attributes, time, value
FROM metric_points
WHERE (service_instance_id = $1 AND time >= $2 AND time <= $3)
   OR (trace_id = $4 AND span_id = $5)
ORDER BY metric_name, attributes::text, time
LIMIT 100000;

-- name: force_custom_plan
SET LOCAL plan_cache_mode = force_custom_plan;
