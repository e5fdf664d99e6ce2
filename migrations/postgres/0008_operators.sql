-- Operators: who may log in to the dashboard on the operator listener. They are not app users:
-- they have no apikey, devices or tokens, and are made only by `switchyard admin operator add`.
-- Times in this migration are milliseconds since the epoch.

CREATE TABLE operators (
    email         TEXT PRIMARY KEY,
    -- argon2id PHC string, as users.password_hash
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

-- A dashboard login: the SHA-256 of the cookie's random token, whose operator, and when it ends.
-- Removing the operator ends their sessions.
CREATE TABLE operator_sessions (
    token_hash TEXT PRIMARY KEY,
    email      TEXT NOT NULL REFERENCES operators (email) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX operator_sessions_expiry ON operator_sessions (expires_at);
