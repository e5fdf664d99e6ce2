-- What the REST API adds: families and rooms, where each user keeps each thing, device details,
-- groups, history, messages, verification codes and the firmware catalogue.
-- Times in this migration are milliseconds since the epoch unless a column says `_secs`.

ALTER TABLE users ADD COLUMN current_family TEXT;
ALTER TABLE users ADD COLUMN accept_email_ad INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN account_consult INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN lang TEXT NOT NULL DEFAULT 'en';

CREATE TABLE families (
    id         TEXT PRIMARY KEY,
    apikey     TEXT NOT NULL REFERENCES users (apikey) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    idx        INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX families_user ON families (apikey);

CREATE TABLE rooms (
    id       TEXT PRIMARY KEY,
    familyid TEXT NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    name     TEXT NOT NULL,
    idx      INTEGER NOT NULL
);
CREATE INDEX rooms_family ON rooms (familyid);

-- Where one user keeps one thing: a device they own (kind 1), a device shared with them (kind 2)
-- or one of their groups (kind 3). A family's thing list is its rows here, by idx.
CREATE TABLE things (
    apikey   TEXT NOT NULL REFERENCES users (apikey) ON DELETE CASCADE,
    kind     INTEGER NOT NULL CHECK (kind IN (1, 2, 3)),
    thingid  TEXT NOT NULL,
    familyid TEXT NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    roomid   TEXT REFERENCES rooms (id) ON DELETE SET NULL,
    idx      INTEGER NOT NULL,
    PRIMARY KEY (apikey, thingid)
);
CREATE INDEX things_family ON things (familyid, idx);
CREATE INDEX things_thing ON things (thingid);

-- Factory details of a device and what its owner set.
ALTER TABLE devices ADD COLUMN settings TEXT NOT NULL DEFAULT '{"opsNotify":0,"opsHistory":1,"alarmNotify":1}';
ALTER TABLE devices ADD COLUMN tags TEXT;
ALTER TABLE devices ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
ALTER TABLE devices ADD COLUMN chipid TEXT;
ALTER TABLE devices ADD COLUMN brand_name TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN brand_logo TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN product_model TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN dev_config TEXT;
ALTER TABLE devices ADD COLUMN gsm_id TEXT;
ALTER TABLE devices ADD COLUMN owned_at INTEGER;
CREATE UNIQUE INDEX devices_gsm ON devices (gsm_id);

ALTER TABLE shares ADD COLUMN comment TEXT NOT NULL DEFAULT '';

CREATE TABLE device_groups (
    id            TEXT PRIMARY KEY,
    apikey        TEXT NOT NULL REFERENCES users (apikey) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    main_deviceid TEXT NOT NULL,
    uiid          INTEGER NOT NULL,
    params        TEXT NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL
);
CREATE INDEX groups_user ON device_groups (apikey);

CREATE TABLE group_members (
    groupid  TEXT NOT NULL REFERENCES device_groups (id) ON DELETE CASCADE,
    deviceid TEXT NOT NULL,
    PRIMARY KEY (groupid, deviceid)
);
CREATE INDEX group_members_device ON group_members (deviceid);

CREATE TABLE history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    deviceid    TEXT NOT NULL,
    user_agent  TEXT NOT NULL,
    ops_switchs TEXT,
    request     TEXT NOT NULL,
    ops_account TEXT,
    ops_time    INTEGER NOT NULL
);
CREATE INDEX history_device ON history (deviceid, ops_time);

CREATE TABLE messages (
    msgid    TEXT PRIMARY KEY,
    apikey   TEXT NOT NULL REFERENCES users (apikey) ON DELETE CASCADE,
    familyid TEXT,
    msg_type TEXT NOT NULL,
    message  TEXT NOT NULL,
    date     INTEGER NOT NULL
);
CREATE INDEX messages_user ON messages (apikey, date);

-- One live code per address and purpose (0 register, 1 reset password, 3 close account, 4 login);
-- only its SHA-256 is kept.
CREATE TABLE verification_codes (
    target     TEXT NOT NULL,
    purpose    INTEGER NOT NULL,
    code_hash  TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (target, purpose)
);

-- Sends per address, for the 3/minute, 20/hour, 100/day limits.
CREATE TABLE code_sends (
    target  TEXT NOT NULL,
    sent_at INTEGER NOT NULL
);
CREATE INDEX code_sends_target ON code_sends (target, sent_at);

CREATE TABLE firmware (
    model      TEXT NOT NULL,
    version    TEXT NOT NULL,
    bins       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (model, version)
);
