-- The clicks of one pass (hourly incremental training, docs/hourly.md): the hours $first_hour ..
-- $last_hour of $cur_date, with their context (slot list context: the spec's context features).
-- Same columns as sample_clicks.sql, so the daily sampler's code path is reused: a pass has no
-- holdout (its evaluation is the prequential one, before training), so in_holdout is FALSE and
-- request_id NULL. No ORDER BY on DuckDB: the scan keeps the files' order (hours, rows).
-- Reads: events (events_view.sql) over the pass's hourly partitions.
SELECT
    e.user_id,
    e.item_id,
    e.event_time,
    -- @for F in context
    e.{{F}},
    -- @end
    FALSE AS in_holdout,
    CAST(NULL AS STRING) AS request_id,
FROM events e
WHERE e.click = 1
  AND e.dt = CAST($cur_date AS DATE)
  AND e.hour BETWEEN $first_hour AND $last_hour
-- spark: ORDER BY e.dt, e.hour, e._scan_file, e._scan_row
