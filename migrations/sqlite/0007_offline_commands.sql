-- Commands for a device that was offline when they were sent (an `update` with `ttl`): each is
-- the device's desired state until it acks it or `expires_at` passes. Rows are delivered in `id`
-- order when the device registers. `origin_node` and `origin_session` name the app session that
-- sent it (the session is NULL for a REST call), so that session hears the ack if it is still
-- connected to the same node. Times are milliseconds since the epoch.
CREATE TABLE offline_commands (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    deviceid       TEXT NOT NULL REFERENCES devices (deviceid) ON DELETE CASCADE,
    apikey         TEXT NOT NULL REFERENCES users (apikey) ON DELETE CASCADE,
    origin_node    TEXT NOT NULL,
    origin_session INTEGER,
    sequence       TEXT NOT NULL,
    params         TEXT NOT NULL,
    queued_at      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
);
CREATE INDEX offline_commands_device ON offline_commands (deviceid, id);
CREATE INDEX offline_commands_expiry ON offline_commands (expires_at);
