-- The clicks of the whole window: the $window_days days ending at $cur_date (sampling.window_days),
-- holdout hours included, with their context (slot list context: the spec's context features,
-- columns of events). One scan feeds both outputs: in_holdout marks the clicks of the last
-- $holdout_hours hours ending with $cur_date (training.holdout_hours, or more on a sparse day:
-- dailyrec.holdout.choose_holdout; may reach into the days before; they form the holdout,
-- sample_holdout.sql), the others are the TRAINING window's clicks. request_id is only needed to
-- order the holdout, so it is NULL for the others.
-- No ORDER BY on DuckDB: a filtered scan keeps the files' order (days, hours, rows), as the
-- connection sets preserve_insertion_order, so the result is deterministic without a sort. Spark
-- keeps no such order: there the rows are sorted by the scan position (dailyrec/spark.py), which
-- is the same order.
-- Reads: events (events_view.sql).
SELECT
    e.user_id,
    e.item_id,
    e.event_time,
    -- @for F in context
    e.{{F}},
    -- @end
    (CAST(e.dt - CAST($cur_date AS DATE) AS INTEGER) * 24 + e.hour >= 24 - $holdout_hours) AS in_holdout,
    CASE WHEN CAST(e.dt - CAST($cur_date AS DATE) AS INTEGER) * 24 + e.hour >= 24 - $holdout_hours
         THEN e.request_id END AS request_id,
FROM events e
WHERE e.click = 1
  AND e.dt > CAST($cur_date AS DATE) - $window_days
  AND e.dt <= CAST($cur_date AS DATE)
-- spark: ORDER BY e.dt, e.hour, e._scan_file, e._scan_row
