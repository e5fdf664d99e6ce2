-- History bounds: each row's size in bytes (its text fields plus a fixed allowance for the row
-- and its index entries), so the recorder can keep each device's history, and all of it, under
-- its bounds without reading the rows. Oldest rows of a device are found through
-- `history_device_id`.
ALTER TABLE history ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
UPDATE history SET bytes = 80 + length(CAST(deviceid AS BLOB)) + length(CAST(user_agent AS BLOB))
    + COALESCE(length(CAST(ops_switchs AS BLOB)), 0) + length(CAST(request AS BLOB))
    + COALESCE(length(CAST(ops_account AS BLOB)), 0);
CREATE INDEX history_device_id ON history (deviceid, id, bytes);
