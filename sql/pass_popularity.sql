-- Impressions and clicks of every item in one pass's hours ($first_hour .. $last_hour of
-- $cur_date): the popularity the random negatives (and their log q) are drawn from, as
-- sample_popularity.sql does over the daily training window. Items outside the catalog are kept
-- (counted apart by the caller). Sorted by item_id (also the pass's touched items).
SELECT item_id, count(*) AS impressions, CAST(coalesce(sum(click), 0) AS BIGINT) AS clicks
FROM events
WHERE dt = CAST($cur_date AS DATE)
  AND hour BETWEEN $first_hour AND $last_hour
GROUP BY item_id
ORDER BY item_id;
