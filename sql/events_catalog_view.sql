-- The events with the item columns of the day's catalog (features/dt=D/catalog.parquet, sql/catalog.sql:
-- the items snapshot's side features and the item counters), the source of the item-side numeric
-- features' statistics (numeric_stats.sql): an item feature of the models is a catalog column.
-- Reads: events (events_view.sql), catalog (registered by the caller).
CREATE OR REPLACE TEMP VIEW events_catalog AS
SELECT e.*, c.* EXCLUDE (item_id) FROM events e LEFT JOIN catalog c USING (item_id);
