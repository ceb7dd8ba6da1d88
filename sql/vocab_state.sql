-- Chain the vocabulary state from the previous day's (features/dt=<cur_date - 1>/vocab_state).
--
-- vocabulary(D) = { ids with window_count >= $min_count in D's vocabulary window }   (admitted)
--               U { ids of the state of D-1 whose last_seen_dt >= D - $evict_after_days } (kept)
-- i.e. an id, once admitted, stays until it has been unseen for more than evict_after_days days,
-- so yesterday's embedding rows survive a quiet day and warm start can match them by id.
--   last_seen_dt  the later of the state's and the window's last day seen
--   total_count   state's total_count + the events of D alone (day_count) for an id already in the
--                 state; the window_count for an id entering the state (no double counting of
--                 the overlapping windows of consecutive days)
-- Reads: today (vocab_counts.sql rows of every vocab feature), prev_state (feature, id,
-- last_seen_dt, total_count; empty when there is no previous state). Sorted by feature, id.
WITH merged AS (
    SELECT
        coalesce(t.feature, p.feature) AS feature,
        coalesce(t.id, p.id) AS id,
        greatest(t.last_seen_dt, p.last_seen_dt) AS last_seen_dt,
        CASE WHEN p.id IS NULL THEN t.window_count
             ELSE p.total_count + coalesce(t.day_count, 0) END AS total_count,
        coalesce(t.window_count, 0) >= $min_count AS admitted,
        p.id IS NOT NULL AS known,
    FROM today t
    FULL OUTER JOIN prev_state p ON t.feature = p.feature AND t.id = p.id
)
SELECT feature, id, last_seen_dt, CAST(total_count AS BIGINT) AS total_count
FROM merged
WHERE admitted
   OR (known AND last_seen_dt >= CAST($cur_date AS DATE) - $evict_after_days)
ORDER BY feature, id;
