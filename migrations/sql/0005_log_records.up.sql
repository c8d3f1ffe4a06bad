-- Glia schema, revision 0005: OpenTelemetry log records (POST /v1/logs, and the stderr tails of `glia run
-- --keep-stderr`), linked to runs by trace and span id, partitioned by month and kept or dropped like spans.
-- The partition functions read one list of partitioned tables (glia_partitioned_tables) instead of naming them.

CREATE TABLE log_records (
    record_id                uuid        NOT NULL,  -- hash of the record's identity: a resent batch adds nothing
    time                     timestamptz NOT NULL,  -- time_unix_nano, else observed_time_unix_nano
    time_unix_nano           bigint,                -- NULL: the source did not say when (0 on the wire)
    observed_time_unix_nano  bigint,
    severity_number          smallint    NOT NULL DEFAULT 0,  -- OTLP SeverityNumber: 0 unset, 1-4 trace ... 21-24 fatal
    severity_text            text,
    body                     jsonb,                 -- the AnyValue body as JSON: a string for a line of text
    event_name               text,
    trace_id                 text,                  -- 32 lowercase hex digits; NULL outside a trace
    span_id                  text,                  -- 16 lowercase hex digits: the span (run) the record belongs to
    flags                    bigint      NOT NULL DEFAULT 0,
    service_name             text,
    service_instance_id      text,
    scope_name               text,
    scope_version            text,
    attributes               jsonb       NOT NULL DEFAULT '{}',
    resource                 jsonb       NOT NULL DEFAULT '{}',
    dropped_attributes_count integer     NOT NULL DEFAULT 0,
    received_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (record_id, time)
) PARTITION BY RANGE (time);

-- A run's records (`glia show`, /api/runs/{id}), newest last.
CREATE INDEX log_records_trace_idx ON log_records (trace_id, span_id, time) WHERE trace_id IS NOT NULL;
CREATE INDEX log_records_time_idx ON log_records (time DESC);

-- The tables partitioned by month: what partition upkeep, retention and /metrics go through.
CREATE FUNCTION glia_partitioned_tables() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['spans', 'metric_points', 'log_records']
$$;

-- Creates this month's partitions and the next `months_ahead` months' for every partitioned table.
CREATE OR REPLACE FUNCTION glia_ensure_partitions_ahead(months_ahead integer DEFAULT 2) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    parent text;
BEGIN
    FOR i IN 0..months_ahead LOOP
        FOREACH parent IN ARRAY glia_partitioned_tables() LOOP
            PERFORM glia_ensure_partition(parent::regclass, now() + make_interval(months => i));
        END LOOP;
    END LOOP;
END
$$;

-- The monthly partitions of the partitioned tables with their bounds, read from the catalog.
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
    WHERE p.relname = ANY (glia_partitioned_tables())
      AND p.relnamespace = current_schema()::regnamespace
$$;

-- Drops one partition of a partitioned table, refusing anything else.
CREATE OR REPLACE FUNCTION glia_drop_partition(part regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM glia_partitions() WHERE partition = part::text) THEN
        RAISE EXCEPTION '% is not a partition of %', part, array_to_string(glia_partitioned_tables(), ', ');
    END IF;
    EXECUTE format('DROP TABLE %s', part);
END
$$;

SELECT glia_ensure_partitions_ahead(2);
