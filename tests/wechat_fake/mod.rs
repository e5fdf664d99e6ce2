//! A fake WeChat backend for tests: a real HTTP server on loopback (port 0) speaking the
//! documented shapes of `GET /cgi-bin/token` and `POST /wxa/business/runtime/{createproduct,
//! registerpubkey, adddevice, bindwxaapp, pushappmsg}`.
//!
//! It checks what a real backend checks (the appid and secret, the access token, required
//! fields, the 5 KB push limit) and records every request it received, so tests assert on the
//! calls themselves. It can be told to fail the next calls to one endpoint: with an errcode
//! (40101, 45002, 48012, …), an HTTP status, or a stall before answering.
//!
//! It runs on a thread of its own with its own runtime, so synchronous tests (that run the
//! binary) and async ones (even with paused time) use it alike. Dropping it stops it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// What the fake answers instead of the normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `{"errcode": N, "errmsg": …}` with HTTP 200.
    Errcode(i64),
    /// This HTTP status with a plain-text body.
    Status(u16),
    /// Waits this long, then answers normally.
    Stall(Duration),
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// e.g. `/cgi-bin/token`, `/wxa/business/runtime/pushappmsg`.
    pub path: String,
    /// The last path segment: `token`, `createproduct`, `pushappmsg`, …
    pub name: String,
    pub query: BTreeMap<String, String>,
    /// The JSON body (`Null` when there was none or it was not JSON).
    pub body: Value,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    apps: HashMap<String, String>,
    tokens: HashSet<String>,
    issued: u64,
    expires_in: Option<u64>,
    next_product: u64,
    key_versions: HashMap<u64, u64>,
    calls: Vec<Call>,
    faults: HashMap<String, VecDeque<Fault>>,
}

type Shared = Arc<Mutex<Inner>>;

pub struct FakeWeChat {
    pub addr: SocketAddr,
    state: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeWeChat {
    pub fn start() -> FakeWeChat {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the fake WeChat backend");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Shared = Arc::new(Mutex::new(Inner { next_product: 1000, ..Default::default() }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    r = axum::serve(listener, app) => r.unwrap(),
                    _ = stopped => {}
                }
            });
            // Stalled answers are dropped with the runtime.
            rt.shutdown_background();
        });
        FakeWeChat { addr, state, stop: Some(stop), thread: Some(thread) }
    }

    /// The base URL to give the connector (`--wechat-api-base`).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes the token endpoint accept this appid and secret.
    pub fn add_app(&self, appid: &str, secret: &str) {
        self.lock().apps.insert(appid.to_owned(), secret.to_owned());
    }

    /// `expires_in` of the tokens issued from now on (7200 by default).
    pub fn set_expires_in(&self, secs: u64) {
        self.lock().expires_in = Some(secs);
    }

    /// The next `times` requests to `name` (`token`, `pushappmsg`, …) get `fault`.
    pub fn fail(&self, name: &str, fault: Fault, times: usize) {
        let mut s = self.lock();
        let queue = s.faults.entry(name.to_owned()).or_default();
        queue.extend(std::iter::repeat_n(fault, times));
    }

    /// Every token issued so far stops being valid: calls with one are answered 48012.
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Every request received so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The requests to `name`, in order.
    pub fn calls_to(&self, name: &str) -> Vec<Call> {
        self.lock().calls.iter().filter(|c| c.name == name).cloned().collect()
    }

    /// The names of the requests received, in order (`["token", "pushappmsg", …]`).
    pub fn names(&self) -> Vec<String> {
        self.lock().calls.iter().map(|c| c.name.clone()).collect()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Waits until `n` requests to `name` have arrived (at most `within`); answers them.
    pub async fn wait_for(&self, name: &str, n: usize, within: Duration) -> Vec<Call> {
        let deadline = Instant::now() + within;
        loop {
            let calls = self.calls_to(name);
            if calls.len() >= n || Instant::now() >= deadline {
                return calls;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.lock().unwrap()
    }
}

impl Drop for FakeWeChat {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn errcode(code: i64, msg: &str) -> Response {
    axum::Json(json!({"errcode": code, "errmsg": msg})).into_response()
}

fn ok(mut extra: Value) -> Response {
    extra["errcode"] = json!(0);
    extra["errmsg"] = json!("ok");
    axum::Json(extra).into_response()
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let name = path.rsplit('/').next().unwrap_or("").to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fault = {
        let mut s = state.lock().unwrap();
        s.calls.push(Call {
            method: method.to_string(),
            path: path.clone(),
            name: name.clone(),
            query: query.clone(),
            body: body.clone(),
            at: Instant::now(),
        });
        s.faults.get_mut(&name).and_then(VecDeque::pop_front)
    };
    match fault {
        Some(Fault::Errcode(code)) => return errcode(code, "fault injected by the test"),
        Some(Fault::Status(status)) => return (StatusCode::from_u16(status).unwrap(), "fault injected by the test").into_response(),
        Some(Fault::Stall(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let mut s = state.lock().unwrap();
    if path == "/cgi-bin/token" && method == Method::GET {
        if query.get("grant_type").map(String::as_str) != Some("client_credential") {
            return errcode(40002, "invalid grant_type");
        }
        let Some(secret) = query.get("appid").and_then(|a| s.apps.get(a)) else { return errcode(40013, "invalid appid") };
        if query.get("secret") != Some(secret) {
            return errcode(40125, "invalid appsecret");
        }
        s.issued += 1;
        let token = format!("fake-token-{}", s.issued);
        s.tokens.insert(token.clone());
        let expires_in = s.expires_in.unwrap_or(7200);
        return axum::Json(json!({"access_token": token, "expires_in": expires_in})).into_response();
    }
    let Some(call) = path.strip_prefix("/wxa/business/runtime/") else { return StatusCode::NOT_FOUND.into_response() };
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    if !query.get("access_token").is_some_and(|t| s.tokens.contains(t)) {
        return errcode(48012, "token无效");
    }
    let text = |key: &str| body.get(key).and_then(Value::as_str).filter(|v| !v.is_empty());
    let product = body.get("product_id").and_then(Value::as_u64);
    match call {
        "createproduct" => {
            if text("english_product_name").is_none() || text("chinese_product_name").is_none() || text("device_default_name").is_none() {
                return errcode(40101, "参数错误");
            }
            s.next_product += 1;
            ok(json!({"product_id": s.next_product - 1}))
        }
        "registerpubkey" => {
            let (Some(product), Some(_)) = (product, text("pubkey")) else { return errcode(40101, "参数错误") };
            let version = s.key_versions.entry(product).or_default();
            *version += 1;
            ok(json!({"key_version": *version}))
        }
        "adddevice" => {
            let ids = body.get("device_id_list").and_then(Value::as_array);
            if product.is_none() || !ids.is_some_and(|l| !l.is_empty() && l.iter().all(Value::is_string)) {
                return errcode(40101, "参数错误");
            }
            ok(json!({}))
        }
        "bindwxaapp" => {
            if product.is_none() || text("appid").is_none() {
                return errcode(40101, "参数错误");
            }
            ok(json!({}))
        }
        "pushappmsg" => {
            let (Some(msg), Some(_)) = (body.get("msg").and_then(Value::as_str), text("push_token")) else {
                return errcode(40101, "参数错误");
            };
            if msg.len() > 5 * 1024 {
                return errcode(45002, "推送内容长度超过限制");
            }
            ok(json!({}))
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
