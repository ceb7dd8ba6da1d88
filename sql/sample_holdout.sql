-- The holdout: the clicks of the last $holdout_hours hours of $cur_date (none when 0), taken from
-- the result of sample_clicks.sql (registered as holdout_clicks: no second scan of the logs),
-- with the user's side features (users snapshot of $cur_date), the context and the item_id;
-- in_catalog says whether the item is in the day's catalog (only those can be retrieved).
SELECT
    e.event_time,
    e.user_id,
    -- @for F in user_features
    s.{{F}},
    -- @end
    -- @for F in context
    e.{{F}},
    -- @end
    e.item_id,
    c.item_code IS NOT NULL AS in_catalog,
FROM holdout_clicks e
LEFT JOIN users s USING (user_id)
LEFT JOIN catalog_codes c USING (item_id)
ORDER BY e.event_time, e.request_id, e.item_id;
