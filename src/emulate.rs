//! Emulators for the walk-through, for people testing their own clients, and for tests: a device
//! that behaves like real firmware (dispatch, register, date, state reports, heartbeats, acks,
//! applying `switch`/`switches`), and an app that logs in, dispatches, goes online and sends a
//! command or listens. Both print what happens as JSON lines on stdout; logs go to stderr.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// A byte stream a WebSocket can run over: TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type ClientWs = WebSocketStream<Box<dyn Io>>;

/// Where and how to reach a hub.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Base URL of the hub's HTTP side (http:// or https://)
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    pub server: String,
    /// PEM certificate to trust for https/wss (e.g. certs/dev-cert.pem); default: system roots
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl Target {
    fn tls(&self) -> Result<Arc<ClientConfig>> {
        crate::tls::install_provider();
        let config = match &self.ca {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path).with_context(|| format!("reading {}", path.display()))? {
                    roots.add(cert.with_context(|| format!("reading {}", path.display()))?)?;
                }
                ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()
            }
            None => {
                use rustls_platform_verifier::ConfigVerifierExt;
                ClientConfig::with_platform_verifier()?
            }
        };
        Ok(Arc::new(config))
    }

    fn http(&self) -> Result<reqwest::Client> {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if self.server.starts_with("https://") {
            b = b.tls_backend_preconfigured((*self.tls()?).clone());
        }
        Ok(b.build()?)
    }

    fn base(&self) -> &str {
        self.server.trim_end_matches('/')
    }

    /// The WebSocket URL: what dispatch said for an https server; for a plain-HTTP server the same
    /// host and port (dispatch advertises the TLS listener).
    fn ws_url(&self, dispatch: &Value) -> Result<String> {
        if self.server.starts_with("https://") {
            let host = dispatch["domain"].as_str().ok_or_else(|| anyhow!("dispatch reply has no domain: {dispatch}"))?;
            let port = dispatch["port"].as_u64().ok_or_else(|| anyhow!("dispatch reply has no port: {dispatch}"))?;
            Ok(format!("wss://{}:{port}/api/ws", bracket(host)))
        } else if let Some(rest) = self.server.strip_prefix("http://") {
            Ok(format!("ws://{}/api/ws", rest.trim_end_matches('/')))
        } else {
            bail!("--server must start with http:// or https://, not `{}`", self.server)
        }
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_owned() }
}

/// Opens a WebSocket to `url` (ws:// or wss://), trusting what `tls` trusts.
pub async fn connect(url: &str, tls: Option<Arc<ClientConfig>>) -> Result<ClientWs> {
    let uri: tokio_tungstenite::tungstenite::http::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    let secure = uri.scheme_str() == Some("wss");
    let host = uri.host().ok_or_else(|| anyhow!("no host in {url}"))?.trim_matches(['[', ']']).to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.with_context(|| format!("connecting to {host}:{port}"))?;
    tcp.set_nodelay(true)?;
    let io: Box<dyn Io> = if secure {
        let tls = tls.ok_or_else(|| anyhow!("wss needs a TLS configuration"))?;
        let name = ServerName::try_from(host.clone())?;
        Box::new(tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.context("TLS handshake")?)
    } else {
        Box::new(tcp)
    };
    let (ws, _) = tokio_tungstenite::client_async(url, io).await.context("WebSocket handshake")?;
    Ok(ws)
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

async fn send_json(ws: &mut ClientWs, v: &Value) -> Result<()> {
    ws.send(Message::Text(v.to_string().into())).await.context("sending")
}

/// Reads the next JSON frame, answering nothing; `pong` and control frames are skipped.
async fn next_json(ws: &mut ClientWs) -> Result<Value> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str() == "pong" => continue,
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).with_context(|| format!("hub sent non-JSON: {t}")),
            Some(Ok(Message::Close(c))) => bail!("hub closed the connection: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("connection failed: {e}"),
            None => bail!("connection closed"),
        }
    }
}

