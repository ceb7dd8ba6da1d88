-- "exposed" hard-negative candidates: (user, item) pairs impressed to a user with positives
-- (train_users) in the TRAINING window and never clicked by that user in it.
SELECT user_id, item_id
FROM events
WHERE dt > CAST($cur_date AS DATE) - $window_days
  AND dt <= CAST($cur_date AS DATE)
  AND CAST(dt - CAST($cur_date AS DATE) AS INTEGER) * 24 + hour < 24 - $holdout_hours
  AND user_id IN (SELECT user_id FROM train_users)
GROUP BY user_id, item_id
HAVING max(click) = 0;
