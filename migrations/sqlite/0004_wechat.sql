-- WeChat applications the operator added (`switchyard admin wechat-app add`): the appid and
-- secret the WeChat connector fetches access tokens with. The secret is never printed back.
CREATE TABLE wechat_apps (
    appid      TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
