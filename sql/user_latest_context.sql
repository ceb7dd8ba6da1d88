-- Each user's latest impression in the given log files, with its context columns, joined to the
-- users snapshot: the rows a user tower is called on outside training (model hard negatives,
-- serving). Users of the snapshot without any event get NULL context (defaults downstream).
SELECT u.*,
       e.event_time AS last_event_time,
       e.device_model, e.device_type, e.device_conn_type, e.banner_pos,
       e.hour_of_day
FROM users u
LEFT JOIN (
    SELECT user_id,
           arg_max(event_time, event_time) AS event_time,
           arg_max(device_model, event_time) AS device_model,
           arg_max(device_type, event_time) AS device_type,
           arg_max(device_conn_type, event_time) AS device_conn_type,
           arg_max(banner_pos, event_time) AS banner_pos,
           arg_max(hour_of_day, event_time) AS hour_of_day
    FROM events
    GROUP BY user_id
) e USING (user_id)
ORDER BY u.user_id
