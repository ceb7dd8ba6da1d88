-- Clicks and users per hour of the last $lookback_days days ending at $cur_date, newest hour first,
-- from which dailyrec.holdout.choose_holdout picks how many hours the holdout takes. h is the hour
-- index relative to $cur_date (23 = its last hour, -1 = the last hour of the day before, ...);
-- clicks = the clicks of that hour, users = the users whose LATEST click in the look-back is in
-- that hour (so the users of the last H hours are the sum of users over h >= 24 - H).
-- Reads: view events (events_view.sql).
WITH c AS (
    SELECT user_id, CAST(dt - CAST($cur_date AS DATE) AS INTEGER) * 24 + hour AS h
    FROM events
    WHERE click = 1
      AND dt > CAST($cur_date AS DATE) - $lookback_days
      AND dt <= CAST($cur_date AS DATE)
),
per_hour AS (SELECT h, count(*) AS clicks FROM c GROUP BY h),
last_hour AS (SELECT max(h) AS h FROM c GROUP BY user_id),
users_last AS (SELECT h, count(*) AS users FROM last_hour GROUP BY h)
SELECT p.h, CAST(p.clicks AS BIGINT) AS clicks, CAST(coalesce(u.users, 0) AS BIGINT) AS users
FROM per_hour p LEFT JOIN users_last u USING (h)
ORDER BY p.h DESC;
