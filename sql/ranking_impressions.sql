-- Every impression of the ranking window, the rows the MMoE ranker learns from and is judged on:
-- the $window_days days ending at $cur_date (sampling.window_days). is_holdout marks the last
-- $holdout_hours hours of $cur_date (training.holdout_hours, same split as sample_clicks.sql /
-- sample_holdout.sql); the rest is the training window. Both labels (click, conversion) are kept.
--
-- Columns: event_time, request_id, user_id, the user-side features from the users snapshot of
-- $cur_date (slot list user_features; NULL for a user missing from it), the context features of
-- the impression (slot list context: log columns and hour_of_day), item_id, the item-side
-- features from the catalog features/dt=$cur_date/catalog.parquet (slot list item_features; NULL
-- for an item that left the catalog: in_catalog is false), click, conversion, the further label
-- columns of ranking.tasks (slot list labels: log columns, as typed in the logs), is_holdout.
-- Sorted by (event_time, request_id, item_id), so the seeded down-sampling that follows in Python
-- sees the same order on every run.
-- Reads: events (events_view.sql), users (the snapshot), catalog (the features step's catalog).
SELECT
    e.event_time,
    e.request_id,
    e.user_id,
    -- @for F in user_features
    s.{{F}},
    -- @end
    -- @for F in context
    e.{{F}},
    -- @end
    e.item_id,
    -- @for F in item_features
    c.{{F}},
    -- @end
    c.item_id IS NOT NULL AS in_catalog,
    s.user_id IS NOT NULL AS in_users,
    CAST(e.click AS TINYINT) AS click,
    CAST(e.conversion AS TINYINT) AS conversion,
    -- @for L in labels
    e.{{L}},
    -- @end
    (e.dt = CAST($cur_date AS DATE) AND e.hour >= 24 - $holdout_hours) AS is_holdout,
FROM events e
LEFT JOIN users s ON s.user_id = e.user_id
LEFT JOIN catalog c ON c.item_id = e.item_id
WHERE e.dt > CAST($cur_date AS DATE) - $window_days
  AND e.dt <= CAST($cur_date AS DATE)
ORDER BY e.event_time, e.request_id, e.item_id;
