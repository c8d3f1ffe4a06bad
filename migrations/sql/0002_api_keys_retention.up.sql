-- Glia schema, revision 0002: API keys, the retention policy, and partition helpers for retention.

-- Keys are stored as the sha256 of the secret (the secret is 256 random bits, so a fast hash is enough);
-- the prefix is kept in clear so `glia keys list` can show which key is which.
CREATE TABLE api_keys (
    key_id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL,
    scope       text        NOT NULL CHECK (scope IN ('ingest', 'read')),
    key_hash    text        NOT NULL UNIQUE,
    key_prefix  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE UNIQUE INDEX api_keys_active_name_idx ON api_keys (name) WHERE revoked_at IS NULL;

-- One row at most: how long runs are kept, and where dropped partitions are archived first.
CREATE TABLE retention_policy (
    singleton       boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    keep_days       integer     NOT NULL CHECK (keep_days > 0),
    archive_dir     text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_applied_at timestamptz
);

-- The monthly partitions of spans and metric_points with their bounds, read from the catalog.
CREATE FUNCTION glia_partitions()
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
CREATE FUNCTION glia_drop_partition(part regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM glia_partitions() WHERE partition = part::text) THEN
        RAISE EXCEPTION '% is not a partition of spans or metric_points', part;
    END IF;
    EXECUTE format('DROP TABLE %s', part);
END
$$;

-- A run is addressed by its span id alone (`glia show RUN_ID`, /api/runs/{id}): without this index that lookup
-- would read every partition.
CREATE INDEX spans_span_id_idx ON spans (span_id);
