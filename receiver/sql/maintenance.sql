-- What receiver/maintenance.py runs besides partition upkeep and retention: the sweep that finds lost runs.

-- name: try_sweep_lock
-- One receiver at a time sweeps: the others, finding the lock taken, skip this round. Held to the transaction's end.
SELECT pg_try_advisory_xact_lock(hashtext('glia_lost_sweep'));

-- name: mark_lost
-- Runs without an end whose last start record or heartbeat is older than $1 seconds are lost (docs/querying.md,
-- "Statuses"): their row keeps the last figures a heartbeat brought. Rows are locked in key order, as ingest writes
-- them, and a row ingest is writing right now is skipped (its record is news of the run anyway): the sweep never
-- waits for ingest nor deadlocks with it.
WITH due AS (
    SELECT trace_id, span_id, start_time
    FROM spans
    WHERE end_time IS NULL AND lost_at IS NULL AND heartbeat_at < now() - make_interval(secs => $1::float8)
    ORDER BY trace_id, span_id, start_time
    FOR UPDATE SKIP LOCKED
)
UPDATE spans s
SET lost_at = now()
FROM due d
WHERE s.trace_id = d.trace_id AND s.span_id = d.span_id AND s.start_time = d.start_time
  AND s.end_time IS NULL
RETURNING s.trace_id, s.span_id;
