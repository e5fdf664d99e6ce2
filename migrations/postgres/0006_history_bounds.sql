-- History bounds: each row's size in bytes (its text fields plus a fixed allowance for the row
-- and its index entries), so the recorder can keep each device's history, and all of it, under
-- its bounds without reading the rows. Oldest rows of a device are found through
-- `history_device_id`.
ALTER TABLE history ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0;
UPDATE history SET bytes = 80 + octet_length(deviceid) + octet_length(user_agent)
    + COALESCE(octet_length(ops_switchs), 0) + octet_length(request)
    + COALESCE(octet_length(ops_account), 0);
CREATE INDEX history_device_id ON history (deviceid, id, bytes);
