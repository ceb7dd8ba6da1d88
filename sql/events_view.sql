-- The view every log query reads: the hourly log partitions exposed as `logs_raw` (hive
-- columns dt, hour taken from .../dt=YYYY-MM-DD/hour=HH/ paths), with dt as a DATE, hour as an
-- INTEGER and the context feature hour_of_day (= the partition hour; the log contract
-- guarantees event_time lies inside its partition's hour, in UTC). The hive columns come last
-- on both engines, so `* EXCEPT` + the casts keeps the column order.
CREATE OR REPLACE TEMP VIEW events AS
SELECT * EXCEPT (dt, hour),
       CAST(dt AS DATE) AS dt,
       CAST(hour AS INTEGER) AS hour,
       CAST(hour AS INTEGER) AS hour_of_day
FROM logs_raw;

-- The same events with the users / items snapshot columns, for vocabularies of side features.
CREATE OR REPLACE TEMP VIEW events_users AS
SELECT e.*, u.* EXCEPT (user_id) FROM events e LEFT JOIN users u USING (user_id);

CREATE OR REPLACE TEMP VIEW events_items AS
SELECT e.*, i.* EXCEPT (item_id) FROM events e LEFT JOIN items i USING (item_id);
