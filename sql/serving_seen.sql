-- The seen sets serving filters (dailyrec.publishing.seen): per user, the distinct items they
-- clicked in the $lookback_days days ending at $cur_date (serving.seen_lookback_days) that the
-- version serves (index_items: the published item ids), most recent click first (ties by
-- item_id), at most $max_items (serving.max_seen_per_user). One row per user, sorted by user_id.
-- Reads: view events (events_view.sql), index_items (item_id).
WITH c AS (
    SELECT e.user_id, e.item_id, max(e.event_time) AS t
    FROM events e
    WHERE e.click = 1
      AND e.dt > CAST($cur_date AS DATE) - $lookback_days
      AND e.dt <= CAST($cur_date AS DATE)
      AND e.item_id IN (SELECT item_id FROM index_items)
    GROUP BY e.user_id, e.item_id
),
ranked AS (
    SELECT user_id, item_id, row_number() OVER (PARTITION BY user_id ORDER BY t DESC, item_id) AS rk
    FROM c
)
SELECT user_id, list(item_id ORDER BY rk) AS items
FROM ranked
WHERE rk <= $max_items
GROUP BY user_id
ORDER BY user_id;
