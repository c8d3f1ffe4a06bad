-- The queries of receiver/answers.py: `glia suggest` and `glia compare`, /api/suggest and /api/compare.
--
-- A successful run is one whose status is ok (or unset, the name of ok in the runs view before the live-runs
-- statuses) and whose exit code is 0 or none: a span status ERROR, a non-zero exit, and a run still running or lost
-- are not. Workflow spans are left out (their figures are the engine's, not a job's).

-- name: suggest
-- Per program (for a workflow's task: its process or rule), over the runs started in [$4, $5): the figures the
-- recommendation rests on. $1 program, $2 task name (the engine's label, or its part before " (", so `align`
-- finds `align (S3)`), $3 workflow name; a NULL filter is off. $6 the most groups to return (one more tells that
-- there were more). Memory is the tree's peak where recorded (what a scheduler's limit enforces), else the largest
-- process's. `oom_*`: runs the OOM killer ended (oom_kills > 0, whatever their status; exit 137 alone is not one),
-- and the most memory such a run had: its request, else its peak.
WITH picked AS (
    SELECT program_name, status, exit_code, wall_seconds, cpu_seconds,
           coalesce(cpu_percent, 100 * cpu_seconds / nullif(wall_seconds, 0)) AS cpu_percent,
           coalesce(tree_peak_bytes, peak_rss_bytes)::float8 AS memory, tree_peak_bytes IS NOT NULL AS tree_measured,
           oom_kills, requested_memory_bytes, requested_cpus, requested_seconds, workflow_engine,
           status IN ('ok', 'unset') AND coalesce(exit_code, 0) = 0 AS succeeded
    FROM runs
    WHERE started_at >= $4 AND ($5::timestamptz IS NULL OR started_at < $5)
      AND program_name IS NOT NULL AND run_kind IS DISTINCT FROM 'workflow'
      AND status NOT IN ('running', 'lost')
      AND ($1::text IS NULL OR program_name = $1)
      AND ($2::text IS NULL OR task_name = $2 OR left(task_name, length($2) + 2) = $2 || ' (')
      AND ($3::text IS NULL OR workflow_name = $3)
)
SELECT program_name,
       count(*) FILTER (WHERE succeeded) AS runs,
       count(memory) FILTER (WHERE succeeded) AS memory_runs,
       count(*) FILTER (WHERE succeeded AND tree_measured) AS tree_runs,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY memory) FILTER (WHERE succeeded) AS memory_p95,
       max(memory) FILTER (WHERE succeeded) AS memory_max,
       count(wall_seconds) FILTER (WHERE succeeded) AS wall_runs,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY wall_seconds) FILTER (WHERE succeeded) AS wall_p95,
       max(wall_seconds) FILTER (WHERE succeeded) AS wall_max,
       count(cpu_percent) FILTER (WHERE succeeded) AS cpu_runs,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY cpu_percent) FILTER (WHERE succeeded) AS cpu_percent_p95,
       count(*) FILTER (WHERE oom_kills > 0) AS oom_runs,
       max(coalesce(requested_memory_bytes::float8, memory)) FILTER (WHERE oom_kills > 0) AS oom_memory,
       -- what was asked for, and how much of it the successful runs used (median of each run's share)
       count(*) FILTER (WHERE succeeded AND requested_memory_bytes > 0 AND memory IS NOT NULL) AS requested_memory_runs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY requested_memory_bytes)
           FILTER (WHERE succeeded AND requested_memory_bytes > 0 AND memory IS NOT NULL) AS requested_memory,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY memory / requested_memory_bytes)
           FILTER (WHERE succeeded AND requested_memory_bytes > 0) AS memory_used,
       count(*) FILTER (WHERE succeeded AND requested_seconds > 0 AND wall_seconds IS NOT NULL) AS requested_time_runs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY requested_seconds)
           FILTER (WHERE succeeded AND requested_seconds > 0 AND wall_seconds IS NOT NULL) AS requested_seconds,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY wall_seconds / requested_seconds)
           FILTER (WHERE succeeded AND requested_seconds > 0) AS time_used,
       count(*) FILTER (WHERE succeeded AND requested_cpus > 0 AND cpu_seconds IS NOT NULL AND wall_seconds > 0)
           AS requested_cpus_runs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY requested_cpus)
           FILTER (WHERE succeeded AND requested_cpus > 0 AND cpu_seconds IS NOT NULL AND wall_seconds > 0)
           AS requested_cpus,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY cpu_seconds / (wall_seconds * requested_cpus))
           FILTER (WHERE succeeded AND requested_cpus > 0 AND wall_seconds > 0) AS cpus_used,
       array_remove(array_agg(DISTINCT workflow_engine), NULL) AS workflow_engines
FROM picked
GROUP BY program_name
HAVING count(*) FILTER (WHERE succeeded) > 0 OR count(*) FILTER (WHERE oom_kills > 0) > 0
ORDER BY program_name
LIMIT $6;

-- name: compare
-- One program's ($1) successful runs started in [$4, $5) (NULL: unbounded), the newest $6 of them, grouped by
-- $2: 'script_sha256', 'host' (host_name) or 'attr' (the custom value of key $3, as text); runs without a value
-- are in no group. Per group: its size, when it was first and last seen, and each figure's values in ascending
-- order, for the medians, percentiles and rank tests of answers.py. `groups` counts every group; only the $7
-- newest (script versions, by first run) or largest (the others) are returned. Memory as in suggest.
WITH picked AS (
    SELECT CASE $2::text WHEN 'script_sha256' THEN script_sha256
                         WHEN 'host' THEN host_name
                         ELSE attributes ->> $3::text END AS grp,
           started_at, wall_seconds, cpu_seconds, coalesce(tree_peak_bytes, peak_rss_bytes)::float8 AS memory
    FROM runs
    WHERE program_name = $1
      AND ($4::timestamptz IS NULL OR started_at >= $4) AND ($5::timestamptz IS NULL OR started_at < $5)
      AND run_kind IS DISTINCT FROM 'workflow'
      AND status IN ('ok', 'unset') AND coalesce(exit_code, 0) = 0
    ORDER BY started_at DESC
    LIMIT $6
), grouped AS (
    SELECT grp, count(*) AS runs, min(started_at) AS first_seen, max(started_at) AS last_seen,
           coalesce(array_agg(wall_seconds ORDER BY wall_seconds) FILTER (WHERE wall_seconds IS NOT NULL), '{}')
               AS wall_seconds,
           coalesce(array_agg(cpu_seconds ORDER BY cpu_seconds) FILTER (WHERE cpu_seconds IS NOT NULL), '{}')
               AS cpu_seconds,
           coalesce(array_agg(memory ORDER BY memory) FILTER (WHERE memory IS NOT NULL), '{}') AS memory_bytes
    FROM picked
    WHERE grp IS NOT NULL
    GROUP BY grp
)
SELECT grp, runs, first_seen, last_seen, wall_seconds, cpu_seconds, memory_bytes, count(*) OVER () AS groups,
       (SELECT count(*) FROM picked) AS picked
FROM grouped
ORDER BY CASE WHEN $2::text = 'script_sha256' THEN extract(epoch FROM first_seen) ELSE runs END DESC, grp
LIMIT $7;
