-- The item catalog of $cur_date: EVERY item of the items snapshot items/dt=$cur_date (not only
-- the items seen in the logs; this is the set the item embeddings are exported for), with its
-- side features and its popularity counters. An item without events in a window has
-- impressions_Wd = clicks_Wd = 0 and ctr_Wd = the window's prior CTR p (what the smoothed CTR of
-- a key with no impression is); last_seen_dt and recency_days are NULL for an item never seen in
-- the largest window. Sorted by item_id.
-- Reads: items (the snapshot, ITEM_SCHEMA), item_counters (counters.sql with key = item_id).
-- Slots: windows (list of ints).
WITH prior AS (
    SELECT
        -- @for W in windows
        coalesce(sum(clicks_{{W}}d) / nullif(sum(impressions_{{W}}d), 0), 0) AS p_{{W}}d,
        -- @end
    FROM item_counters
)
SELECT
    i.item_id,
    i.item_category,
    i.item_domain,
    i.item_publisher,
    i.item_created_dt,
    -- @for W in windows
    CAST(coalesce(c.impressions_{{W}}d, 0) AS BIGINT) AS impressions_{{W}}d,
    CAST(coalesce(c.clicks_{{W}}d, 0) AS BIGINT) AS clicks_{{W}}d,
    CAST(coalesce(c.ctr_{{W}}d, prior.p_{{W}}d) AS DOUBLE) AS ctr_{{W}}d,
    -- @end
    c.last_seen_dt,
    c.recency_days,
FROM items i
LEFT JOIN item_counters c USING (item_id)
CROSS JOIN prior
ORDER BY i.item_id;
