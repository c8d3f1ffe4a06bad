-- What receiver/run_logs.py runs for `glia show` and /api/runs/{id}: a run's log records and its exceptions.

-- name: run_logs
-- The newest $3 log records of the run's spans (trace $1, span ids $2: the run and the spans shown below it),
-- newest first (the caller turns them round: newest last); $4 is the value limit ($V), $5 the attributes budget.
-- `time` holds microseconds: records closer than that (a burst of stderr lines) are ordered by their nanoseconds.
SELECT r.time, r.severity_number, left(r.severity_text, $4 + 1) AS severity_text,
       left(r.body #>> '{}', $4 + 1) AS body, left(r.event_name, $4 + 1) AS event_name, r.span_id,
       bag.attributes, bag.attributes_dropped
FROM (
    SELECT * FROM log_records
    WHERE trace_id = $1 AND span_id = ANY ($2::text[])
    ORDER BY time DESC, coalesce(time_unix_nano, observed_time_unix_nano) DESC, record_id
    LIMIT $3
) r
CROSS JOIN LATERAL (
    SELECT coalesce(jsonb_object_agg(k, v) FILTER (WHERE before < $5), '{}') AS attributes,
           count(*) FILTER (WHERE before >= $5) AS attributes_dropped
    FROM (
        SELECT k, v, sum(octet_length(k) + octet_length(v::text)) OVER (ORDER BY k ROWS UNBOUNDED PRECEDING)
                     - octet_length(k) - octet_length(v::text) AS before
        FROM (
            SELECT left(key, $4 + 1) AS k,
                   CASE WHEN jsonb_typeof(value) = 'string' THEN to_jsonb(left(value #>> '{}', $4 + 1))
                        WHEN octet_length(value::text) > $4 THEN to_jsonb(left(value::text, $4 + 1))
                        ELSE value END AS v
            FROM jsonb_each(r.attributes)
        ) cut
    ) sized
) bag
ORDER BY r.time DESC, coalesce(r.time_unix_nano, r.observed_time_unix_nano) DESC, r.record_id;

-- name: run_exceptions
-- The `exception` events of the run (trace $1, span $2, its copy starting at $3), in the order recorded, at most
-- $4: type and message cut at $5 characters (+1, for the marker), the stack trace at $6.
SELECT CASE WHEN jsonb_typeof(e.value -> 'time_unix_nano') = 'number'
            THEN to_timestamp((e.value ->> 'time_unix_nano')::double precision / 1e9) END AS time,
       left(e.value -> 'attributes' ->> 'exception.type', $5 + 1) AS type,
       left(e.value -> 'attributes' ->> 'exception.message', $5 + 1) AS message,
       left(e.value -> 'attributes' ->> 'exception.stacktrace', $6 + 1) AS stacktrace
FROM spans s
CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(s.events) = 'array' THEN s.events ELSE '[]' END)
    WITH ORDINALITY AS e (value, n)
WHERE s.trace_id = $1 AND s.span_id = $2 AND s.start_time = $3 AND e.value ->> 'name' = 'exception'
ORDER BY e.n
LIMIT $4;
