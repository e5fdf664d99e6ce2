-- Accounts, app ids, tokens, devices and shares: what the realtime hub needs.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('acl_version', 0);

CREATE TABLE apps (
    appid      TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    apikey        TEXT PRIMARY KEY,
    email         TEXT UNIQUE,
    phone         TEXT UNIQUE,
    country_code  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    nickname      TEXT NOT NULL DEFAULT '',
    region        TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

-- Only the SHA-256 of a token is kept; `pair` ties an access token to its refresh token.
CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('at', 'rt')),
    pair       TEXT NOT NULL,
    apikey     TEXT NOT NULL REFERENCES users (apikey) ON DELETE CASCADE,
    appid      TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX tokens_pair ON tokens (pair);

CREATE TABLE devices (
    deviceid       TEXT PRIMARY KEY,
    factory_apikey TEXT NOT NULL,
    model          TEXT NOT NULL DEFAULT '',
    uiid           BIGINT NOT NULL DEFAULT 1,
    owner          TEXT REFERENCES users (apikey) ON DELETE SET NULL,
    name           TEXT NOT NULL DEFAULT '',
    params         TEXT NOT NULL DEFAULT '{}',
    created_at     BIGINT NOT NULL
);
CREATE INDEX devices_owner ON devices (owner);

CREATE TABLE shares (
    deviceid   TEXT NOT NULL REFERENCES devices (deviceid) ON DELETE CASCADE,
    apikey     TEXT NOT NULL REFERENCES users (apikey) ON DELETE CASCADE,
    permit     BIGINT NOT NULL DEFAULT 15,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (deviceid, apikey)
);
CREATE INDEX shares_user ON shares (apikey);
