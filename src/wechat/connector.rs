//! The WeChat hardware backend calls of seed 001 (`/wxa/business/runtime/*`) and the access
//! token they need (`/cgi-bin/token`).
//!
//! Every call runs under one deadline ([`Options::timeout`], 5 s by default) that covers the
//! token fetch, a token refresh and every retry. Network errors and 5xx answers are retried with
//! exponential backoff up to [`Options::attempts`] times; a 4xx answer is final, and so is any
//! errcode, except that a token errcode (see [`super::error::TOKEN_ERRCODES`]) makes the
//! connector fetch a new token once and repeat the call. Answers are read up to
//! [`MAX_ANSWER_BYTES`]. Errors never carry a URL (it holds the secret or the token).

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::WeChatError;
use super::token::TokenCache;
pub use crate::store::AppCredentials;

/// WeChat's public API host.
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";
/// The seed's limit on a push message: 5 KB, counted in bytes of its UTF-8 text.
pub const MAX_PUSH_BYTES: usize = 5 * 1024;
/// The default deadline of one call, retries included (seed 000 waits 5 s for WeChat).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger answers are treated as unreadable.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How the connector calls WeChat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The deadline of one call, everything included.
    pub timeout: Duration,
    /// Tries per request when the network fails or WeChat answers 5xx (1 = no retry).
    pub attempts: u32,
    /// The wait before the first retry; doubled each time, with up to a quarter added at random.
    pub backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { timeout: DEFAULT_TIMEOUT, attempts: 3, backoff: Duration::from_millis(100) }
    }
}

/// `createproduct`'s request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateProduct {
    pub english_product_name: String,
    pub chinese_product_name: String,
    pub device_default_name: String,
}

/// The WeChat connector. Clones share the HTTP client and the token cache.
#[derive(Clone)]
pub struct WeChat {
    inner: Arc<Inner>,
    options: Options,
}

struct Inner {
    http: reqwest::Client,
    /// Without a trailing `/`.
    base: String,
    tokens: TokenCache,
}

impl std::fmt::Debug for WeChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeChat").field("base", &self.inner.base).field("options", &self.options).finish()
    }
}

/// The part of every answer the connector reads itself.
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// Checks a base URL setting: `http://` or `https://` with a host. Answers it without a
/// trailing `/`.
pub fn check_base(base: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(base.trim()).map_err(|e| format!("`{base}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{base}` must be an http:// or https:// URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{base}` must not have a query or fragment"));
    }
    Ok(base.trim().trim_end_matches('/').to_owned())
}

impl WeChat {
    /// A connector for the WeChat API at `base` (see [`DEFAULT_API_BASE`]).
    pub fn new(base: &str, options: Options) -> Result<WeChat, WeChatError> {
        crate::tls::install_provider();
        let base = check_base(base).map_err(WeChatError::Setup)?;
        let http = reqwest::Client::builder()
            .connect_timeout(options.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WeChatError::Setup(e.to_string()))?;
        Ok(WeChat { inner: Arc::new(Inner { http, base, tokens: TokenCache::default() }), options })
    }

