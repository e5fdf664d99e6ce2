//! Hardening through real sockets against the real server: connection deadlines (first request,
//! keep-alive idle, request head, slow request body), the device-state size cap, a full device
//! outbox, waiters released when an app session ends or a device is replaced, state across a
//! quick reconnect, sharing changes reaching offline answers, and HTTP input checks (nonce, body
//! limit, refresh token binding). Long deadlines run on paused time.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{APPID, Client, PASSWORD, SECRET, TestHub, TestUser, wait_until, wait_until_within};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const DEV: &str = "1000000001";

// --- helpers ---------------------------------------------------------------------------------

/// Waits until the hub has attached exactly `apps` app sessions and `devices` device sessions.
async fn settle(hub: &TestHub, apps: i64, devices: i64) {
    let m = hub.hub.metrics.clone();
    wait_until(&format!("{apps} app and {devices} device sessions are attached"), || {
        m.app_sessions.load(Ordering::Relaxed) == apps
            && m.device_sessions.load(Ordering::Relaxed) == devices
            && hub.hub.router.online_devices().len() as i64 == devices
    })
    .await;
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// An app command for DEV.
fn command(action: &str, apikey: &str, sequence: Value, params: Value) -> Value {
    json!({"action":action,"deviceid":DEV,"apikey":apikey,"userAgent":"app","sequence":sequence,"ts":0,"params":params})
}

/// A device ack for DEV.
fn ack(owner: &TestUser, sequence: &Value) -> Value {
    json!({"error":0,"userAgent":"device","apikey":owner.apikey.as_str(),"deviceid":DEV,"sequence":sequence})
}

/// A device state report for DEV.
fn report(owner: &TestUser, sequence: &str, params: Value) -> Value {
    json!({"userAgent":"device","apikey":owner.apikey.as_str(),"deviceid":DEV,"action":"update","sequence":sequence,"params":params})
}

/// A device's own `query` for DEV.
fn device_query(owner: &TestUser, sequence: &str, keys: Value) -> Value {
    json!({"userAgent":"device","apikey":owner.apikey.as_str(),"deviceid":DEV,"action":"query","sequence":sequence,"params":keys})
}

/// The next frame that has no `action` (a reply), with the frames that had one.
async fn next_reply(c: &mut Client) -> (Value, Vec<Value>) {
    let mut others = Vec::new();
    loop {
        let v = c.recv().await;
        if v.get("action").is_none() {
            return (v, others);
        }
        others.push(v);
    }
}

async fn assert_alive(c: &mut Client, what: &str) {
    c.send_text("ping").await;
    assert_eq!(c.recv_text().await, "pong", "{what}: the session should still be up");
}

/// A hub with alice owning DEV, the device registered and one app session of alice's.
async fn owned(tune: impl FnOnce(switchyard::Settings) -> switchyard::Settings) -> (TestHub, TestUser, Client, Client) {
    let hub = TestHub::start_with(tune).await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let dev = hub.device(DEV).await;
    let app = hub.app(&alice).await;
    settle(&hub, 1, 1).await;
    (hub, alice, dev, app)
}

/// How a raw read ended.
struct RawEnd {
    bytes: Vec<u8>,
    /// `None`: a clean EOF; otherwise the error that ended the read (e.g. a reset).
    error: Option<std::io::Error>,
}

impl RawEnd {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Reads until EOF or an error.
async fn read_until_closed(s: &mut TcpStream) -> RawEnd {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return RawEnd { bytes, error: None },
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => return RawEnd { bytes, error: Some(e) },
        }
    }
}

/// Pauses time, reads `s` until the hub closes it (bounded by a generous paused-time limit) and
/// returns what came and how much paused time passed.
async fn paused_read_until_closed(s: &mut TcpStream, what: &str) -> (RawEnd, Duration) {
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(600), read_until_closed(s)).await;
    let waited = started.elapsed();
    tokio::time::resume();
    let end = end.unwrap_or_else(|_| panic!("{what}: the hub did not close the connection within 600 s of paused time"));
    (end, waited)
}

/// Whether `bytes` hold one complete HTTP/1.1 response with a Content-Length body.
fn is_complete_response(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some(head_end) = text.find("\r\n\r\n") else { return false };
    let len = text[..head_end]
        .lines()
        .find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    bytes.len() >= head_end + 4 + len
}

