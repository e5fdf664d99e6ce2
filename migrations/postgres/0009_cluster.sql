-- Which node of a cluster holds each device, ordered by an epoch that only grows: a device that
-- registers on another node bumps it, so the newest connection wins without synchronised clocks.
-- node is '' while the device is offline; the row (and its epoch) stays.
CREATE TABLE cluster_devices (
    cluster TEXT NOT NULL,
    deviceid TEXT NOT NULL,
    node TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    PRIMARY KEY (cluster, deviceid)
);
CREATE INDEX cluster_devices_node ON cluster_devices (cluster, node);
