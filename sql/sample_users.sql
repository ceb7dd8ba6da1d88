-- The users of the positives (train_users: user_id, user_code) in user_code order with their
-- side features from the users snapshot of $cur_date (NULL for a user missing from it).
-- Slot list user_features: the spec's user-side features other than user_id.
SELECT
    t.user_id,
    -- @for F in user_features
    s.{{F}},
    -- @end
FROM train_users t
LEFT JOIN users s USING (user_id)
ORDER BY t.user_code;