fn print_line(v: &Value) {
    println!("{v}");
}

// --- device ----------------------------------------------------------------------------------

#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    #[arg(long)]
    pub deviceid: String,
    #[arg(long)]
    pub factory_apikey: String,
    #[arg(long, default_value = "EMU-SW1")]
    pub model: String,
    /// Initial state, a JSON object
    #[arg(long, default_value = r#"{"switch":"off","fwVersion":"1.0.0","rssi":-40}"#)]
    pub params: String,
    /// Never ack commands (to see the hub answer 504)
    #[arg(long)]
    pub mute: bool,
    /// Register with `tmpReg` (a device not yet bound to a user)
    #[arg(long)]
    pub tmp_reg: bool,
    /// Exit when the connection is lost instead of reconnecting
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub target: Target,
}

/// Runs the device until Ctrl-C. Like firmware, it dispatches and registers again when the
/// connection is lost (after 1, 2, 4 … 30 s); a refused registration ends it with an error.
pub async fn device(args: DeviceArgs) -> Result<()> {
    let mut state: Map<String, Value> = serde_json::from_str(&args.params).context("--params must be a JSON object")?;
    let mut backoff = Duration::from_secs(1);
    loop {
        match device_session(&args, &mut state).await {
            Ok(Session::Stopped) => return Ok(()),
            Ok(Session::Lost(why)) => {
                tracing::warn!(reason = %why, retry_in = ?backoff, "connection lost, reconnecting");
                backoff = Duration::from_secs(1);
            }
            Err(e) if args.once => return Err(e),
            Err(e) if e.downcast_ref::<Refused>().is_some() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "cannot reach the hub, retrying");
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
        if args.once {
            bail!("connection lost");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// The hub refused the registration: retrying will not help.
#[derive(Debug, thiserror::Error)]
#[error("registration refused: {0}")]
pub struct Refused(pub Value);

enum Session {
    Stopped,
    Lost(String),
}

async fn device_session(args: &DeviceArgs, state: &mut Map<String, Value>) -> Result<Session> {
    let http = args.target.http()?;
    let dispatch: Value = http
        .post(format!("{}/dispatch/device", args.target.base()))
        .json(&json!({"accept":"ws;2","version":2,"ts":0,"deviceid":args.deviceid,"apikey":args.factory_apikey,"model":args.model,"romVersion":"1.0.0"}))
        .send()
        .await
        .context("dispatch")?
        .json()
        .await
        .context("dispatch reply")?;
    tracing::info!(%dispatch, "dispatched");
    let url = args.target.ws_url(&dispatch)?;
    let tls = if url.starts_with("wss://") { Some(args.target.tls()?) } else { None };
    let mut ws = connect(&url, tls).await?;
    let action = if args.tmp_reg { "tmpReg" } else { "register" };
    send_json(&mut ws, &json!({"userAgent":"device","apikey":args.factory_apikey,"deviceid":args.deviceid,"action":action,"version":2,"romVersion":"1.0.0","model":args.model,"ts":0})).await?;
    let reply = next_json(&mut ws).await?;
    if reply["error"] != 0 {
        return Err(Refused(reply).into());
    }
    let apikey = reply["apikey"].as_str().unwrap_or_default().to_owned();
    let hb = reply["config"]["hbInterval"].as_u64().unwrap_or(145).max(1);
    print_line(&json!({"event":"registered","deviceid":args.deviceid,"apikey":apikey,"hbInterval":hb}));
    let base = json!({"userAgent":"device","apikey":apikey,"deviceid":args.deviceid});
    let with = |extra: Value| {
        let mut v = base.clone();
        v.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        v
    };
    send_json(&mut ws, &with(json!({"action":"date"}))).await?;
    send_json(&mut ws, &with(json!({"action":"update","params":state}))).await?;
    let mut ping = tokio::time::interval(Duration::from_millis(hb * 900));
    ping.tick().await;
    loop {
        let frame = tokio::select! {
            _ = ping.tick() => {
                ws.send(Message::Text(Utf8Bytes::from_static("ping"))).await?;
                continue;
            }
            _ = tokio::signal::ctrl_c() => {
                let _ = ws.close(None).await;
                return Ok(Session::Stopped);
            }
            f = next_json(&mut ws) => match f {
                Ok(f) => f,
                Err(e) => return Ok(Session::Lost(format!("{e:#}"))),
            },
        };
        match frame["action"].as_str() {
            Some("update") => {
                let params = frame["params"].clone();
                print_line(&json!({"event":"command","deviceid":args.deviceid,"params":params}));
                if args.mute {
                    continue;
                }
                apply(state, &params);
                send_json(&mut ws, &with(json!({"error":0,"sequence":frame["sequence"]}))).await?;
                send_json(&mut ws, &with(json!({"action":"update","params":params}))).await?;
                print_line(&json!({"event":"state","deviceid":args.deviceid,"params":state}));
            }
            Some("query") => {
                if args.mute {
                    continue;
                }
                let keys: Vec<String> = serde_json::from_value(frame["params"].clone()).unwrap_or_default();
                let answer: Map<String, Value> = if keys.is_empty() {
                    state.clone()
                } else {
                    keys.iter().filter_map(|k| state.get(k).map(|v| (k.clone(), v.clone()))).collect()
                };
                send_json(&mut ws, &with(json!({"error":0,"sequence":frame["sequence"],"params":answer}))).await?;
            }
            Some("upgrade") => {
                print_line(&json!({"event":"upgrade","deviceid":args.deviceid,"params":frame["params"]}));
                if !args.mute {
                    send_json(&mut ws, &with(json!({"error":0,"sequence":frame["sequence"]}))).await?;
                }
            }
            Some("notify") => {
                print_line(&json!({"event":"notify","deviceid":args.deviceid,"cmd":frame["cmd"]}));
                send_json(&mut ws, &with(json!({"error":0}))).await?;
            }
            Some(other) => tracing::warn!(action = other, "unexpected action from the hub"),
            None => tracing::debug!(%frame, "reply from the hub"),
        }
    }
}

/// Applies a command's params to the state: plain keys replace, `switches` merge by `outlet`.
pub fn apply(state: &mut Map<String, Value>, params: &Value) {
    let Some(obj) = params.as_object() else { return };
    for (k, v) in obj {
        if k == "switches" {
            let current = state.entry("switches").or_insert_with(|| json!([]));
            let (Some(list), Some(changes)) = (current.as_array_mut(), v.as_array()) else { continue };
            for change in changes {
                match list.iter_mut().find(|c| c["outlet"] == change["outlet"]) {
                    Some(slot) => *slot = change.clone(),
                    None => list.push(change.clone()),
                }
            }
        } else {
            state.insert(k.clone(), v.clone());
        }
    }
}

// --- app -------------------------------------------------------------------------------------

#[derive(clap::Args, Debug, Clone)]
pub struct AppArgs {
    #[arg(long)]
    pub appid: String,
    /// The app's secret, the key for the Sign HMAC
    #[arg(long)]
    pub secret: String,
    #[arg(long)]
    pub email: String,
    #[arg(long)]
    pub password: String,
    /// Send an `update` to this device with --params
    #[arg(long, value_name = "DEVICEID", conflicts_with = "query")]
    pub update: Option<String>,
    /// Send a `query` to this device for --keys
    #[arg(long, value_name = "DEVICEID")]
    pub query: Option<String>,
    /// Params of the update, a JSON object
    #[arg(long, default_value = r#"{"switch":"on"}"#)]
    pub params: String,
    /// Comma-separated keys to query (empty: all)
    #[arg(long, default_value = "")]
    pub keys: String,
    /// The owner's apikey, for a device shared with this user (sent with selfApikey)
    #[arg(long, value_name = "APIKEY")]
    pub shared_by: Option<String>,
    /// Print every frame the hub sends for this many seconds (0: until Ctrl-C)
    #[arg(long, value_name = "SECS")]
    pub listen: Option<u64>,
    #[command(flatten)]
    pub target: Target,
}

/// Logs in and returns (at, apikey).
pub async fn login(target: &Target, appid: &str, secret: &str, email: &str, password: &str) -> Result<(String, String)> {
    let body = json!({"email": email, "password": password, "countryCode": "+86"}).to_string();
    let reply: Value = target
        .http()?
        .post(format!("{}/v2/user/login", target.base()))
        .header("X-CK-Appid", appid)
        .header("X-CK-Nonce", "emulator")
        .header("Authorization", format!("Sign {}", crate::auth::sign(secret, body.as_bytes())))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .context("login")?
        .json()
        .await
        .context("login reply")?;
    if reply["error"] != 0 {
        bail!("login refused: {reply}");
    }
    let at = reply["data"]["at"].as_str().unwrap_or_default().to_owned();
    let apikey = reply["data"]["user"]["apikey"].as_str().unwrap_or_default().to_owned();
    Ok((at, apikey))
}

/// Runs the app; returns the process exit code (0 when a command succeeded or none was sent).
pub async fn app(args: AppArgs) -> Result<i32> {
    let (at, apikey) = login(&args.target, &args.appid, &args.secret, &args.email, &args.password).await?;
    let dispatch: Value = args.target.http()?.get(format!("{}/dispatch/app", args.target.base())).send().await?.json().await?;
    let url = args.target.ws_url(&dispatch)?;
    let tls = if url.starts_with("wss://") { Some(args.target.tls()?) } else { None };
    let mut ws = connect(&url, tls).await?;
    let seq = now_ms().to_string();
    send_json(&mut ws, &json!({"action":"userOnline","version":8,"ts":now_ms() / 1000,"at":at,"userAgent":"app","apikey":apikey,"appid":args.appid,"nonce":"emulator","sequence":seq})).await?;
    let online = next_json(&mut ws).await?;
    if online["error"] != 0 {
        bail!("userOnline refused: {online}");
    }
    let hb = online["config"]["hbInterval"].as_u64().unwrap_or(90).max(1);
    print_line(&json!({"event":"online","apikey":apikey}));
    let mut code = 0;
    let command = match (&args.update, &args.query) {
        (Some(id), _) => {
            let params: Value = serde_json::from_str(&args.params).context("--params must be JSON")?;
            Some(("update", id, params))
        }
        (None, Some(id)) => {
            let keys: Vec<&str> = args.keys.split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
            Some(("query", id, json!(keys)))
        }
        (None, None) => None,
    };
    if let Some((action, deviceid, params)) = command {
        let seq = (now_ms() + 1).to_string();
        let mut frame = json!({"action":action,"deviceid":deviceid,"apikey":args.shared_by.as_deref().unwrap_or(&apikey),"userAgent":"app","sequence":seq,"params":params});
        if args.shared_by.is_some() {
            frame["selfApikey"] = json!(apikey);
        }
        send_json(&mut ws, &frame).await?;
        let reply = tokio::time::timeout(Duration::from_secs(6), async {
            loop {
                let f = next_json(&mut ws).await?;
                if f["sequence"] == json!(seq) && f.get("action").is_none() {
                    return Ok::<_, anyhow::Error>(f);
                }
                print_line(&f);
            }
        })
        .await
        .map_err(|_| anyhow!("no reply within 6 s"))??;
        print_line(&reply);
        if reply["error"] != 0 {
            code = 1;
        }
    }
    if let Some(secs) = args.listen {
        let until = (secs > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(secs));
        let mut ping = tokio::time::interval(Duration::from_millis(hb * 900));
        ping.tick().await;
        loop {
            let stop = async {
                match until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = ping.tick() => ws.send(Message::Text(Utf8Bytes::from_static("ping"))).await?,
                f = next_json(&mut ws) => print_line(&f?),
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(code)
}
