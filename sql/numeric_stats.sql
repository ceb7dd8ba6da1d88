-- Normalisation statistics of one numeric feature (features.spec kind numeric, slot column) over
-- the training window: the $window_days days ending at $cur_date (sampling.window_days) without
-- the held-out last $holdout_hours hours of $cur_date (training.holdout_hours), one value per
-- impression (the rows the models train on). The value is cast to DOUBLE and transformed first
-- when $log1p (the signed log1p: sign(x) * ln(1 + |x|)); NULL and NaN values are missing.
--   rows     impressions of the window
--   count    impressions with a value
--   missing  rows - count
--   mean     mean of the (transformed) values; NULL without a value
--   std      population standard deviation of the (transformed) values; NULL without a value
-- The model normalises z = (transformed x - mean) / std (models/features.py, FeatureEncoder).
-- Reads: slot source = events, events_users or events_catalog (events_view.sql,
-- events_catalog_view.sql). Params: $feature, $cur_date, $window_days, $holdout_hours, $log1p.
WITH v AS (
    SELECT CAST({{column}} AS DOUBLE) AS x
    FROM {{source}}
    WHERE dt > CAST($cur_date AS DATE) - $window_days
      AND dt <= CAST($cur_date AS DATE)
      AND NOT (dt = CAST($cur_date AS DATE) AND hour >= 24 - $holdout_hours)
),
t AS (
    SELECT CASE WHEN x IS NULL OR isnan(x) THEN NULL
                WHEN $log1p THEN sign(x) * ln(1 + abs(x))
                ELSE x END AS t
    FROM v
)
SELECT
    $feature AS feature,
    CAST(count(*) AS BIGINT) AS rows,
    CAST(count(t) AS BIGINT) AS count,
    CAST(count(*) - count(t) AS BIGINT) AS missing,
    CAST(avg(t) AS DOUBLE) AS mean,
    CAST(stddev_pop(t) AS DOUBLE) AS std,
FROM t;
