-- Shows and clicks per value of one vocab feature (slot column) over some hours of one day: the
-- hours of a pass (dailyrec.admission.pass_counts) or the hours of the day no pass counted (the
-- daily shrink). The caller exposes only those hours' files as logs_raw; the dt/hour filter
-- below is a second guard.
--   shows      events carrying the value (impressions), as DOUBLE (the state decays them)
--   clicks     those events with click = 1
--   last_hour  the last hour of the day the value occurred (the state's last_seen_hour)
-- Values are cast to STRING (vocabularies are lists of strings); NULLs are not values.
-- Reads: slot source = events, events_users or events_items (events_view.sql). Sorted by id.
SELECT
    $feature AS feature,
    CAST({{column}} AS STRING) AS id,
    CAST(count(*) AS DOUBLE) AS shows,
    CAST(sum(CASE WHEN click = 1 THEN 1 ELSE 0 END) AS DOUBLE) AS clicks,
    CAST(max(hour) AS INTEGER) AS last_hour,
FROM {{source}}
WHERE {{column}} IS NOT NULL
  AND dt = CAST($cur_date AS DATE)
  AND hour >= $hour_lo
  AND hour <= $hour_hi
GROUP BY 2
ORDER BY 2;