    pub fn base(&self) -> &str {
        &self.inner.base
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The same connector (client and tokens shared) with another deadline per call, e.g. a
    /// longer one for pushes retried in the background.
    pub fn with_timeout(&self, timeout: Duration) -> WeChat {
        WeChat { inner: self.inner.clone(), options: Options { timeout, ..self.options.clone() } }
    }

    /// Forgets the application's cached token (e.g. after its secret changed).
    pub async fn forget_token(&self, appid: &str) {
        self.inner.tokens.forget(appid).await;
    }

    /// `createproduct`: a new hardware product; answers its `product_id`.
    pub async fn create_product(&self, app: &AppCredentials, product: &CreateProduct) -> Result<u64, WeChatError> {
        let rest = self.call(app, "createproduct", &json!(product)).await?;
        number(&rest, "product_id")
    }

    /// `registerpubkey`: submits the product's public key; answers its `key_version`.
    pub async fn register_pubkey(&self, app: &AppCredentials, product_id: u64, pubkey: &str) -> Result<u64, WeChatError> {
        let rest = self.call(app, "registerpubkey", &json!({"product_id": product_id, "pubkey": pubkey})).await?;
        number(&rest, "key_version")
    }

    /// `adddevice`: pre-registers devices of the product with WeChat (device authorisation).
    pub async fn add_devices(&self, app: &AppCredentials, product_id: u64, device_ids: &[String]) -> Result<(), WeChatError> {
        self.call(app, "adddevice", &json!({"product_id": product_id, "device_id_list": device_ids})).await.map(drop)
    }

    /// `bindwxaapp`: lets the mini-program `wxa_appid` run the product.
    pub async fn bind_wxa_app(&self, app: &AppCredentials, product_id: u64, wxa_appid: &str) -> Result<(), WeChatError> {
        self.call(app, "bindwxaapp", &json!({"product_id": product_id, "appid": wxa_appid})).await.map(drop)
    }

    /// `pushappmsg`: pushes `msg` to the WeChat user holding `push_token`. A message over
    /// [`MAX_PUSH_BYTES`] is refused with 45002 before anything is sent.
    pub async fn push_app_msg(&self, app: &AppCredentials, push_token: &str, msg: &str) -> Result<(), WeChatError> {
        if msg.len() > MAX_PUSH_BYTES {
            return Err(WeChatError::MessageTooLong { bytes: msg.len(), max: MAX_PUSH_BYTES });
        }
        self.call(app, "pushappmsg", &json!({"msg": msg, "push_token": push_token})).await.map(drop)
    }

    /// One business call under the deadline: token, request, and one token refresh when
    /// WeChat says the token is no good. Answers the fields besides errcode and errmsg.
    async fn call(&self, app: &AppCredentials, name: &str, body: &Value) -> Result<serde_json::Map<String, Value>, WeChatError> {
        let work = async {
            let token = self.token(app).await?;
            match self.post(name, &token, body).await {
                Err(e) if e.is_token_invalid() => {
                    tracing::debug!(appid = %app.appid, call = name, errcode = ?e.errcode(), "WeChat refused the access token; fetching a new one");
                    self.inner.tokens.invalidate(&app.appid, &token).await;
                    let token = self.token(app).await?;
                    self.post(name, &token, body).await
                }
                other => other,
            }
        };
        let out = tokio::time::timeout(self.options.timeout, work).await.unwrap_or(Err(WeChatError::Timeout(self.options.timeout)));
        if let Err(e) = &out {
            tracing::debug!(appid = %app.appid, call = name, error = %e, "WeChat call failed");
        }
        out
    }

    async fn token(&self, app: &AppCredentials) -> Result<String, WeChatError> {
        self.inner.tokens.get(&app.appid, || self.fetch_token(app)).await
    }

    /// `GET /cgi-bin/token?grant_type=client_credential&appid=…&secret=…`.
    async fn fetch_token(&self, app: &AppCredentials) -> Result<(String, Duration), WeChatError> {
        let mut url = self.url("/cgi-bin/token")?;
        url.query_pairs_mut()
            .append_pair("grant_type", "client_credential")
            .append_pair("appid", &app.appid)
            .append_pair("secret", &app.secret);
        let answer = self.send(|| self.inner.http.get(url.clone())).await?;
        if answer.errcode != 0 {
            return Err(WeChatError::Token { appid: app.appid.clone(), errcode: answer.errcode, errmsg: answer.errmsg });
        }
        let token = answer
            .rest
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| WeChatError::Decode("the token answer has no access_token".to_owned()))?;
        let expires_in = number(&answer.rest, "expires_in")?;
        Ok((token.to_owned(), Duration::from_secs(expires_in)))
    }

