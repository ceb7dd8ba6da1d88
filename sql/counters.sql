-- Per-key counters (key = item_id or user_id) over every counter window W: the W days ending at
-- $cur_date, inclusive (features.counter_windows_days).
--
--   impressions_Wd  events of the key in the window
--   clicks_Wd       clicked events
--   ctr_Wd          smoothed CTR = (clicks + m * p) / (impressions + m): a Beta prior with the
--                   mean p = the window's global CTR and the weight of m = $prior_strength
--                   impressions, so a key with few impressions sits near the global CTR
--   last_seen_dt    the last day (in the largest window) the key had an event
--   recency_days    $cur_date - last_seen_dt (0 = seen on $cur_date)
--
-- One row per key seen in the largest window, sorted by key.
-- Reads: view events (events_view.sql). Slots: key (identifier), windows (list of ints).
-- Params: $cur_date, $max_window (= the largest W), $prior_strength.
WITH ev AS (
    SELECT {{key}} AS key, dt, click
    FROM events
    WHERE dt > CAST($cur_date AS DATE) - $max_window
      AND dt <= CAST($cur_date AS DATE)
),
agg AS (
    SELECT
        key,
        -- @for W in windows
        count(*) FILTER (WHERE dt > CAST($cur_date AS DATE) - {{W}}) AS impressions_{{W}}d,
        coalesce(sum(click) FILTER (WHERE dt > CAST($cur_date AS DATE) - {{W}}), 0) AS clicks_{{W}}d,
        -- @end
        max(dt) AS last_seen_dt,
    FROM ev
    GROUP BY key
),
prior AS (
    SELECT
        -- @for W in windows
        coalesce(sum(clicks_{{W}}d) / nullif(sum(impressions_{{W}}d), 0), 0) AS p_{{W}}d,
        -- @end
    FROM agg
)
SELECT
    key AS {{key}},
    -- @for W in windows
    CAST(impressions_{{W}}d AS BIGINT) AS impressions_{{W}}d,
    CAST(clicks_{{W}}d AS BIGINT) AS clicks_{{W}}d,
    CAST((clicks_{{W}}d + $prior_strength * p_{{W}}d) / (impressions_{{W}}d + $prior_strength) AS DOUBLE) AS ctr_{{W}}d,
    -- @end
    last_seen_dt,
    CAST(CAST($cur_date AS DATE) - last_seen_dt AS INTEGER) AS recency_days,
FROM agg CROSS JOIN prior
ORDER BY key;
