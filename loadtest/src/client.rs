//! Protocol clients. One [`Conn`] is one WebSocket (plain or TLS, optionally bound to a chosen
//! 127.0.0.x source address) speaking one of three peers' languages: Switchyard's eWeLink v2
//! frames, MQTT 3.1.1 in binary frames (for Mosquitto), or plain text echoed back (the floor).
//! Every scenario uses only these calls, so the peers in `compare` differ in the bytes they
//! exchange and nothing else. Frames from the hub are classified by cheap substring scans
//! rather than full JSON parsing, to keep the generator's CPU share on this 2-core machine low.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpSocket;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::mqtt;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Ws = WebSocketStream<Box<dyn Io>>;

/// Which language the server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Hub,
    Mqtt,
    Echo,
}

/// Where to connect and how.
#[derive(Clone)]
pub struct Target {
    pub proto: Proto,
    pub addr: SocketAddr,
    pub path: String,
    pub tls: Option<Arc<ClientConfig>>,
}

impl Target {
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        let host = if self.tls.is_some() && self.addr.ip().is_loopback() { "localhost".to_owned() } else { self.addr.ip().to_string() };
        format!("{scheme}://{host}:{}{}", self.addr.port(), self.path)
    }
}

/// How a connection introduces itself after the WebSocket handshake.
#[derive(Clone, Debug)]
pub enum Login {
    /// Switchyard device: `register` with the factory key.
    Device { deviceid: String, factory_key: String },
    /// Switchyard app: `userOnline` with an access token.
    App { at: String, apikey: String, appid: String },
    /// MQTT device: CONNECT, then SUBSCRIBE `dev/<id>/cmd`; acks go to `app/<owner>/ack`.
    MqttDevice { deviceid: String, owner: String },
    /// MQTT app: CONNECT, then SUBSCRIBE to `topic` (`app/<uid>/ack` or `owner/<uid>/state`).
    MqttApp { client_id: String, uid: String, topic: String },
    /// Echo peer: nothing to say first.
    Echo,
}

/// What one inbound frame meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// The answer to a command this connection sent (app side), or to a report with a
    /// sequence (device side).
    Reply {
        seq: u64,
        error: i64,
    },
    /// A command for this device (device side).
    Command {
        seq: u64,
    },
    /// A fanned-out state report; `lt` is the sender's timestamp (µs since the generator's epoch).
    Event {
        lt: Option<u64>,
    },
    Pong,
    /// Anything else (sysmsg, report acks, echoed app updates).
    Other,
}

/// Why opening a connection failed, by stage (for counting accept errors separately).
#[derive(Debug)]
pub struct OpenError {
    pub stage: &'static str,
    pub detail: String,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.stage, self.detail)
    }
}

fn fail(stage: &'static str, e: impl std::fmt::Display) -> OpenError {
    OpenError { stage, detail: e.to_string() }
}

/// Socket options for one connection.
#[derive(Clone, Copy, Default)]
pub struct Dial {
    /// Bind to this 127.0.0.x address before connecting.
    pub src: Option<Ipv4Addr>,
    /// A small receive buffer (slow consumers).
    pub rcvbuf: Option<u32>,
}

/// Small buffers: tens of thousands of these live in one generator process.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0).max_message_size(Some(1 << 20))
}

/// The source address for connection `i` of `n`: spread over 127.0.0.1..k so no single address
/// runs out of ephemeral ports (about 28k each here) when connections are many or churn.
pub fn source_for(i: usize, n: usize) -> Option<Ipv4Addr> {
    if n <= 2000 {
        return None;
    }
    let k = n.div_ceil(6000).clamp(2, 250);
    Some(Ipv4Addr::new(127, 0, 0, 1 + (i % k) as u8))
}

