-- The current Glia schema in one readable file. It must equal what migrations/ produce (tests/integration/test_schema.py
-- checks): change both together.


CREATE TABLE spans (
    trace_id                  text        NOT NULL,  -- 32 lowercase hex digits
    span_id                   text        NOT NULL,  -- 16 lowercase hex digits
    start_time                timestamptz NOT NULL,
    parent_span_id            text,
    trace_state               text,
    name                      text        NOT NULL,
    kind                      smallint    NOT NULL DEFAULT 0,  -- OTLP SpanKind
    status_code               smallint    NOT NULL DEFAULT 0,  -- 0 unset, 1 ok, 2 error
    status_message            text,
    end_time                  timestamptz,           -- NULL: not ended (running or lost, revision 0006)
    start_time_unix_nano      bigint      NOT NULL,
    duration_ns               bigint,                -- NULL while end_time is
    scope_name                text,
    scope_version             text,
    -- resource attributes of the attribute contract (docs/attributes.md)
    service_name              text,
    service_instance_id       text,
    host_name                 text,
    host_arch                 text,
    os_type                   text,
    os_description            text,
    process_pid               bigint,
    process_parent_pid        bigint,
    process_executable_name   text,
    process_executable_path   text,
    process_command_args      text[],
    process_owner             text,
    process_working_directory text,
    process_runtime_name      text,
    process_runtime_version   text,
    script_path               text,
    script_sha256             text,
    -- span attributes of the attribute contract
    run_kind                  text,
    exit_code                 integer,
    cpu_user_seconds          double precision,
    cpu_system_seconds        double precision,
    cpu_percent               double precision,
    peak_rss_bytes            bigint,     -- the largest single process's peak RSS (GNU time's %M)
    peak_rss_method           text,
    tree_peak_bytes           bigint,     -- the whole process tree's peak (revision 0003)
    tree_peak_method          text,
    oom_kills                 integer,    -- processes the OOM killer ended in the run's cgroup
    io_read_bytes             bigint,
    io_write_bytes            bigint,
    -- workflow engines and batch schedulers (revision 0004): span attributes, else the resource's
    workflow_engine           text,
    workflow_run_id           text,       -- the engine's id of one workflow run
    workflow_name             text,
    task_name                 text,
    task_attempt              integer,    -- 1-based
    scheduler                 text,       -- slurm, pbs, lsf, sge, kubernetes, github-actions, gitlab-ci
    scheduler_job_id          text,       -- a Slurm array task as ARRAYJOBID_TASKID
    requested_memory_bytes    bigint,
    requested_cpus            double precision,
    requested_seconds         double precision,
    -- live runs (revision 0006): a run's start record and heartbeats (docs/attributes.md, "Live runs")
    heartbeat_at              timestamptz,           -- the client's time of the last start record or heartbeat
    lost_at                   timestamptz,           -- when the receiver's sweep found its heartbeats stopped
    last_rss_bytes            bigint,                -- the memory (RSS) its last heartbeat reported
    -- everything else
    attributes                jsonb       NOT NULL DEFAULT '{}',
    resource                  jsonb       NOT NULL DEFAULT '{}',
    events                    jsonb       NOT NULL DEFAULT '[]',
    links                     jsonb       NOT NULL DEFAULT '[]',
    dropped_attributes_count  integer     NOT NULL DEFAULT 0,
    received_at               timestamptz NOT NULL DEFAULT now(),
    -- trace_id first: the Citus distribution key must be in every unique index
    PRIMARY KEY (trace_id, span_id, start_time)
) PARTITION BY RANGE (start_time);

CREATE INDEX spans_start_time_idx ON spans (start_time DESC);
CREATE INDEX spans_service_time_idx ON spans (service_name, start_time DESC);
CREATE INDEX spans_owner_time_idx ON spans (process_owner, start_time DESC);
CREATE INDEX spans_host_time_idx ON spans (host_name, start_time DESC);
CREATE INDEX spans_script_sha_idx ON spans (script_sha256) WHERE script_sha256 IS NOT NULL;
CREATE INDEX spans_parent_idx ON spans (trace_id, parent_span_id);
CREATE INDEX spans_attributes_idx ON spans USING gin (attributes jsonb_path_ops);
-- A workflow's tasks by its engine's id, whether or not the workflow span arrived (revision 0004).
CREATE INDEX spans_workflow_run_idx ON spans (workflow_run_id, start_time DESC) WHERE workflow_run_id IS NOT NULL;
-- The runs without an end: `--status running|lost` and the lost sweep (revision 0006; a few rows at most).
CREATE INDEX spans_unfinished_idx ON spans (heartbeat_at) WHERE end_time IS NULL;

CREATE TABLE metric_points (
    point_id             uuid        NOT NULL,  -- hash of the point's identity: a resent batch adds nothing
    time                 timestamptz NOT NULL,
    time_unix_nano       bigint      NOT NULL,
    start_time_unix_nano bigint,
    metric_name          text        NOT NULL,
    unit                 text,
    metric_type          text        NOT NULL,  -- gauge, sum, histogram, exponential_histogram, summary
    value                double precision,      -- gauge and sum points; the sum for the others
    count                bigint,                 -- histogram and summary points
    data                 jsonb,                  -- buckets, quantiles, min, max
    is_monotonic         boolean,
    service_name         text,
    service_instance_id  text,
    trace_id             text,                   -- from the point's glia.trace_id attribute or an exemplar
    span_id              text,
    attributes           jsonb       NOT NULL DEFAULT '{}',
    resource             jsonb       NOT NULL DEFAULT '{}',
    scope_name           text,
    received_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (point_id, time)
) PARTITION BY RANGE (time);

