-- The clicks of the TRAINING window: the $window_days days ending at $cur_date
-- (sampling.window_days) minus the last $holdout_hours hours of $cur_date (training.holdout_hours;
-- those hours form the holdout, sample_holdout.sql), with their context (slot list context: the
-- spec's context features, columns of events).
-- No ORDER BY: a filtered scan keeps the files' order (days, hours, rows), as the connection
-- sets preserve_insertion_order, so the result is deterministic without a sort.
-- Reads: events (events_view.sql).
SELECT
    e.user_id,
    e.item_id,
    e.event_time,
    -- @for F in context
    e.{{F}},
    -- @end
FROM events e
WHERE e.click = 1
  AND e.dt > CAST($cur_date AS DATE) - $window_days
  AND e.dt <= CAST($cur_date AS DATE)
  AND (e.dt < CAST($cur_date AS DATE) OR e.hour < 24 - $holdout_hours);
