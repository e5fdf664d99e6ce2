-- Seeds 000 and 002: a product's WeChat hardware binding, each device's WeChat authorisation
-- state, WeChat users bound to devices by QR code, and threshold alarm rules.
-- Times in this migration are milliseconds since the epoch.

-- One binding per product (posting again replaces it). `wechat_iot` is the JSON object of the
-- seed's fields, as posted.
CREATE TABLE wechat_product_binds (
    product_id TEXT PRIMARY KEY REFERENCES products (product_id) ON DELETE CASCADE,
    app_id     TEXT NOT NULL REFERENCES wechat_apps (appid),
    wechat_iot TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- A device's WeChat authorisation: NULL (never tried), 'processing', 'passed' or 'failed' with
-- WeChat's errcode and errmsg (or the platform's reason when WeChat did not answer).
ALTER TABLE devices ADD COLUMN wechat_auth_state TEXT;
ALTER TABLE devices ADD COLUMN wechat_auth_errcode BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN wechat_auth_errmsg TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN wechat_auth_at BIGINT;

-- A WeChat user (openid of a WeChat application) bound to a device by its QR code: a listener
-- of the device, told of command results and alarms through `pushappmsg` with `push_token`.
CREATE TABLE wechat_user_binds (
    appid      TEXT NOT NULL REFERENCES wechat_apps (appid) ON DELETE CASCADE,
    openid     TEXT NOT NULL,
    deviceid   TEXT NOT NULL REFERENCES devices (deviceid) ON DELETE CASCADE,
    push_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (appid, openid, deviceid)
);
CREATE INDEX wechat_user_binds_device ON wechat_user_binds (deviceid);

-- A device's threshold alarm rules, the JSON array its owner posted.
CREATE TABLE alarm_rules (
    deviceid   TEXT PRIMARY KEY REFERENCES devices (deviceid) ON DELETE CASCADE,
    rules      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
