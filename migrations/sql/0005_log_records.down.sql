-- Undoes revision 0005: the log records are dropped (with every partition) and the partition functions name the
-- two tables of revision 0004 again.

DROP TABLE log_records;

-- Creates this month's partitions and the next `months_ahead` months' for both tables.
CREATE OR REPLACE FUNCTION glia_ensure_partitions_ahead(months_ahead integer DEFAULT 2) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 0..months_ahead LOOP
        PERFORM glia_ensure_partition('spans', now() + make_interval(months => i));
        PERFORM glia_ensure_partition('metric_points', now() + make_interval(months => i));
    END LOOP;
END
$$;

-- The monthly partitions of spans and metric_points with their bounds, read from the catalog.
CREATE OR REPLACE FUNCTION glia_partitions()
RETURNS TABLE (parent text, partition text, range_start timestamptz, range_end timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT p.relname::text,
           c.relname::text,
           substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz,
           substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class p ON p.oid = i.inhparent
    WHERE p.relname IN ('spans', 'metric_points')
      AND p.relnamespace = current_schema()::regnamespace
$$;

-- Drops one partition of spans or metric_points, refusing anything else.
CREATE OR REPLACE FUNCTION glia_drop_partition(part regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM glia_partitions() WHERE partition = part::text) THEN
        RAISE EXCEPTION '% is not a partition of spans or metric_points', part;
    END IF;
    EXECUTE format('DROP TABLE %s', part);
END
$$;

DROP FUNCTION glia_partitioned_tables();
