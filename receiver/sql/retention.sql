-- Retention (receiver/retention.py, `glia retention`).

-- name: expired_partitions
-- Whole partitions whose range ends at or before the cut-off: none of their rows can be newer than it.
SELECT parent, partition, range_start, range_end
FROM glia_partitions()
WHERE range_end <= $1
ORDER BY range_start, parent;

-- name: drop_partition
SELECT glia_drop_partition($1::regclass);

-- name: get_policy
SELECT keep_days, archive_dir, updated_at, last_applied_at FROM retention_policy;

-- name: set_policy
INSERT INTO retention_policy (keep_days, archive_dir) VALUES ($1, $2)
ON CONFLICT (singleton) DO UPDATE SET keep_days = EXCLUDED.keep_days, archive_dir = EXCLUDED.archive_dir,
                                      updated_at = now();

-- name: clear_policy
DELETE FROM retention_policy;

-- name: policy_applied
UPDATE retention_policy SET last_applied_at = now();

-- name: try_lock
-- One receiver at a time applies the policy (several may run behind a load balancer). A session lock, not a
-- transaction's: each partition is dropped in its own short transaction, so ingest is blocked only briefly.
SELECT pg_try_advisory_lock(hashtext('glia_retention'));

-- name: unlock
SELECT pg_advisory_unlock(hashtext('glia_retention'));

-- name: no_statement_timeout
-- Archiving a large partition may take longer than the receiver's statement timeout.
SET statement_timeout = 0;
