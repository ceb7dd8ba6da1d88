-- "exposed" hard-negative candidates of one pass: (user, item) pairs impressed to a user with
-- positives (train_users) in the pass's hours and never clicked by that user in them.
SELECT user_id, item_id
FROM events
WHERE dt = CAST($cur_date AS DATE)
  AND hour BETWEEN $first_hour AND $last_hour
  AND user_id IN (SELECT user_id FROM train_users)
GROUP BY user_id, item_id
HAVING max(click) = 0
ORDER BY user_id, item_id;
