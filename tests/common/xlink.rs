//! A client for seed 003's routes as its apps call them: `Access-Token` and nothing else; bare
//! JSON bodies, errors as HTTP status with `{"error":{"code","msg"}}`.
#![allow(dead_code)]

use reqwest::Method;
use serde_json::{Value, json};
use switchyard::store::NewProduct;

use super::{TestHub, TestUser};

/// An answer: HTTP status and the body (`Value::Null` when empty).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub raw: String,
}

impl Reply {
    /// Asserts HTTP 200 and returns the body.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "expected success, got {self:?}");
        &self.body
    }

    /// Asserts HTTP 200 with an empty body.
    #[track_caller]
    pub fn empty(&self) {
        assert_eq!((self.status, self.raw.as_str()), (200, ""), "expected an empty success, got {self:?}");
    }

    /// Asserts a failure: HTTP status and the body's code.
    #[track_caller]
    pub fn fails(&self, status: u16, code: i64) -> &Self {
        assert_eq!((self.status, self.body["error"]["code"].as_i64()), (status, Some(code)), "expected {status}/{code}, got {self:?}");
        assert!(self.body["error"]["msg"].as_str().is_some_and(|m| !m.is_empty()), "no msg: {self:?}");
        self
    }

    pub fn code(&self) -> Option<i64> {
        self.body["error"]["code"].as_i64()
    }
}

pub struct Xlink<'a> {
    pub hub: &'a TestHub,
    pub token: Option<String>,
    pub apikey: String,
}

/// Calls as `user`, with `Access-Token` only.
pub fn xlink<'a>(hub: &'a TestHub, user: &TestUser) -> Xlink<'a> {
    Xlink { hub, token: Some(user.at.clone()), apikey: user.apikey.as_str().to_owned() }
}

impl Xlink<'_> {
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let mut req = self.hub.http_client().request(method, format!("{}{path}", self.hub.base()));
        if let Some(t) = &self.token {
            req = req.header("Access-Token", t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let raw = res.text().await.unwrap_or_default();
        let body =
            if raw.is_empty() { Value::Null } else { serde_json::from_str(&raw).unwrap_or_else(|_| panic!("not JSON ({status}): {raw}")) };
        Reply { status, body, raw }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    /// `POST /v2/user/{me}/register_device`.
    pub async fn register(&self, product: &str, mac: &str) -> Reply {
        self.post(&format!("/v2/user/{}/register_device", self.apikey), json!({"product_id": product, "mac": mac})).await
    }

    /// `GET /v2/user/{me}/subscribe/devices?version=…`.
    pub async fn devices(&self, version: Option<&str>) -> Reply {
        let q = version.map(|v| format!("?version={v}")).unwrap_or_default();
        self.get(&format!("/v2/user/{}/subscribe/devices{q}", self.apikey)).await
    }

    /// `POST /v2/share/device`; answers the invite code.
    pub async fn invite(&self, device: &str, mode: &str, user: Option<&str>) -> Reply {
        self.post("/v2/share/device", json!({"device_id": device, "user": user, "expire": 3600, "mode": mode})).await
    }

    pub async fn accept(&self, code: &str) -> Reply {
        self.post("/v2/share/device/accept", json!({"invite_code": code})).await
    }

    pub async fn unsubscribe(&self, device: &str) -> Reply {
        self.post(&format!("/v2/user/{}/unsubscribe", self.apikey), json!({"device_id": device})).await
    }

    /// The caller's invite list.
    pub async fn invites(&self) -> Vec<Value> {
        self.get("/v2/share/device/list").await.ok().as_array().expect("a bare array").clone()
    }
}

/// Adds a product; `open` lets users register its devices.
pub async fn product(hub: &TestHub, id: &str, open: bool) {
    let p = NewProduct { product_id: id.into(), name: format!("{id} lamp"), model: "EMU".into(), allow_user_register: open, owner: None };
    hub.hub.store.add_product(&p).await.unwrap();
}

/// Runs SQL against the hub's store directly (to age an invite, say), on either backend.
pub async fn sql(hub: &TestHub, statement: &str) {
    use sqlx::Connection;
    let url = match &hub.hub.config.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", hub.hub.config.data_dir.join("switchyard.db").display()),
    };
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned())).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}
