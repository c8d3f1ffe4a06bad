-- What receiver/query.py runs for the query API and `glia runs` / `glia show`, each under a `-- name:` header.

-- Read paths are bounded (docs/querying.md, "Bounded answers"): every text value is sent at most one character
-- past its limit ($V below), so that receiver/query.py sees which values were longer, cuts them and marks them; a
-- JSONB bag (attributes, resource) keeps its entries, in key order, only while their size stays under a budget
-- ($B) and reports how many it left out (`*_dropped`). Keys and string values are cut like text; any other value
-- whose JSON text is longer than the limit is sent as the start of that text.

-- name: read_settings
-- Every read runs in a read-only transaction with these, so a read can never hold a connection longer than its
-- own timeout. force_custom_plan: list_runs switches filters off with NULL parameters, and a generic plan would
-- keep the index of none of them.
SELECT set_config('statement_timeout', $1, true), set_config('plan_cache_mode', 'force_custom_plan', true);

-- name: read_settings_check_client
-- The same, plus (PostgreSQL 14 and newer) a periodic check that the client is still there, so a read whose
-- client died without cancelling it (kill -9, a lost network) stops within a second.
SELECT set_config('statement_timeout', $1, true), set_config('plan_cache_mode', 'force_custom_plan', true),
       set_config('client_connection_check_interval', '1000', true);

-- name: list_runs
-- A filter whose parameter is NULL is off; force_custom_plan (read_settings) lets the planner fold the NULL tests
-- away and use the index of the filters that are set.
-- {sort_expr}, {direction}, {cmp} and {cursor_type} come from the fixed table of sort keys in receiver/query.py.
-- $14 is the value limit ($V), $15 the attributes budget ($B); the bag is cut after the LIMIT, for the page only.
-- $16 the workflow filter: the workflow_run_ids to match (the id given, and the workflow_run_id of the run whose
-- id it is: workflow_of_run), $17 that run's own id (a workflow span that carries no workflow_run_id itself).
-- $18 the run name. A status of running or lost is also asked as `ended_at IS NULL`, which the partial index of
-- unfinished rows answers (the status itself is computed by the view).
SELECT r.run_id, r.trace_id, r.parent_run_id, r.run_name, r.program_name, r.run_kind, r.user_name, r.host_name,
       r.status, r.status_message, r.exit_code, r.started_at, r.ended_at, r.wall_seconds, r.elapsed_seconds,
       r.last_heartbeat_at, r.lost_at, r.last_rss_bytes, r.cpu_seconds, r.cpu_percent, r.peak_rss_bytes, r.peak_rss_method, r.tree_peak_bytes, r.tree_peak_method, r.oom_kills,
       r.io_read_bytes, r.io_write_bytes, r.workflow_engine, r.workflow_run_id, r.workflow_name, r.task_name,
       r.task_attempt, r.scheduler, r.scheduler_job_id, r.requested_memory_bytes, r.requested_cpus,
       r.requested_seconds, r.script_path, r.script_sha256, bag.attributes, bag.attributes_dropped, r.sort_value
