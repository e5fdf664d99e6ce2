//! A REST client for tests: Bearer calls with the seed's envelope taken apart.
#![allow(dead_code)]

use reqwest::Method;
use serde_json::Value;

use super::{APPID, TestHub, TestUser};

/// An answer: HTTP status and the envelope's parts.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub error: i64,
    pub msg: String,
    pub data: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// Asserts success (`error` 0, HTTP 200) and returns `data`.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!((self.status, self.error), (200, 0), "expected success, got {self:?}");
        &self.data
    }

    /// Asserts the envelope's error code.
    #[track_caller]
    pub fn fails(&self, code: i64) -> &Self {
        assert_eq!(self.error, code, "expected error {code}, got {self:?}");
        self
    }
}

/// Calls the REST API of `hub` as `user` (Bearer token, app id header).
pub struct Api<'a> {
    pub hub: &'a TestHub,
    pub at: String,
}

pub fn api<'a>(hub: &'a TestHub, user: &TestUser) -> Api<'a> {
    Api { hub, at: user.at.clone() }
}

impl Api<'_> {
    /// Any method; `query` is appended raw (`a=1&b=2`), `body` sent as JSON when given.
    pub async fn call(&self, method: Method, path: &str, query: &str, body: Option<&Value>) -> Answer {
        let url = if query.is_empty() { format!("{}{path}", self.hub.base()) } else { format!("{}{path}?{query}", self.hub.base()) };
        let mut req =
            self.hub.http_client().request(method, url).header("authorization", format!("Bearer {}", self.at)).header("x-ck-appid", APPID);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        Answer {
            status,
            error: v["error"].as_i64().unwrap_or(-1),
            msg: v["msg"].as_str().unwrap_or("").to_owned(),
            data: v["data"].clone(),
            headers,
        }
    }

    pub async fn get(&self, path: &str, query: &str) -> Answer {
        self.call(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, "", Some(&body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, "", Some(&body)).await
    }

    /// DELETE with query parameters (the seed's DELETE routes take them in the query string).
    pub async fn delete(&self, path: &str, query: &str) -> Answer {
        self.call(Method::DELETE, path, query, None).await
    }
}
