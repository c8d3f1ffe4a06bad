DROP INDEX IF EXISTS spans_span_id_idx;
DROP FUNCTION IF EXISTS glia_drop_partition(regclass);
DROP FUNCTION IF EXISTS glia_partitions();
DROP TABLE IF EXISTS retention_policy;
DROP TABLE IF EXISTS api_keys;