/// TCP (+ TLS) + WebSocket handshake.
pub async fn dial(target: &Target, dial: Dial) -> Result<Ws, OpenError> {
    let socket = if target.addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(|e| fail("socket", e))?;
    if let Some(src) = dial.src {
        socket.set_reuseaddr(true).map_err(|e| fail("socket", e))?;
        socket.bind(SocketAddr::new(IpAddr::V4(src), 0)).map_err(|e| fail("bind", e))?;
    }
    if let Some(size) = dial.rcvbuf {
        socket.set_recv_buffer_size(size).map_err(|e| fail("socket", e))?;
    }
    let tcp = socket.connect(target.addr).await.map_err(|e| fail("tcp", e))?;
    tcp.set_nodelay(true).map_err(|e| fail("tcp", e))?;
    let io: Box<dyn Io> = match &target.tls {
        Some(config) => {
            let name = if target.addr.ip().is_loopback() {
                ServerName::try_from("localhost").expect("valid name")
            } else {
                ServerName::IpAddress(target.addr.ip().into())
            };
            let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await.map_err(|e| fail("tls", e))?;
            Box::new(tls)
        }
        None => Box::new(tcp),
    };
    let mut request = target.url().into_client_request().map_err(|e| fail("websocket", e))?;
    if target.proto == Proto::Mqtt {
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    }
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, io, Some(ws_config())).await.map_err(|e| fail("websocket", e))?;
    Ok(ws)
}

/// One live connection and what it needs to speak.
pub struct Conn {
    pub ws: Ws,
    pub proto: Proto,
    /// Device id (devices), or the user's apikey / uid (apps).
    pub me: String,
    /// The owner's apikey / uid (devices); empty for apps.
    pub owner: String,
    device: bool,
    mqtt: mqtt::Reader,
    queued: VecDeque<Inbound>,
}