CREATE INDEX metric_points_name_time_idx ON metric_points (metric_name, time DESC);
CREATE INDEX metric_points_instance_time_idx ON metric_points (service_instance_id, time);
CREATE INDEX metric_points_trace_idx ON metric_points (trace_id, span_id) WHERE trace_id IS NOT NULL;

-- OpenTelemetry log records (revision 0005): POST /v1/logs, and the stderr tails of `glia run --keep-stderr`.
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

-- Creates the monthly partition of `parent` (one of glia_partitioned_tables()) holding `at`, if it is missing.
-- Partition names are derived from the date only (spans_2026_11), never from request data.
CREATE FUNCTION glia_ensure_partition(parent regclass, at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    part_name   text := format('%s_%s', parent::text, to_char(month_start AT TIME ZONE 'UTC', 'YYYY_MM'));
BEGIN
    IF to_regclass(part_name) IS NULL THEN
        -- serialise concurrent creators (several receivers) on this partition name
        PERFORM pg_advisory_xact_lock(hashtext(part_name));
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                       part_name, parent, month_start, month_start + interval '1 month');
    END IF;
    RETURN part_name;
END
$$;

-- The tables partitioned by month: what partition upkeep, retention and /metrics go through.
CREATE FUNCTION glia_partitioned_tables() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['spans', 'metric_points', 'log_records']
$$;

-- Creates this month's partitions and the next `months_ahead` months' for every partitioned table.
CREATE FUNCTION glia_ensure_partitions_ahead(months_ahead integer DEFAULT 2) RETURNS void
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

SELECT glia_ensure_partitions_ahead(2);

-- Runs: every span glia tracked and every root span, with the names users think in.
CREATE VIEW runs AS
SELECT
    s.span_id                                        AS run_id,
    s.trace_id,
    s.parent_span_id                                 AS parent_run_id,
    s.name                                           AS run_name,
    s.service_name                                   AS program_name,
    s.run_kind,
    s.process_owner                                  AS user_name,
    s.host_name,
    s.os_type,
    s.process_runtime_name || coalesce(' ' || s.process_runtime_version, '') AS runtime,
    s.script_path,
    s.script_sha256,
    s.process_command_args                           AS command_args,
    s.process_working_directory                      AS working_directory,
    -- the one list of statuses (docs/querying.md): the raw span status stays in spans.status_code
    CASE WHEN s.end_time IS NULL AND s.lost_at IS NOT NULL THEN 'lost'
         WHEN s.end_time IS NULL THEN 'running'
         WHEN s.status_code = 2 OR s.exit_code <> 0 THEN 'error'
         ELSE 'ok' END                               AS status,
    s.status_message,
    s.exit_code,
    s.start_time                                     AS started_at,
    s.end_time                                       AS ended_at,
    s.duration_ns / 1e9::double precision            AS wall_seconds,
    -- how long it has run: to its end, to now while running, to its last heartbeat once lost
    CASE WHEN s.end_time IS NOT NULL THEN s.duration_ns / 1e9::double precision
         ELSE extract(epoch FROM CASE WHEN s.lost_at IS NULL THEN now() ELSE coalesce(s.heartbeat_at, s.start_time)
                                 END - s.start_time)::double precision END AS elapsed_seconds,
    s.heartbeat_at                                   AS last_heartbeat_at,
    s.lost_at,
    s.last_rss_bytes,
    s.cpu_user_seconds,
    s.cpu_system_seconds,
    s.cpu_user_seconds + s.cpu_system_seconds        AS cpu_seconds,
    s.cpu_percent,
    s.peak_rss_bytes,
    s.peak_rss_bytes / 1024                          AS max_rss_kb,
    s.peak_rss_method,
    s.tree_peak_bytes,
    s.tree_peak_method,
    s.oom_kills,
    s.io_read_bytes,
    s.io_write_bytes,
    s.workflow_engine,
    s.workflow_run_id,
    s.workflow_name,
    s.task_name,
    s.task_attempt,
    s.scheduler,
    s.scheduler_job_id,
    s.requested_memory_bytes,
    s.requested_cpus,
    s.requested_seconds,
    s.service_instance_id,
    s.attributes,
    s.resource
FROM spans s
WHERE s.parent_span_id IS NULL OR s.run_kind IS NOT NULL;

-- API keys (revision 0002). Stored as the sha256 of the secret (256 random bits, so a fast hash is enough); the
-- prefix is kept in clear so `glia keys list` can show which key is which.
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

-- The monthly partitions of the partitioned tables with their bounds, read from the catalog.
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
    WHERE p.relname = ANY (glia_partitioned_tables())
      AND p.relnamespace = current_schema()::regnamespace
$$;

-- Drops one partition of a partitioned table, refusing anything else.
CREATE FUNCTION glia_drop_partition(part regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM glia_partitions() WHERE partition = part::text) THEN
        RAISE EXCEPTION '% is not a partition of %', part, array_to_string(glia_partitioned_tables(), ', ');
    END IF;
    EXECUTE format('DROP TABLE %s', part);
END
$$;

-- A run is addressed by its span id alone (`glia show RUN_ID`, /api/runs/{id}): without this index that lookup
-- would read every partition.
CREATE INDEX spans_span_id_idx ON spans (span_id);