/// Reads one complete HTTP/1.1 response with a Content-Length body.
async fn read_response(s: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    while !is_complete_response(&bytes) {
        let n = tokio::time::timeout(common::WAIT, s.read(&mut buf)).await.expect("response timed out").unwrap();
        assert!(n > 0, "connection closed mid-response: {}", String::from_utf8_lossy(&bytes));
        bytes.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Opens a plain TCP connection and waits (real time) until the hub has accepted it.
async fn raw_tcp(hub: &TestHub) -> TcpStream {
    let before = hub.hub.metrics.connections_open.load(Ordering::Relaxed);
    let s = TcpStream::connect(hub.http).await.unwrap();
    let m = hub.hub.metrics.clone();
    wait_until("the hub accepted the connection", || m.connections_open.load(Ordering::Relaxed) > before).await;
    s
}

fn sign(body: &str) -> String {
    format!("Sign {}", switchyard::auth::sign(SECRET, body.as_bytes()))
}

// --- 1. connection deadlines -----------------------------------------------------------------

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_first_request_deadline() {
    let hub = TestHub::start().await;
    let mut s = raw_tcp(&hub).await;
    let (end, waited) = paused_read_until_closed(&mut s, "silent connection").await;
    assert!(end.error.is_none(), "expected a clean EOF, got {:?} after {:?}", end.error, end.text());
    // Accepted in real time just before the pause: allow a little slack below 10 s.
    assert!(waited >= Duration::from_secs(9), "closed after only {waited:?} of paused time");
    assert!(waited < Duration::from_secs(20), "closed only after {waited:?} of paused time");
    assert!(!end.text().contains("200 OK"), "{}", end.text());
    wait_until("the connection slot is released", || hub.hub.metrics.connections_open.load(Ordering::Relaxed) == 0).await;

    // The hub still serves new connections.
    let r = hub.http_client().get(format!("{}/healthz", hub.base())).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok\n");
    hub.stop().await;
}

#[tokio::test]
async fn a_request_head_that_stalls_is_closed_at_the_head_deadline() {
    let hub = TestHub::start().await;
    let mut s = raw_tcp(&hub).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: loc").await.unwrap();
    let (end, waited) = paused_read_until_closed(&mut s, "stalled head").await;
    assert!(waited >= Duration::from_secs(9), "closed after only {waited:?} of paused time");
    assert!(waited < Duration::from_secs(20), "closed only after {waited:?} of paused time");
    assert!(!end.text().contains("200 OK"), "{}", end.text());
    hub.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_time() {
    let hub = TestHub::start().await;
    let mut s = raw_tcp(&hub).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let first = read_response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.ends_with("ok\n"), "{first}");
    assert!(!first.to_ascii_lowercase().contains("connection: close"), "the connection should be kept alive: {first}");

    let (end, waited) = paused_read_until_closed(&mut s, "idle keep-alive connection").await;
    assert!(end.error.is_none(), "expected a clean EOF, got {:?}", end.error);
    assert!(end.bytes.is_empty(), "nothing is sent to an idle connection: {}", end.text());
    // hyper's header-read timer (10 s) also runs between keep-alive requests.
    assert!(
        waited >= Duration::from_secs(9),
        "an idle keep-alive connection was closed after only {waited:?} of paused time (the keep-alive idle limit is 10 s)"
    );
    assert!(waited < Duration::from_secs(45), "closed only after {waited:?} of paused time");
    hub.stop().await;
}

#[tokio::test]
async fn a_keep_alive_connection_idling_less_than_the_limit_is_served_again() {
    // The idle deadline is re-armed by each request: a connection that idles less than the
    // limit between requests is served again.
    let hub = TestHub::start().await;
    let mut s = raw_tcp(&hub).await;
    // 4 × 8 s of idling: longer in all than the first-request and the keep-alive limits.
    for i in 0..5 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
        let r = read_response(&mut s).await;
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok\n"), "request {i}: {r}");
        if i < 4 {
            tokio::time::pause();
            tokio::time::sleep(Duration::from_secs(8)).await;
            tokio::time::resume();
        }
    }
    hub.stop().await;
}

// --- 2. a request body that trickles ---------------------------------------------------------

#[tokio::test]
async fn a_request_body_that_trickles_gets_408() {
    let hub = TestHub::start().await;
    let mut s = raw_tcp(&hub).await;
    let head = format!(
        "POST /v2/user/login HTTP/1.1\r\nHost: localhost\r\nX-CK-Appid: {APPID}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
        sign("{}")
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(b"{\"email\":\"slow").await.unwrap();
    s.flush().await.unwrap();
    let (end, waited) = paused_read_until_closed(&mut s, "trickling body").await;
    let text = end.text();
    assert!(text.starts_with("HTTP/1.1 408"), "expected 408, got {text:?} (read ended with {:?}) after {waited:?}", end.error);
    assert!(waited >= Duration::from_secs(29), "408 after only {waited:?} of paused time (REQUEST_TIMEOUT is 30 s)");
    assert!(waited < Duration::from_secs(45), "408 only after {waited:?} of paused time");

    // The hub still serves.
    let r = hub.http_client().get(format!("{}/healthz", hub.base())).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok\n");
    hub.stop().await;
}

// --- 3. the device-state size cap ------------------------------------------------------------

#[tokio::test]
async fn a_report_that_would_exceed_the_state_cap_is_refused_and_changes_nothing() {
    let (hub, alice, mut dev, mut app) = owned(|s| s).await; // max_frame_bytes 65536
    let blob = |c: char| c.to_string().repeat(40 * 1024);

    dev.send(report(&alice, "r1", json!({"first": blob('a')}))).await;
    let r = dev.recv().await;
    assert_eq!(r["error"], 0, "{r}");
    let u = app.recv().await;
    assert_eq!(u["action"], "update", "{u}");
    assert!(u["params"]["first"].as_str().is_some_and(|b| b.len() == 40 * 1024), "the first report reaches the owner");
    let view = || hub.hub.router.device_view(&hub.hub.router.online_devices()[0]).unwrap();
    let bytes_before = view().state_bytes;

    // Under another key: together more than 64 KiB.
    dev.send(report(&alice, "r2", json!({"second": blob('b')}))).await;
    let t = dev.recv_text().await;
    let r = parse(&t);
    assert_eq!(r["error"], 400, "{t}");
    assert!(r["reason"].as_str().is_some_and(|s| !s.is_empty()), "{t}");
    assert!(t.contains(r#""sequence":"r2""#), "{t}");
    assert!(r.get("action").is_none(), "{t}");
    assert_alive(&mut dev, "after the refused report").await;

    // The stored state is unchanged.
    assert_eq!(view().state_bytes, bytes_before);
    dev.send(device_query(&alice, "q1", json!([]))).await;
    let q = dev.recv().await;
    assert_eq!(q["error"], 0, "{q}");
    let keys: Vec<&String> = q["params"].as_object().unwrap_or_else(|| panic!("{q}")).keys().collect();
    assert_eq!(keys, ["first"], "only the first report is stored");
    assert_eq!(q["params"]["first"].as_str().map(str::len), Some(40 * 1024));

    // The owner never heard the refused report.
    app.silent_for(300).await;

    // Replacing the stored key with a value of the same size still fits: the refusal left the
    // size accounting as it was.
    dev.send(report(&alice, "r3", json!({"first": blob('c')}))).await;
    let r = dev.recv().await;
    assert_eq!(r["error"], 0, "{r}");
    let u = app.recv().await;
    assert!(u["params"]["first"].as_str().is_some_and(|b| b.starts_with('c')), "{}", &u.to_string()[..100]);
    dev.send(device_query(&alice, "q2", json!([]))).await;
    let q = dev.recv().await;
    assert!(q["params"]["first"].as_str().is_some_and(|b| b.starts_with('c')), "the replacement is stored");
    assert!(q["params"].get("second").is_none());
    hub.stop().await;
}

// --- 4. a full device outbox -----------------------------------------------------------------

#[tokio::test]
async fn commands_to_a_device_with_a_full_outbox_get_504_busy_and_the_device_stays() {
    // A long ack timeout: no command times out while the test fills the pipe, so every early
    // reply is the one under test.
    let hub =
        TestHub::start_with(|s| s.set("outbox_capacity", "4").set("ack_timeout_ms", "30000").set("max_device_queue_per_user", "1024"))
            .await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let mut dev = hub.device(DEV).await; // from here on it does not read until told to
    let mut apps = Vec::new();
    for _ in 0..8 {
        apps.push(hub.app(&alice).await);
    }
    settle(&hub, 8, 1).await;
    let m = hub.hub.metrics.clone();

    let blob = "x".repeat(60 * 1024);
    let mut first_busy: Option<Value> = None;
    let mut stalled = false;
    let mut sent = 0u64;
    for (k, app) in apps.iter_mut().enumerate() {
        // A batch below max_inflight (128) per session.
        const BATCH: usize = 120;
        let routed_before = m.commands_routed.load(Ordering::Relaxed);
        for i in 0..BATCH {
            app.send(command("update", alice.apikey.as_str(), json!(format!("b{k}-{i}")), json!({"blob": blob, "n": i}))).await;
            sent += 1;
        }
        // Collect what this session was answered at once: nothing but "busy".
        let mut busy = 0;
        loop {
            match tokio::time::timeout(Duration::from_millis(300), app.ws.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v = parse(t.as_str());
                    assert_eq!(v["error"], 504, "only busy replies are expected while filling: {v}");
                    assert_eq!(v["reason"], "device is busy", "{v}");
                    assert_eq!(v["deviceid"], DEV, "{v}");
                    assert!(v["sequence"].as_str().is_some_and(|s| s.starts_with(&format!("b{k}-"))), "{v}");
                    assert!(v.get("action").is_none(), "{v}");
                    busy += 1;
                    first_busy.get_or_insert(v);
                }
                Ok(other) => panic!("app session {k} ended or misbehaved: {other:?}"),
            }
        }
        let routed = m.commands_routed.load(Ordering::Relaxed);
        assert_eq!(busy + (routed - routed_before) as usize, BATCH, "session {k}: every command was either routed or answered busy");
        eprintln!("session {k}: {} routed, {busy} busy", routed - routed_before);
        // The pipe to the device is full for good once a whole batch finds the outbox full.
        if busy == BATCH {
            stalled = true;
            break;
        }
    }
    let routed = m.commands_routed.load(Ordering::Relaxed);
    assert!(
        stalled,
        "commands kept being routed to a device that does not read: {sent} commands of 60 KiB, {routed} routed, first busy {first_busy:?}, device registered: {}, slow consumers: {}",
        !hub.hub.router.online_devices().is_empty(),
        m.slow_consumers.load(Ordering::Relaxed)
    );
    eprintln!("{sent} commands sent, {routed} routed (about {} MiB buffered), first busy reply: {first_busy:?}", routed * 60 / 1024);
    let link = hub.hub.router.device_view(&switchyard::ids::DeviceId::new(DEV)).expect("the busy device is still registered");
    assert!(link.pending < switchyard::router::MAX_PENDING_PER_DEVICE, "busy came from the pending cap, not the outbox");
    assert_eq!(link.pending as u64, routed, "every routed command waits; refused ones left no waiter");
    assert_eq!(m.device_sessions.load(Ordering::Relaxed), 1);
    assert_eq!(m.slow_consumers.load(Ordering::Relaxed), 0, "a busy device is not a slow consumer");
    assert_eq!(m.app_sessions.load(Ordering::Relaxed), 8);

    // The device reads again: every routed command arrives, in order per session.
    let mut last = vec![-1i64; apps.len()];
    for n in 0..routed {
        let t = dev.recv_text().await;
        let v = parse(&t);
        assert_eq!(v["action"], "update", "frame {n}");
        let seq = v["sequence"].as_str().unwrap_or_else(|| panic!("frame {n} has no sequence")).to_owned();
        let (k, i) = seq[1..].split_once('-').unwrap();
        let (k, i): (usize, i64) = (k.parse().unwrap(), i.parse().unwrap());
        assert!(i > last[k], "session {k}'s commands arrive in order: {i} after {}", last[k]);
        last[k] = i;
    }
    assert_alive(&mut dev, "the device after its outbox was full").await;
    assert!(hub.hub.router.online_devices().iter().any(|d| d.as_str() == DEV), "still registered");
    assert_eq!(m.device_sessions.load(Ordering::Relaxed), 1);
    assert_eq!(m.slow_consumers.load(Ordering::Relaxed), 0);

    // A fresh command and its ack go through.
    apps[0].send(command("update", alice.apikey.as_str(), json!("fresh"), json!({"switch":"on"}))).await;
    let f = dev.recv().await;
    assert_eq!(f["sequence"], "fresh", "{f}");
    dev.send(ack(&alice, &json!("fresh"))).await;
    let (r, others) = next_reply(&mut apps[0]).await;
    assert_eq!(r["error"], 0, "{r}");
    assert_eq!(r["sequence"], "fresh", "{r}");
    assert!(others.is_empty(), "{others:?}");
    hub.stop().await;
}

// --- 5. and 6. pending waiters ---------------------------------------------------------------

#[tokio::test]
async fn ending_an_app_session_removes_its_pending_waiters_at_once() {
    let (hub, alice, mut dev, mut app) = owned(|s| s).await; // ack timeout 3 s
    app.send(command("update", alice.apikey.as_str(), json!("w1"), json!({"switch":"on"}))).await;
    app.send(command("query", alice.apikey.as_str(), json!("w2"), json!(["switch"]))).await;
    assert_eq!(dev.recv().await["sequence"], "w1");
    assert_eq!(dev.recv().await["sequence"], "w2");
    let pending = || hub.hub.router.device_view(&hub.hub.router.online_devices()[0]).map_or(0, |v| v.pending);
    assert_eq!(pending(), 2);

    app.ws.close(None).await.unwrap();
    drop(app);
    let took = wait_until_within("the closed session's waiters are gone", Duration::from_secs(1), || pending() == 0).await;
    eprintln!("waiters removed {took:?} after the close");
    settle(&hub, 0, 1).await;

    // The device's late acks find nobody and are dropped; the device stays up.
    dev.send(ack(&alice, &json!("w1"))).await;
    dev.send(ack(&alice, &json!("w2"))).await;
    assert_alive(&mut dev, "after acks for a closed session").await;
    assert_eq!(hub.hub.metrics.acks_late.load(Ordering::Relaxed), 2);
    assert_eq!(hub.hub.metrics.acks_delivered.load(Ordering::Relaxed), 0);
    hub.stop().await;
}

#[tokio::test]
async fn replacing_a_device_fails_the_old_links_pending_command_at_once() {
    let (hub, alice, mut old, mut app) = owned(|s| s).await; // ack timeout 3 s
    app.send(command("update", alice.apikey.as_str(), json!("rp"), json!({"switch":"on"}))).await;
    assert_eq!(old.recv().await["sequence"], "rp");

    // The old connection is not read from until the end: its session's close handshake then
    // takes its full second, so only failing the waiters at the replacement itself is prompt.
    let started = std::time::Instant::now();
    let mut new = hub.device(DEV).await;
    let registered = std::time::Instant::now();
    let (r, others) = next_reply(&mut app).await;
    let (took, after_register) = (started.elapsed(), registered.elapsed());
    assert!(took < Duration::from_secs(2), "the 504 took {took:?}: it waited for the ack timeout");
    assert!(
        after_register < Duration::from_millis(500),
        "the 504 came {after_register:?} after the new connection registered: not failed at the replacement"
    );
    assert_eq!(r["error"], 504, "{r}");
    assert_eq!(r["sequence"], "rp", "{r}");
    assert_eq!(r["deviceid"], DEV, "{r}");
    for o in &others {
        assert_eq!(o["action"], "sysmsg", "{o}");
    }
    let close = old.recv_close().await.expect("the old connection gets a close frame");
    eprintln!("old connection closed: {close:?}");
    settle(&hub, 1, 1).await;
    assert_eq!(hub.hub.router.device_view(&hub.hub.router.online_devices()[0]).unwrap().pending, 0);

    // The new connection takes commands.
    app.send(command("update", alice.apikey.as_str(), json!("rp2"), json!({"switch":"off"}))).await;
    let (f, _) = next_reply_or_action(&mut new, "update").await;
    assert_eq!(f["sequence"], "rp2", "{f}");
    new.send(ack(&alice, &json!("rp2"))).await;
    let (r, _) = next_reply(&mut app).await;
    assert_eq!((r["error"].as_i64(), r["sequence"].as_str()), (Some(0), Some("rp2")), "{r}");
    hub.stop().await;
}

/// The next frame with the given action.
async fn next_reply_or_action(c: &mut Client, action: &str) -> (Value, Vec<Value>) {
    let mut skipped = Vec::new();
    loop {
        let v = c.recv().await;
        if v["action"] == action {
            return (v, skipped);
        }
        skipped.push(v);
    }
}

// --- 7. state across reconnects --------------------------------------------------------------

#[tokio::test]
async fn state_survives_a_quick_reconnect() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let mut dev = hub.device(DEV).await;
    // Several rounds: each reconnect races the end of the previous session.
    for i in 0..20 {
        let switch = if i % 2 == 0 { "on" } else { "off" };
        dev.send(report(&alice, &format!("s{i}"), json!({"switch": switch, "round": i}))).await;
        assert_eq!(dev.recv().await["error"], 0, "round {i}");
        if i % 2 == 0 {
            dev.ws.close(None).await.unwrap();
        }
        drop(dev);
        dev = hub.device(DEV).await;
        dev.send(device_query(&alice, &format!("q{i}"), json!([]))).await;
        let q = dev.recv().await;
        assert_eq!(q["error"], 0, "round {i}: {q}");
        let want = json!({"switch": switch, "round": i});
        if q["params"] != want {
            // Where the state went: by now the old session has saved it to the store, but the new
            // connection had already loaded the store's older copy.
            let stored = hub.hub.store.device(DEV).await.unwrap().map(|d| d.params);
            panic!(
                "round {i}: the reconnected device lost its reported state: query answered {}, want {want}; the store now holds {stored:?}; replacements so far: {}",
                q["params"],
                hub.hub.metrics.devices_replaced.load(Ordering::Relaxed)
            );
        }
    }
    hub.stop().await;
}

#[tokio::test]
async fn state_survives_a_replacement() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let mut dev = hub.device(DEV).await;
    for i in 0..4 {
        let switch = if i % 2 == 0 { "on" } else { "off" };
        dev.send(report(&alice, &format!("s{i}"), json!({"switch": switch, "round": i}))).await;
        assert_eq!(dev.recv().await["error"], 0, "round {i}");
        // The old connection is still open when the new one registers.
        let mut new = hub.device(DEV).await;
        new.send(device_query(&alice, &format!("q{i}"), json!([]))).await;
        let q = new.recv().await;
        assert_eq!(q["error"], 0, "round {i}: {q}");
        assert_eq!(q["params"], json!({"switch": switch, "round": i}), "round {i}: the replacing connection lost the reported state");
        assert!(dev.recv_close().await.is_some(), "round {i}: the replaced connection is closed");
        dev = new;
    }
    hub.stop().await;
}

// --- 8. sharing changes and offline answers --------------------------------------------------

#[tokio::test]
async fn a_new_share_reaches_offline_command_answers_at_the_next_acl_poll() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let sam = hub.user("sam@example.com").await;
    hub.device_record(DEV, Some(&alice)).await; // never connected
    let mut shared = hub.app(&sam).await;
    settle(&hub, 1, 0).await;

    let sam_command = |seq: u64| {
        let mut cmd = command("update", alice.apikey.as_str(), json!(seq), json!({"switch":"on"}));
        cmd["selfApikey"] = json!(sam.apikey.as_str());
        cmd
    };
    shared.send(sam_command(0)).await;
    let r = shared.recv().await;
    assert_eq!(r["error"], 406, "not yet a sharee: {r}");
    assert_eq!(r["sequence"], 0, "{r}");

    // Through the store only: the hub learns of it at its next access-control poll (2 s).
    hub.hub.store.share_device(&switchyard::ids::DeviceId::new(DEV), &sam.apikey, 15).await.unwrap();
    let started = std::time::Instant::now();
    let mut seq = 0;
    let became = loop {
        seq += 1;
        shared.send(sam_command(seq)).await;
        let r = shared.recv().await;
        assert_eq!(r["sequence"], seq, "{r}");
        match r["error"].as_i64() {
            Some(504) => break started.elapsed(),
            Some(406) => {}
            _ => panic!("unexpected answer {r}"),
        }
        assert!(started.elapsed() < Duration::from_secs(6), "still 406 {:?} after the share", started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("the share reached offline answers after {became:?}");
    // And it stays that way.
    shared.send(sam_command(1000)).await;
    assert_eq!(shared.recv().await["error"], 504);
    hub.stop().await;
}

// --- 9. HTTP input -------------------------------------------------------------------------

/// A response: HTTP status and body as JSON (Null when it is not).
async fn reply(r: reqwest::Response) -> (reqwest::StatusCode, Value, String) {
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
}

async fn login_with_nonce(hub: &TestHub, email: &str, nonce: Option<&[u8]>) -> (reqwest::StatusCode, Value, String) {
    let body = json!({"email": email, "password": PASSWORD, "countryCode": "+86"}).to_string();
    let mut req = hub
        .http_client()
        .post(format!("{}/v2/user/login", hub.base()))
        .header("X-CK-Appid", APPID)
        .header("Authorization", sign(&body))
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(n) = nonce {
        req = req.header("X-CK-Nonce", reqwest::header::HeaderValue::from_bytes(n).unwrap());
    }
    reply(req.send().await.unwrap()).await
}

async fn profile_with_nonce(hub: &TestHub, at: &str, nonce: Option<&[u8]>) -> (reqwest::StatusCode, Value, String) {
    let mut req = hub.http_client().get(format!("{}/v2/user/profile", hub.base())).header("Authorization", format!("Bearer {at}"));
    if let Some(n) = nonce {
        req = req.header("X-CK-Nonce", reqwest::header::HeaderValue::from_bytes(n).unwrap());
    }
    reply(req.send().await.unwrap()).await
}

/// The official SDK's nonce is `Math.random().toString(36).slice(-8)`, which now and then holds
/// a `.`; any printable ASCII up to 64 characters passes, control characters and non-ASCII do not.
#[tokio::test]
async fn a_nonce_must_be_printable_ascii_of_sane_length() {
    let hub = TestHub::start().await;
    let kim = hub.user("kim@example.com").await;
    let long = "n".repeat(65);
    let bad: [&[u8]; 3] = [b"abcd\t123", long.as_bytes(), b"abcd\xe9123"];
    for bad in bad {
        let (status, v, text) = login_with_nonce(&hub, "kim@example.com", Some(bad)).await;
        assert_eq!(status, reqwest::StatusCode::OK, "login, nonce {bad:?}: {text}");
        assert_eq!(v["error"], 400, "login, nonce {bad:?}: {text}");
        assert!(v["data"]["at"].is_null(), "login, nonce {bad:?}: {text}");
        let (_, v, text) = profile_with_nonce(&hub, &kim.at, Some(bad)).await;
        assert_eq!(v["error"], 400, "profile, nonce {bad:?}: {text}");
        assert!(v["data"]["user"].is_null(), "profile, nonce {bad:?}: {text}");
    }
    let max = "m".repeat(64);
    let good: [Option<&[u8]>; 8] = [
        Some(b"abcd1234"),
        Some(b"ZZ09zz09"),
        Some(b"0.4fzyo8"),
        Some(b"abc"),
        Some(b"abcd-123"),
        Some(b"a b~!{}"),
        Some(max.as_bytes()),
        None,
    ];
    for good in good {
        let (_, v, text) = login_with_nonce(&hub, "kim@example.com", good).await;
        assert_eq!(v["error"], 0, "login, nonce {good:?}: {text}");
        assert!(v["data"]["at"].is_string(), "{text}");
        let (_, v, text) = profile_with_nonce(&hub, &kim.at, good).await;
        assert_eq!(v["error"], 0, "profile, nonce {good:?}: {text}");
        assert_eq!(v["data"]["user"]["apikey"], kim.apikey.as_str(), "{text}");
    }
    hub.stop().await;
}

/// Sends `head` and `body` on a raw connection (the body from a separate task, so an early
/// answer is read even while the body is still being written) and reads one complete answer,
/// or until the hub closes the connection.
async fn raw_exchange(addr: SocketAddr, head: String, body: Vec<u8>) -> RawEnd {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
        let _ = wr.flush().await;
        wr // keep the write half open until the reader is done
    });
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let error = loop {
        if is_complete_response(&bytes) {
            break None;
        }
        let read = tokio::time::timeout(common::WAIT, rd.read(&mut buf)).await;
        let read = read.unwrap_or_else(|_| panic!("the connection stayed open; read so far: {:?}", String::from_utf8_lossy(&bytes)));
        match read {
            Ok(0) => break None,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => break Some(e),
        }
    };
    drop(rd);
    writer.abort();
    RawEnd { bytes, error }
}

