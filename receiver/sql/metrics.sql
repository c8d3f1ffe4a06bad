-- What receiver/metrics.py runs when /metrics is scraped.

-- name: partitions_ahead
-- For each partitioned table, how many months after the current one already have their partition (read from the
-- catalog through glia_partitions()): 2 after the daily run that makes them (store.ensure_partitions_ahead); a
-- table with no partition at all gives 0, not a missing row.
SELECT t.parent AS table_name, count(p.partition) FILTER (WHERE p.range_start > now()) AS months
FROM unnest(glia_partitioned_tables()) AS t(parent)
LEFT JOIN glia_partitions() p ON p.parent = t.parent
GROUP BY t.parent
ORDER BY t.parent;
