-- Seed 003 on the same model: products, devices users register themselves, extension properties,
-- invite-code sharing and the per-user version of the subscribed-device list.
-- Times in this migration are milliseconds since the epoch.

CREATE TABLE products (
    product_id          TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    model               TEXT NOT NULL DEFAULT '',
    allow_user_register BIGINT NOT NULL DEFAULT 0,
    owner               TEXT REFERENCES users (apikey) ON DELETE SET NULL,
    created_at          BIGINT NOT NULL
);

-- A device's product and MAC (12 lowercase hex digits): one device per product and MAC.
ALTER TABLE devices ADD COLUMN product_id TEXT REFERENCES products (product_id);
ALTER TABLE devices ADD COLUMN mac TEXT;
CREATE UNIQUE INDEX devices_product_mac ON devices (product_id, mac);
-- What the seed's device list shows beside the factory record.
ALTER TABLE devices ADD COLUMN access_key TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN mcu_mod TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN mcu_version TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN firmware_mod TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN firmware_version TEXT NOT NULL DEFAULT '';
-- Set by the device's first `register`, and its latest.
ALTER TABLE devices ADD COLUMN active_at BIGINT;
ALTER TABLE devices ADD COLUMN last_login BIGINT;

-- At most 10 per device; `value` is the JSON text of a string, number or boolean.
CREATE TABLE device_properties (
    deviceid TEXT NOT NULL REFERENCES devices (deviceid) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (deviceid, key)
);

-- An invitation to share a device. `to_apikey` is the invitee (for `qrcode`: whoever answered;
-- for `email`: the account that answered), `to_user` the account as shown (for `email`: the
-- address). Each party may remove it from their own list (`*_hidden`).
CREATE TABLE share_invites (
    code        TEXT PRIMARY KEY,
    deviceid    TEXT NOT NULL REFERENCES devices (deviceid) ON DELETE CASCADE,
    from_apikey TEXT NOT NULL REFERENCES users (apikey) ON DELETE CASCADE,
    mode        TEXT NOT NULL CHECK (mode IN ('app', 'qrcode', 'email')),
    to_apikey   TEXT REFERENCES users (apikey) ON DELETE CASCADE,
    to_user     TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL CHECK (state IN ('pending', 'accept', 'deny', 'cancel')),
    reason      TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    answered_at BIGINT,
    from_hidden BIGINT NOT NULL DEFAULT 0,
    to_hidden   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX share_invites_from ON share_invites (from_apikey);
CREATE INDEX share_invites_to ON share_invites (to_apikey);
CREATE INDEX share_invites_to_user ON share_invites (to_user);
CREATE INDEX share_invites_device ON share_invites (deviceid);

-- The version of each user's subscribed-device list and a digest of the list it numbers.
CREATE TABLE device_list_versions (
    apikey      TEXT PRIMARY KEY REFERENCES users (apikey) ON DELETE CASCADE,
    version     BIGINT NOT NULL,
    fingerprint TEXT NOT NULL
);