#[tokio::test]
async fn a_body_over_one_mib_gets_413_with_the_envelope() {
    let hub = TestHub::start().await;
    hub.user("big@example.com").await;
    let body =
        json!({"email": "big@example.com", "password": PASSWORD, "pad": "x".repeat(switchyard::http::MAX_BODY_BYTES + 1024)}).to_string();
    let head = format!(
        "POST /v2/user/login HTTP/1.1\r\nHost: localhost\r\nX-CK-Appid: {APPID}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        sign(&body),
        body.len()
    );
    let end = raw_exchange(hub.http, head, body.into_bytes()).await;
    let text = end.text();
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "expected HTTP 413, got {:?} (read ended with {:?})",
        &text[..text.len().min(300)],
        end.error
    );
    let json_start = text.find("\r\n\r\n").map(|i| i + 4).unwrap_or_else(|| panic!("no head end in {text:?}"));
    let v = parse(&text[json_start..]);
    assert_eq!(v["error"], 413, "{v}");
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["data"].is_object(), "{v}");
    assert!(text[..json_start].to_ascii_lowercase().contains("content-type: application/json"), "{text}");

    // The hub still serves, and a normal login works.
    let (_, v, text) = login_with_nonce(&hub, "big@example.com", None).await;
    assert_eq!(v["error"], 0, "{text}");
    hub.stop().await;
}

