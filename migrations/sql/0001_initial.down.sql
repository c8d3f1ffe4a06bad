DROP VIEW IF EXISTS runs;
DROP FUNCTION IF EXISTS glia_ensure_partitions_ahead(integer);
DROP FUNCTION IF EXISTS glia_ensure_partition(regclass, timestamptz);
DROP TABLE IF EXISTS metric_points;
DROP TABLE IF EXISTS spans;
