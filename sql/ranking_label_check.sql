-- Label sanity of the ranking window: per day, impressions whose conversion is 1 while click is 0.
-- A conversion must follow a click (docs/data-contract.md; dailyrec/schemas.py rejects such rows
-- when it validates a partition); the ranking sampler refuses them too, naming the days.
-- Window: the $window_days days ending at $cur_date (sampling.window_days), holdout hours included.
-- Reads: events (events_view.sql).
SELECT dt, count(*) AS bad_rows
FROM events
WHERE dt > CAST($cur_date AS DATE) - $window_days
  AND dt <= CAST($cur_date AS DATE)
  AND conversion = 1 AND click = 0
GROUP BY dt
ORDER BY dt;