#[tokio::test]
async fn refresh_with_one_users_access_token_and_anothers_refresh_token_is_401() {
    let hub = TestHub::start().await;
    let a = hub.user("a@example.com").await;
    let b = hub.user("b@example.com").await;
    let store = &hub.hub.store;
    let ttl = (Duration::from_secs(3600), Duration::from_secs(7200));
    let pa = store.issue_tokens(&a.apikey, APPID, ttl.0, ttl.1).await.unwrap();
    let pb = store.issue_tokens(&b.apikey, APPID, ttl.0, ttl.1).await.unwrap();

    let refresh = |at: String, rt: String| {
        let c = hub.http_client();
        let url = format!("{}/v2/user/refresh", hub.base());
        async move {
            let r = c
                .post(url)
                .header("X-CK-Appid", APPID)
                .header("Authorization", format!("Bearer {at}"))
                .header("Content-Type", "application/json")
                .body(json!({ "rt": rt }).to_string())
                .send()
                .await
                .unwrap();
            reply(r).await
        }
    };
    let (status, v, text) = refresh(pa.at.clone(), pb.rt.clone()).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{text}");
    assert_eq!(v["error"], 401, "A's at with B's rt: {text}");
    assert!(v["data"]["at"].is_null(), "{text}");
    // The other way round too; and an at of the same user but another pair.
    let (_, v, text) = refresh(pb.at.clone(), pa.rt.clone()).await;
    assert_eq!(v["error"], 401, "B's at with A's rt: {text}");
    let (_, v, text) = refresh(a.at.clone(), pa.rt.clone()).await;
    assert_eq!(v["error"], 401, "A's at of another pair with A's rt: {text}");

    // None of that spent or revoked anything: both pairs still work as they should.
    let (_, v, text) = profile_with_nonce(&hub, &pa.at, None).await;
    assert_eq!(v["error"], 0, "{text}");
    let (_, v, text) = refresh(pb.at.clone(), pb.rt.clone()).await;
    assert_eq!(v["error"], 0, "B's own pair refreshes: {text}");
    let (_, v, text) = profile_with_nonce(&hub, v["data"]["at"].as_str().unwrap_or(""), None).await;
    assert_eq!(v["data"]["user"]["apikey"], b.apikey.as_str(), "{text}");
    let (_, v, text) = refresh(pa.at.clone(), pa.rt.clone()).await;
    assert_eq!(v["error"], 0, "A's own pair refreshes: {text}");
    hub.stop().await;
}

