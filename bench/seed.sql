-- Deterministic synthetic runs for the benchmark (bench/query.py) and the query tests: everything about run i
-- follows from i, so a test can say what a query must return. Parameters of seed_runs:
--   $1 number of runs, $2 months they span back from $3, $3 the newest start time,
--   $4 every $4-th run also gets memory and CPU samples every 10 s (0: none).

-- name: seed_partitions
SELECT glia_ensure_partition(t::regclass, $2::timestamptz - make_interval(months => m))
FROM generate_series(0, $1::integer + 1) AS m, unnest(ARRAY['spans', 'metric_points']) AS t;

-- name: seed_runs
INSERT INTO spans (trace_id, span_id, start_time, name, kind, status_code, status_message, end_time,
                   start_time_unix_nano, duration_ns, scope_name, service_name, service_instance_id, host_name,
                   host_arch, os_type, process_pid, process_executable_name, process_owner, process_runtime_name,
                   process_runtime_version, script_path, script_sha256, run_kind, exit_code, cpu_user_seconds,
                   cpu_system_seconds, cpu_percent, peak_rss_bytes, peak_rss_method, io_read_bytes, io_write_bytes,
                   workflow_engine, workflow_run_id, task_name, task_attempt, scheduler, scheduler_job_id,
                   requested_memory_bytes, requested_cpus, attributes, resource)
SELECT md5('trace' || i), left(md5('span' || i), 16), r.started, 'prog-' || lpad(r.p::text, 2, '0'), 1,
       CASE WHEN r.exit_code = 0 THEN 1 ELSE 2 END,
       CASE WHEN r.exit_code = 0 THEN NULL ELSE 'exit code ' || r.exit_code END,
       r.started + make_interval(secs => r.wall),
       (extract(epoch FROM r.started) * 1e9)::bigint, (r.wall * 1e9)::bigint, 'glia',
       'prog-' || lpad(r.p::text, 2, '0'), md5('instance' || i)::uuid::text, 'node' || lpad((i % 20)::text, 2, '0'),
       'amd64', 'linux', 1000 + i % 30000, 'python3',
       (ARRAY['ada', 'bob', 'cyd', 'dee', 'eve', 'fay', 'gus'])[1 + i % 7], 'cpython', '3.11.7',
       '/home/lab/prog-' || lpad(r.p::text, 2, '0') || '.py',
       -- three versions of each script over the period: the sha changes a third and two thirds of the way back
       md5('script' || r.p || '-' || (i::bigint * 3 / ($1 + 1))) || md5('v' || r.p || '-' || (i::bigint * 3 / ($1 + 1))),
       'command', r.exit_code, r.wall * (i % 10) / 10.0, r.wall * 0.05, 100 * ((i % 10) / 10.0 + 0.05),
       (64 + (i::bigint * 37) % 4000) * 1048576, 'cgroup', (i % 1000)::bigint * 4096, (i % 500)::bigint * 8192,
       -- every third run is a task of a Nextflow workflow of about 100 tasks; every second run a Slurm job of 4 GiB
       CASE WHEN i % 3 = 0 THEN 'nextflow' END, CASE WHEN i % 3 = 0 THEN 'wf-' || (i / 300) END,
       CASE WHEN i % 3 = 0 THEN 'prog-' || lpad(r.p::text, 2, '0') || ' (S' || (i % 1000) || ')' END,
       CASE WHEN i % 3 = 0 THEN 1 END, CASE WHEN i % 2 = 0 THEN 'slurm' END,
       CASE WHEN i % 2 = 0 THEN (100000 + i)::text END, CASE WHEN i % 2 = 0 THEN 4096::bigint * 1048576 END,
       CASE WHEN i % 2 = 0 THEN 2.0 END,
       jsonb_build_object('sample', 'S' || (i % 1000),
                          'pipeline', (ARRAY['rnaseq', 'wgs', 'chipseq', 'qc'])[1 + i % 4],
                          'reads', (i % 5000) * 1000),
       '{}'::jsonb
FROM generate_series(1, $1::integer) AS i,
LATERAL (SELECT i % 50 AS p,
                $3::timestamptz - make_interval(secs => (i::float8 / $1) * $2 * 30 * 86400) AS started,
                (1 + (i::bigint * 7907) % 3600)::float8 AS wall,
                CASE WHEN i % 101 = 0 THEN 137 WHEN i % 13 = 0 THEN 1 ELSE 0 END AS exit_code) AS r;

-- name: seed_metric_points
-- For every $4-th run: process.memory.usage (bytes, rising to the run's peak) and process.cpu.time (seconds,
-- cumulative, by type) every 10 s, as the OpenTelemetry system-metrics instrumentation reports them.
INSERT INTO metric_points (point_id, time, time_unix_nano, metric_name, unit, metric_type, value, is_monotonic,
                           service_name, service_instance_id, attributes)
SELECT md5(s.span_id || m.name || m.attrs::text || k)::uuid, t.at, (extract(epoch FROM t.at) * 1e9)::bigint,
       m.name, m.unit, 'sum', m.value, m.monotonic, s.service_name, s.service_instance_id, m.attrs
FROM spans s,
LATERAL generate_series(0, floor(s.duration_ns / 1e10)::integer) AS k,
LATERAL (SELECT s.start_time + make_interval(secs => 10 * k) AS at,
                least(1.0, (10 * k + 10) / (s.duration_ns / 1e9)) AS frac) AS t,
LATERAL (VALUES ('process.memory.usage', 'By', '{}'::jsonb, s.peak_rss_bytes * (0.5 + 0.5 * t.frac), false),
                ('process.cpu.time', 's', '{"type": "user"}'::jsonb, s.cpu_user_seconds * t.frac, true),
                ('process.cpu.time', 's', '{"type": "system"}'::jsonb, s.cpu_system_seconds * t.frac, true))
        AS m(name, unit, attrs, value, monotonic)
WHERE $1::integer > 0 AND s.run_kind = 'command' AND s.scope_name = 'glia'
  AND ('x' || right(s.trace_id, 8))::bit(32)::integer % $1 = 0;