/// Finds `"key":` and reads the integer after it (quoted or not).
pub fn field_num(text: &str, key: &str) -> Option<i64> {
    let pat = format!("\"{key}\":");
    let at = text.find(&pat)? + pat.len();
    let rest = text[at..].trim_start_matches('"');
    let (neg, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let n: i64 = rest[..end].parse().ok()?;
    Some(if neg { -n } else { n })
}

fn lt_of(text: &str) -> Option<u64> {
    field_num(text, "lt").map(|v| v as u64)
}

impl Conn {
    /// Connects and logs in, within `deadline`.
    pub async fn open(target: &Target, login: &Login, how: Dial, deadline: Duration) -> Result<Conn, OpenError> {
        match tokio::time::timeout(deadline, Self::open_inner(target, login, how)).await {
            Ok(r) => r,
            Err(_) => Err(fail("timeout", format!("not logged in within {deadline:?}"))),
        }
    }

    async fn open_inner(target: &Target, login: &Login, how: Dial) -> Result<Conn, OpenError> {
        let ws = dial(target, how).await?;
        let mut conn = Conn {
            ws,
            proto: target.proto,
            me: String::new(),
            owner: String::new(),
            device: false,
            mqtt: mqtt::Reader::default(),
            queued: VecDeque::new(),
        };
        match login {
            Login::Device { deviceid, factory_key } => {
                let reg = format!(
                    r#"{{"userAgent":"device","apikey":"{factory_key}","deviceid":"{deviceid}","action":"register","version":2,"romVersion":"3.5.0","model":"LOADTEST","ts":1}}"#
                );
                conn.text(reg).await.map_err(|e| fail("login", e))?;
                let reply = conn.first_text().await?;
                if field_num(&reply, "error") != Some(0) {
                    return Err(fail("login", format!("register refused: {reply}")));
                }
                let v: serde_json::Value = serde_json::from_str(&reply).map_err(|e| fail("login", e))?;
                conn.owner = v["apikey"].as_str().unwrap_or_default().to_owned();
                conn.me = deviceid.clone();
                conn.device = true;
            }
            Login::App { at, apikey, appid } => {
                let online = format!(
                    r#"{{"action":"userOnline","version":8,"ts":1,"at":"{at}","userAgent":"app","apikey":"{apikey}","appid":"{appid}","nonce":"lt0nonce","sequence":"0"}}"#
                );
                conn.text(online).await.map_err(|e| fail("login", e))?;
                let reply = conn.first_text().await?;
                if field_num(&reply, "error") != Some(0) {
                    return Err(fail("login", format!("userOnline refused: {reply}")));
                }
                conn.me = apikey.clone();
            }
            Login::MqttDevice { deviceid, owner } => {
                conn.mqtt_login(&format!("d-{deviceid}"), &format!("dev/{deviceid}/cmd")).await?;
                conn.me = deviceid.clone();
                conn.owner = owner.clone();
                conn.device = true;
            }
            Login::MqttApp { client_id, uid, topic } => {
                conn.mqtt_login(client_id, topic).await?;
                conn.me = uid.clone();
            }
            Login::Echo => {}
        }
        Ok(conn)
    }

    async fn first_text(&mut self) -> Result<String, OpenError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() == "pong" => continue,
                Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
                Some(Ok(Message::Close(c))) => return Err(fail("login", format!("closed: {c:?}"))),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(fail("login", e)),
                None => return Err(fail("login", "connection closed")),
            }
        }
    }

    async fn mqtt_packet(&mut self) -> Result<mqtt::Packet, OpenError> {
        loop {
            if let Some(p) = self.mqtt.next_packet().map_err(|e| fail("login", e))? {
                return Ok(p);
            }
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => self.mqtt.push(&b),
                Some(Ok(Message::Close(c))) => return Err(fail("login", format!("closed: {c:?}"))),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(fail("login", e)),
                None => return Err(fail("login", "connection closed")),
            }
        }
    }

    async fn mqtt_login(&mut self, client_id: &str, topic: &str) -> Result<(), OpenError> {
        self.binary(mqtt::connect(client_id, 600)).await.map_err(|e| fail("login", e))?;
        match self.mqtt_packet().await? {
            mqtt::Packet::ConnAck { code: 0 } => {}
            other => return Err(fail("login", format!("CONNECT refused: {other:?}"))),
        }
        self.binary(mqtt::subscribe(1, topic)).await.map_err(|e| fail("login", e))?;
        match self.mqtt_packet().await? {
            mqtt::Packet::SubAck { granted } if granted != 0x80 => Ok(()),
            other => Err(fail("login", format!("SUBSCRIBE refused: {other:?}"))),
        }
    }

    pub async fn text(&mut self, s: String) -> anyhow::Result<()> {
        self.ws.send(Message::Text(s.into())).await?;
        Ok(())
    }

    async fn binary(&mut self, b: Vec<u8>) -> anyhow::Result<()> {
        self.ws.send(Message::Binary(b.into())).await?;
        Ok(())
    }

    /// The next meaningful inbound frame. Cancel-safe: the only await is the socket read.
    pub async fn recv(&mut self) -> anyhow::Result<Inbound> {
        loop {
            if let Some(i) = self.queued.pop_front() {
                return Ok(i);
            }
            let msg = match self.ws.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => anyhow::bail!("connection failed: {e}"),
                None => anyhow::bail!("connection closed"),
            };
            match msg {
                Message::Text(t) => return Ok(self.classify(t.as_str())),
                Message::Binary(b) if self.proto == Proto::Mqtt => {
                    self.mqtt.push(&b);
                    while let Some(p) = self.mqtt.next_packet()? {
                        let i = self.classify_mqtt(p);
                        self.queued.push_back(i);
                    }
                }
                Message::Close(c) => anyhow::bail!("closed by the server: {c:?}"),
                _ => {}
            }
        }
    }

    fn classify(&self, text: &str) -> Inbound {
        if text == "pong" || (self.proto == Proto::Echo && text == "ping") {
            return Inbound::Pong;
        }
        match self.proto {
            Proto::Echo => {
                if text.contains("\"lt\":") {
                    Inbound::Event { lt: lt_of(text) }
                } else {
                    Inbound::Reply { seq: field_num(text, "sequence").unwrap_or(-1) as u64, error: 0 }
                }
            }
            _ if self.device => {
                if text.contains("\"action\":\"update\"") {
                    Inbound::Command { seq: field_num(text, "sequence").unwrap_or(-1) as u64 }
                } else if !text.contains("\"action\":") && text.contains("\"sequence\":") {
                    Inbound::Reply { seq: field_num(text, "sequence").unwrap_or(-1) as u64, error: field_num(text, "error").unwrap_or(-1) }
                } else {
                    Inbound::Other
                }
            }
            _ => {
                if text.contains("\"action\":") {
                    if text.contains("\"userAgent\":\"device\"") && text.contains("\"action\":\"update\"") {
                        Inbound::Event { lt: lt_of(text) }
                    } else {
                        Inbound::Other
                    }
                } else {
                    Inbound::Reply { seq: field_num(text, "sequence").unwrap_or(-1) as u64, error: field_num(text, "error").unwrap_or(-1) }
                }
            }
        }
    }

    fn classify_mqtt(&self, p: mqtt::Packet) -> Inbound {
        match p {
            mqtt::Packet::PingResp => Inbound::Pong,
            mqtt::Packet::Publish { topic, payload } => {
                let text = String::from_utf8_lossy(&payload);
                if topic.starts_with("dev/") {
                    Inbound::Command { seq: field_num(&text, "sequence").unwrap_or(-1) as u64 }
                } else if topic.starts_with("app/") {
                    Inbound::Reply {
                        seq: field_num(&text, "sequence").unwrap_or(-1) as u64,
                        error: field_num(&text, "error").unwrap_or(-1),
                    }
                } else {
                    Inbound::Event { lt: lt_of(&text) }
                }
            }
            _ => Inbound::Other,
        }
    }

    /// App → device `update` with sequence `seq` (Switchyard), a PUBLISH to `dev/<id>/cmd`
    /// (MQTT), or the same text to be echoed (echo).
    pub async fn send_command(&mut self, deviceid: &str, owner: &str, seq: u64) -> anyhow::Result<()> {
        match self.proto {
            Proto::Hub | Proto::Echo => {
                self.text(format!(
                    r#"{{"action":"update","deviceid":"{deviceid}","apikey":"{owner}","userAgent":"app","sequence":"{seq}","ts":0,"params":{{"switch":"on"}}}}"#
                ))
                .await
            }
            Proto::Mqtt => {
                let body = format!(
                    r#"{{"action":"update","deviceid":"{deviceid}","apikey":"{owner}","userAgent":"app","sequence":"{seq}","ts":0,"params":{{"switch":"on"}},"from":"app"}}"#
                );
                self.binary(mqtt::publish(&format!("dev/{deviceid}/cmd"), body.as_bytes())).await
            }
        }
    }

    /// Device → app ack of command `seq`.
    pub async fn send_ack(&mut self, seq: u64) -> anyhow::Result<()> {
        let body = format!(r#"{{"error":0,"userAgent":"device","apikey":"{}","deviceid":"{}","sequence":"{seq}"}}"#, self.owner, self.me);
        match self.proto {
            Proto::Mqtt => {
                let topic = format!("app/{}/ack", self.owner);
                self.binary(mqtt::publish(&topic, body.as_bytes())).await
            }
            _ => self.text(body).await,
        }
    }

    /// A state report carrying `lt` (and `pad` bytes of filler), fanned out by the server.
    pub async fn send_report(&mut self, lt: u64, pad: &str) -> anyhow::Result<()> {
        let owner = if self.owner.is_empty() { &self.me } else { &self.owner };
        let body = format!(
            r#"{{"userAgent":"device","apikey":"{owner}","deviceid":"{}","action":"update","params":{{"switch":"on","lt":{lt},"pad":"{pad}"}}}}"#,
            self.me
        );
        match self.proto {
            Proto::Mqtt => {
                let topic = format!("owner/{owner}/state");
                self.binary(mqtt::publish(&topic, body.as_bytes())).await
            }
            _ => self.text(body).await,
        }
    }

    /// A state report with sequence `seq`, whose answer the hub sends once it is stored
    /// (Switchyard only).
    pub async fn send_report_seq(&mut self, seq: u64, pad: &str) -> anyhow::Result<()> {
        let owner = if self.owner.is_empty() { &self.me } else { &self.owner };
        let body = format!(
            r#"{{"userAgent":"device","apikey":"{owner}","deviceid":"{}","action":"update","sequence":"{seq}","params":{{"switch":"on","power":{seq},"pad":"{pad}"}}}}"#,
            self.me
        );
        self.text(body).await
    }

    /// Application heartbeat: text `ping` or MQTT PINGREQ.
    pub async fn send_ping(&mut self) -> anyhow::Result<()> {
        match self.proto {
            Proto::Mqtt => self.binary(mqtt::pingreq()).await,
            _ => self.text("ping".to_owned()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_quoted_or_not() {
        let t = r#"{"error":504,"deviceid":"d1","sequence":"1234","params":{"lt":-5}}"#;
        assert_eq!(field_num(t, "error"), Some(504));
        assert_eq!(field_num(t, "sequence"), Some(1234));
        assert_eq!(field_num(t, "lt"), Some(-5));
        assert_eq!(field_num(t, "nope"), None);
    }

    #[test]
    fn many_connections_spread_over_source_addresses() {
        assert_eq!(source_for(0, 10), None);
        let a = source_for(0, 20_000).unwrap();
        let b = source_for(1, 20_000).unwrap();
        assert_ne!(a, b);
    }
}
