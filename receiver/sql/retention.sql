-- What receiver/retention.py runs: for `glia retention` and the receiver's daily check (receiver/maintenance.py).

-- name: expired_partitions
-- Whole partitions whose range ends at or before the cut-off: none of their rows can be newer than it.
SELECT parent, partition, range_start, range_end
FROM glia_partitions()
WHERE range_end <= $1
ORDER BY range_start, parent;

-- name: quote_partition
-- The partition's name as an identifier, quoted where it needs to be (for lock_partition).
SELECT $1::regclass::text;

-- name: set_lock_timeout
-- In each partition's transaction: wait at most this long for the partition's lock and for the drop's lock on the
-- parent table. Ingest queues behind a waiting ACCESS EXCLUSIVE request, so the wait is what bounds its stall.
-- No statement timeout: archiving a large partition may take longer than the receiver's.
SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', '0', true);

-- name: lock_partition
-- Blocks writes into the partition (a late span for its month) from before the copy until the drop commits.
-- {partition} is quote_partition's answer for a name read from glia_partitions().
LOCK TABLE {partition} IN SHARE MODE;

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
-- `glia retention --older-than` (retention.apply) takes it too.
SELECT pg_try_advisory_lock(hashtext('glia_retention'));

-- name: unlock
SELECT pg_advisory_unlock(hashtext('glia_retention'));
