-- Impressions and clicks of every item in the TRAINING window (same window as
-- sample_clicks.sql, holdout hours excluded, so the negative distribution does not peek at the
-- holdout). Items outside the catalog are kept (counted apart by the caller).
SELECT item_id, count(*) AS impressions, CAST(coalesce(sum(click), 0) AS BIGINT) AS clicks
FROM events
WHERE dt > CAST($cur_date AS DATE) - $window_days
  AND dt <= CAST($cur_date AS DATE)
  AND CAST(dt - CAST($cur_date AS DATE) AS INTEGER) * 24 + hour < 24 - $holdout_hours
GROUP BY item_id;
