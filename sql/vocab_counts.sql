-- Occurrences of one vocab feature's values (slot column) in the vocabulary window: the
-- $vocab_days days ending at $cur_date (sampling.window_days, the window the model trains on).
--   window_count  events carrying the value in the window (min_count applies to it)
--   day_count     events carrying the value on $cur_date alone (added to a chained total_count)
--   last_seen_dt  the last day of the window the value occurred
-- Values are cast to STRING (VARCHAR; vocabularies are lists of strings); NULLs are not values.
-- Reads: slot source = events, events_users or events_items (events_view.sql).
SELECT
    $feature AS feature,
    CAST({{column}} AS STRING) AS id,
    count(*) AS window_count,
    count(*) FILTER (WHERE dt = CAST($cur_date AS DATE)) AS day_count,
    max(dt) AS last_seen_dt,
FROM {{source}}
WHERE {{column}} IS NOT NULL
  AND dt > CAST($cur_date AS DATE) - $vocab_days
  AND dt <= CAST($cur_date AS DATE)
GROUP BY 2
ORDER BY 2;