/// Logout closes the WebSocket sessions opened with the revoked token, and only those.
#[tokio::test]
async fn logout_closes_the_sessions_opened_with_that_token() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let second = hub
        .hub
        .store
        .issue_tokens(&alice.apikey, common::APPID, std::time::Duration::from_secs(3600), std::time::Duration::from_secs(7200))
        .await
        .unwrap();
    let mut other_login = alice.clone();
    other_login.at = second.at.clone();
    let mut first = hub.app(&alice).await;
    let mut also_first = hub.app(&alice).await;
    let mut kept = hub.app(&other_login).await;

    let reply: serde_json::Value = hub
        .http_client()
        .delete(format!("{}/v2/user/logout", hub.base()))
        .header("Authorization", format!("Bearer {}", alice.at))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["error"], 0, "{reply}");

    for c in [&mut first, &mut also_first] {
        let close = c.recv_close().await.expect("a close frame");
        assert_eq!(close.code, CloseCode::Policy);
        assert_eq!(close.reason.as_str(), "logged out");
    }
    kept.send_text("ping").await;
    assert_eq!(kept.recv_text().await, "pong", "a session of another login stays up");
    hub.stop().await;
}

/// A user's app sessions are bounded: beyond the cap a new `userOnline` is refused with 406 and
/// closed, and the sessions already open are not touched.
#[tokio::test]
async fn sessions_per_user_are_bounded_without_kicking_older_ones() {
    let hub = TestHub::start_with(|s| s.set("max_sessions_per_user", "2")).await;
    let alice = hub.user("alice@example.com").await;
    let mut a = hub.app(&alice).await;
    let mut b = hub.app(&alice).await;
    let mut c = hub.raw().await;
    c.send(json!({"action":"userOnline","at":alice.at,"apikey":alice.apikey.as_str(),"appid":APPID,"userAgent":"app","sequence":"9"}))
        .await;
    let refused = c.recv().await;
    assert_eq!(refused["error"], 406, "{refused}");
    assert_eq!(refused["sequence"], "9");
    assert!(c.recv_close().await.is_some());
    for s in [&mut a, &mut b] {
        s.send_text("ping").await;
        assert_eq!(s.recv_text().await, "pong");
    }
    // Once one leaves, a new one fits again.
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while hub.hub.router.user_sessions(&alice.apikey) > 1 {
        assert!(std::time::Instant::now() < deadline, "the closed session was never detached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut d = hub.app(&alice).await;
    d.send_text("ping").await;
    assert_eq!(d.recv_text().await, "pong");
    hub.stop().await;
}
