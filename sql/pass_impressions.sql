-- Every impression of one pass ($first_hour .. $last_hour of $cur_date) with the user's side
-- features (users snapshot of $cur_date; NULL for a user missing from it), the context, the
-- item_id and the click: what the serving model scores before it trains on the pass (prequential
-- evaluation, dailyrec/prequential.py). Slot lists: user_features, context.
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
    e.click,
FROM events e
LEFT JOIN users s USING (user_id)
WHERE e.dt = CAST($cur_date AS DATE)
  AND e.hour BETWEEN $first_hour AND $last_hour
ORDER BY e.event_time, e.request_id;