FROM (
    SELECT run_id, trace_id, parent_run_id, left(run_name, $14 + 1) AS run_name,
           left(program_name, $14 + 1) AS program_name, left(run_kind, $14 + 1) AS run_kind,
           left(user_name, $14 + 1) AS user_name, left(host_name, $14 + 1) AS host_name, status,
           left(status_message, $14 + 1) AS status_message, exit_code, started_at, ended_at, wall_seconds,
           elapsed_seconds, last_heartbeat_at, lost_at, last_rss_bytes, cpu_seconds, cpu_percent, peak_rss_bytes, left(peak_rss_method, $14 + 1) AS peak_rss_method,
           tree_peak_bytes, left(tree_peak_method, $14 + 1) AS tree_peak_method, oom_kills, io_read_bytes,
           io_write_bytes, left(workflow_engine, $14 + 1) AS workflow_engine,
           left(workflow_run_id, $14 + 1) AS workflow_run_id, left(workflow_name, $14 + 1) AS workflow_name,
           left(task_name, $14 + 1) AS task_name, task_attempt, left(scheduler, $14 + 1) AS scheduler,
           left(scheduler_job_id, $14 + 1) AS scheduler_job_id, requested_memory_bytes, requested_cpus,
           requested_seconds, left(script_path, $14 + 1) AS script_path,
           left(script_sha256, $14 + 1) AS script_sha256, attributes, {sort_expr} AS sort_value
    FROM runs
    WHERE ($1::text IS NULL OR program_name = $1)
      AND ($2::text IS NULL OR user_name = $2)
      AND ($3::text IS NULL OR host_name = $3)
      AND ($4::text IS NULL OR status = $4)
      AND ($4::text IS NULL OR $4::text NOT IN ('running', 'lost') OR ended_at IS NULL)
      AND ($18::text IS NULL OR run_name = $18)
      AND ($5::integer IS NULL OR exit_code = $5)
      AND ($6::timestamptz IS NULL OR started_at >= $6)
      AND ($7::timestamptz IS NULL OR started_at < $7)
      AND ($8::jsonb IS NULL OR attributes @> $8)
      AND ($9::text IS NULL OR script_sha256 = $9)
      AND ($16::text[] IS NULL OR workflow_run_id = ANY ($16::text[]) OR run_id = $17::text)
      -- the keyset: after the last row of the previous page (the first test lets an index bound the scan)
      AND ($10::{cursor_type} IS NULL OR {sort_expr} {cmp}= $10
                                        AND ({sort_expr}, trace_id, run_id) {cmp} ($10, $11::text, $12::text))
    ORDER BY {sort_expr} {direction}, trace_id {direction}, run_id {direction}
    LIMIT $13
) r
CROSS JOIN LATERAL (
    SELECT coalesce(jsonb_object_agg(k, v) FILTER (WHERE before < $15), '{{}}') AS attributes,
           count(*) FILTER (WHERE before >= $15) AS attributes_dropped
    FROM (
        SELECT k, v, sum(octet_length(k) + octet_length(v::text)) OVER (ORDER BY k ROWS UNBOUNDED PRECEDING)
                     - octet_length(k) - octet_length(v::text) AS before
        FROM (
            SELECT left(key, $14 + 1) AS k,
                   CASE WHEN jsonb_typeof(value) = 'string' THEN to_jsonb(left(value #>> '{{}}', $14 + 1))
                        WHEN octet_length(value::text) > $14 THEN to_jsonb(left(value::text, $14 + 1))
                        ELSE value END AS v
            FROM jsonb_each(r.attributes)
        ) cut
    ) sized
) bag
ORDER BY r.sort_value {direction}, r.trace_id {direction}, r.run_id {direction};

-- name: get_run
-- The run with this span id ($1), its newest copy if it was stored more than once. $2 is the value limit ($V),
-- $3 the budget ($B) of each bag and of the command line. `found` is materialized so that the span id index finds
-- the copies: with the LIMIT in the same query the planner would walk the start time index of every partition.
WITH found AS MATERIALIZED (
    SELECT * FROM runs WHERE run_id = $1
)
SELECT r.run_id, r.trace_id, r.parent_run_id, left(r.run_name, $2 + 1) AS run_name,
       left(r.program_name, $2 + 1) AS program_name, left(r.run_kind, $2 + 1) AS run_kind,
       left(r.user_name, $2 + 1) AS user_name, left(r.host_name, $2 + 1) AS host_name,
       left(r.os_type, $2 + 1) AS os_type, left(r.runtime, $2 + 1) AS runtime,
       left(r.script_path, $2 + 1) AS script_path, left(r.script_sha256, $2 + 1) AS script_sha256,
       cmd.command_args, cmd.command_args_dropped, left(r.working_directory, $2 + 1) AS working_directory,
       r.status, left(r.status_message, $2 + 1) AS status_message, r.exit_code, r.started_at, r.ended_at,
       r.wall_seconds, r.elapsed_seconds, r.last_heartbeat_at, r.lost_at, r.last_rss_bytes, r.cpu_user_seconds, r.cpu_system_seconds, r.cpu_seconds, r.cpu_percent, r.peak_rss_bytes,
       r.max_rss_kb, left(r.peak_rss_method, $2 + 1) AS peak_rss_method, r.tree_peak_bytes,
       left(r.tree_peak_method, $2 + 1) AS tree_peak_method, r.oom_kills, r.io_read_bytes, r.io_write_bytes,
       left(r.workflow_engine, $2 + 1) AS workflow_engine, left(r.workflow_run_id, $2 + 1) AS workflow_run_id,
       left(r.workflow_name, $2 + 1) AS workflow_name, left(r.task_name, $2 + 1) AS task_name, r.task_attempt,
       left(r.scheduler, $2 + 1) AS scheduler, left(r.scheduler_job_id, $2 + 1) AS scheduler_job_id,
       r.requested_memory_bytes, r.requested_cpus, r.requested_seconds,
       left(r.service_instance_id, $2 + 1) AS service_instance_id,
       attrs.attributes, attrs.attributes_dropped, res.resource, res.resource_dropped
FROM (SELECT * FROM found ORDER BY started_at DESC LIMIT 1) r
CROSS JOIN LATERAL (
    SELECT array_agg(a ORDER BY i) FILTER (WHERE before < $3) AS command_args,
           count(*) FILTER (WHERE before >= $3) AS command_args_dropped
    FROM (
        SELECT i, a, sum(coalesce(octet_length(a), 0)) OVER (ORDER BY i) - coalesce(octet_length(a), 0) AS before
        FROM (SELECT i, left(a, $2 + 1) AS a FROM unnest(r.command_args) WITH ORDINALITY AS u (a, i)) cut
    ) sized
) cmd
CROSS JOIN LATERAL (
    SELECT coalesce(jsonb_object_agg(k, v) FILTER (WHERE before < $3), '{}') AS attributes,
           count(*) FILTER (WHERE before >= $3) AS attributes_dropped
    FROM (
        SELECT k, v, sum(octet_length(k) + octet_length(v::text)) OVER (ORDER BY k ROWS UNBOUNDED PRECEDING)
                     - octet_length(k) - octet_length(v::text) AS before
        FROM (
            SELECT left(key, $2 + 1) AS k,
                   CASE WHEN jsonb_typeof(value) = 'string' THEN to_jsonb(left(value #>> '{}', $2 + 1))
                        WHEN octet_length(value::text) > $2 THEN to_jsonb(left(value::text, $2 + 1))
                        ELSE value END AS v
            FROM jsonb_each(r.attributes)
        ) cut
    ) sized
) attrs
CROSS JOIN LATERAL (
    SELECT coalesce(jsonb_object_agg(k, v) FILTER (WHERE before < $3), '{}') AS resource,
           count(*) FILTER (WHERE before >= $3) AS resource_dropped
    FROM (
        SELECT k, v, sum(octet_length(k) + octet_length(v::text)) OVER (ORDER BY k ROWS UNBOUNDED PRECEDING)
                     - octet_length(k) - octet_length(v::text) AS before
        FROM (
            SELECT left(key, $2 + 1) AS k,
                   CASE WHEN jsonb_typeof(value) = 'string' THEN to_jsonb(left(value #>> '{}', $2 + 1))
                        WHEN octet_length(value::text) > $2 THEN to_jsonb(left(value::text, $2 + 1))
                        ELSE value END AS v
            FROM jsonb_each(r.resource)
        ) cut
    ) sized
) res;

-- name: run_children
-- The spans below the run ($2) in its trace ($1), depth first with siblings by start time, each with its depth
-- (1 = a direct child), at most $3 of them; $4 is the value limit ($V), $5 the attributes budget ($B).
-- Span ids can repeat (the primary key has the start time) and parent links can loop, and PostgreSQL 13 has no
-- CYCLE clause: `reach` holds each (span, parent, depth) once (UNION, not UNION ALL), so a duplicate or a loop
-- costs one row per edge and level, never one per path. Each span is then shown once: under the parent through
-- which it is nearest the run, in its earliest copy there. Those choices form a tree (a span's chosen parent is
-- exactly one level nearer the run), which `tree` walks to give each span its depth-first position.
WITH RECURSIVE reach AS (
    SELECT s.span_id, s.parent_span_id, 1 AS depth
    FROM spans s
    WHERE s.trace_id = $1 AND s.parent_span_id = $2 AND s.span_id <> $2
    UNION
    SELECT s.span_id, s.parent_span_id, r.depth + 1
    FROM reach r
    JOIN spans s ON s.trace_id = $1 AND s.parent_span_id = r.span_id
    WHERE r.depth < 50 AND s.span_id <> $2
), chosen AS (
    SELECT DISTINCT ON (r.span_id) r.span_id, r.parent_span_id, r.depth, s.start_time
    FROM reach r
    JOIN spans s ON s.trace_id = $1 AND s.span_id = r.span_id AND s.parent_span_id = r.parent_span_id
    ORDER BY r.span_id, r.depth, s.start_time
), ranked AS (
    SELECT c.*, row_number() OVER (PARTITION BY c.parent_span_id ORDER BY c.start_time, c.span_id) AS rank
    FROM chosen c
), tree AS (
    SELECT k.span_id, k.start_time, k.depth, ARRAY[k.rank] AS path
    FROM ranked k
    WHERE k.depth = 1
    UNION ALL
    SELECT k.span_id, k.start_time, k.depth, t.path || k.rank
    FROM tree t
    JOIN ranked k ON k.parent_span_id = t.span_id AND k.depth = t.depth + 1
)
SELECT s.span_id, s.parent_span_id, t.depth, left(s.name, $4 + 1) AS name, s.kind,
       left(s.run_kind, $4 + 1) AS run_kind, left(s.service_name, $4 + 1) AS program_name,
       left(s.task_name, $4 + 1) AS task_name, s.task_attempt, s.exit_code,
       CASE WHEN s.end_time IS NULL AND s.lost_at IS NOT NULL THEN 'lost' WHEN s.end_time IS NULL THEN 'running'
            WHEN s.status_code = 2 OR s.exit_code <> 0 THEN 'error' ELSE 'ok' END AS status,
       left(s.status_message, $4 + 1) AS status_message, s.start_time AS started_at, s.end_time AS ended_at,
       s.duration_ns / 1e9::double precision AS wall_seconds, s.peak_rss_bytes, bag.attributes,
       bag.attributes_dropped
FROM (SELECT * FROM tree ORDER BY path LIMIT $3) t
JOIN spans s ON s.trace_id = $1 AND s.span_id = t.span_id AND s.start_time = t.start_time
CROSS JOIN LATERAL (
    SELECT coalesce(jsonb_object_agg(k, v) FILTER (WHERE before < $5), '{}') AS attributes,
           count(*) FILTER (WHERE before >= $5) AS attributes_dropped
    FROM (
        SELECT k, v, sum(octet_length(k) + octet_length(v::text)) OVER (ORDER BY k ROWS UNBOUNDED PRECEDING)
                     - octet_length(k) - octet_length(v::text) AS before
        FROM (
            SELECT left(key, $4 + 1) AS k,
                   CASE WHEN jsonb_typeof(value) = 'string' THEN to_jsonb(left(value #>> '{}', $4 + 1))
                        WHEN octet_length(value::text) > $4 THEN to_jsonb(left(value::text, $4 + 1))
                        ELSE value END AS v
            FROM jsonb_each(s.attributes)
        ) cut
    ) sized
) bag
ORDER BY t.path;

-- name: workflow_of_run
-- The workflow_run_id of the run with this span id ($1), for `glia runs --workflow RUN_ID`: a span id can repeat
-- (in other traces), so every distinct one, a few at most.
SELECT DISTINCT workflow_run_id FROM spans WHERE span_id = $1 AND workflow_run_id IS NOT NULL LIMIT 16;

-- name: workflow_tasks
-- The runs of a workflow ($1, its workflow_run_id) other than the run itself ($2), in start order, at most $3:
-- `glia show` of a workflow span lists those that are not below it in its trace (a task sent without its parent,
-- or in a trace of its own). $4 is the value limit ($V).
SELECT run_id, trace_id, parent_run_id, left(run_name, $4 + 1) AS run_name,
       left(program_name, $4 + 1) AS program_name, left(run_kind, $4 + 1) AS run_kind,
       left(task_name, $4 + 1) AS task_name, task_attempt, status, exit_code, started_at, ended_at, wall_seconds,
       peak_rss_bytes
FROM runs
WHERE workflow_run_id = $1 AND run_id <> $2
ORDER BY started_at, trace_id, run_id
LIMIT $3;

-- name: run_metrics
-- The points of the run's process (same service.instance.id) while the run was going, and any point tied to the
-- run's span explicitly (glia.trace_id / glia.span_id or an exemplar), at most $8 of them; a run without an end
-- ($3 NULL: running or lost) takes the points up to now. $6 is the value limit ($V), $7 the budget
-- ($B) of a point's attribute set: a set short enough for both is sent as it is (the gate keeps the cutting from
-- running at all), any other is cut like the bags above.
SELECT left(m.metric_name, $6 + 1) AS metric_name, left(m.unit, $6 + 1) AS unit, m.metric_type,
       coalesce(bag.attributes, m.attributes) AS attributes, coalesce(bag.attributes_dropped, 0) AS attributes_dropped,
       m.time, m.value
FROM metric_points m
LEFT JOIN LATERAL (
    SELECT coalesce(jsonb_object_agg(k, v) FILTER (WHERE before < $7), '{}') AS attributes,
           count(*) FILTER (WHERE before >= $7) AS attributes_dropped
    FROM (
        SELECT k, v, sum(octet_length(k) + octet_length(v::text)) OVER (ORDER BY k ROWS UNBOUNDED PRECEDING)
                     - octet_length(k) - octet_length(v::text) AS before
        FROM (
            SELECT left(key, $6 + 1) AS k,
                   CASE WHEN jsonb_typeof(value) = 'string' THEN to_jsonb(left(value #>> '{}', $6 + 1))
                        WHEN octet_length(value::text) > $6 THEN to_jsonb(left(value::text, $6 + 1))
                        ELSE value END AS v
            FROM jsonb_each(m.attributes)
            WHERE octet_length(m.attributes::text) > least($6, $7)
        ) cut
    ) sized
    HAVING count(*) > 0
) bag ON true
WHERE (m.service_instance_id = $1 AND m.time >= $2 AND m.time <= coalesce($3::timestamptz, now()))
   OR (m.trace_id = $4 AND m.span_id = $5)
ORDER BY m.metric_name, m.attributes::text, m.time
LIMIT $8;