    /// `POST /wxa/business/runtime/<name>?access_token=…` with a JSON body.
    async fn post(&self, name: &str, token: &str, body: &Value) -> Result<serde_json::Map<String, Value>, WeChatError> {
        let mut url = self.url(&format!("/wxa/business/runtime/{name}"))?;
        url.query_pairs_mut().append_pair("access_token", token);
        let answer = self.send(|| self.inner.http.post(url.clone()).json(body)).await?;
        if answer.errcode != 0 {
            return Err(WeChatError::from_errcode(answer.errcode, answer.errmsg));
        }
        Ok(answer.rest)
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, WeChatError> {
        reqwest::Url::parse(&format!("{}{path}", self.inner.base)).map_err(|e| WeChatError::Setup(e.to_string()))
    }

    /// Sends the request built by `request`, retrying network errors and 5xx answers with
    /// backoff; reads a 2xx answer's JSON.
    async fn send(&self, request: impl Fn() -> reqwest::RequestBuilder) -> Result<Answer, WeChatError> {
        let attempts = self.options.attempts.max(1);
        let mut last = WeChatError::Network("no attempt made".to_owned());
        for attempt in 0..attempts {
            if attempt > 0 {
                let base = self.options.backoff.saturating_mul(1 << (attempt - 1).min(10));
                let jitter = base.mul_f64(rand::rng().random_range(0.0..0.25));
                tracing::debug!(attempt, error = %last, "retrying a WeChat request");
                tokio::time::sleep(base + jitter).await;
            }
            let response = match request().send().await {
                Ok(r) => r,
                Err(e) if e.is_builder() => return Err(WeChatError::Setup(describe(e))),
                Err(e) => {
                    last = WeChatError::Network(describe(e));
                    continue;
                }
            };
            let status = response.status();
            if status.is_server_error() {
                last = WeChatError::Status(status.as_u16());
                continue;
            }
            if !status.is_success() {
                return Err(WeChatError::Status(status.as_u16()));
            }
            match read_capped(response).await {
                Ok(bytes) => return serde_json::from_slice(&bytes).map_err(|e| WeChatError::Decode(e.to_string())),
                Err(e @ WeChatError::Network(_)) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

/// The body, up to [`MAX_ANSWER_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, WeChatError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| WeChatError::Network(describe(e)))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(WeChatError::Decode(format!("answer larger than {MAX_ANSWER_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error and its causes, without the URL (it holds the secret or the token).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A non-negative number field of an answer (WeChat sends numbers; a numeric string is taken too).
fn number(rest: &serde_json::Map<String, Value>, key: &str) -> Result<u64, WeChatError> {
    match rest.get(key) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| WeChatError::Decode(format!("the answer has no numeric {key}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(check_base("https://api.weixin.qq.com/").unwrap(), "https://api.weixin.qq.com");
        assert_eq!(check_base("http://127.0.0.1:9000/gw").unwrap(), "http://127.0.0.1:9000/gw");
        assert!(check_base("ftp://x").is_err());
        assert!(check_base("api.weixin.qq.com").is_err());
        assert!(check_base("https://x/?a=1").is_err());
    }

    #[test]
    fn credentials_debug_hides_the_secret() {
        let app = AppCredentials { appid: "wx1".into(), secret: "topsecret".into() };
        assert!(!format!("{app:?}").contains("topsecret"));
    }

    #[tokio::test]
    async fn oversized_push_is_refused_locally() {
        // Nothing listens at this address; the size check answers before any connection.
        let wechat = WeChat::new("http://127.0.0.1:9", Options::default()).unwrap();
        let app = AppCredentials { appid: "wx1".into(), secret: "s".into() };
        let msg = "é".repeat(MAX_PUSH_BYTES / 2 + 1);
        let err = wechat.push_app_msg(&app, "pt", &msg).await.unwrap_err();
        assert_eq!(err.errcode(), Some(45002));
        assert!(matches!(err, WeChatError::MessageTooLong { bytes, .. } if bytes == MAX_PUSH_BYTES + 2));
        wechat.push_app_msg(&app, "pt", &"x".repeat(MAX_PUSH_BYTES + 1)).await.unwrap_err();
    }
}
