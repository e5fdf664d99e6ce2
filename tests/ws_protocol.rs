//! RFC 6455 at the edges, through real sockets: a client's Close frame is answered, protocol
//! violations and invalid UTF-8 are failed with a Close frame carrying 1002 or 1007 (before and
//! after the handshake frame), and an upgrade with a version other than 13 is refused with a
//! `Sec-WebSocket-Version: 13` header. Violations are written by a raw TCP client, since no
//! WebSocket library sends them.

mod common;

use std::time::Duration;

use common::{TestHub, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

// --- a raw client ------------------------------------------------------------------------------

/// A TCP connection that completed the upgrade, nothing sent on it since.
async fn upgraded(hub: &TestHub) -> TcpStream {
    let mut s = TcpStream::connect(hub.http).await.unwrap();
    let head = "GET /api/ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(WAIT, s.read(&mut b)).await.expect("upgrade answer timed out").unwrap();
        assert!(n == 1, "closed during the upgrade: {}", String::from_utf8_lossy(&got));
        got.push(b[0]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
    s
}

/// One frame as a client writes it: `first` is the FIN/RSV/opcode byte; masked unless told.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut out = vec![first];
    let bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(bit | n as u8),
        n if n <= 0xffff => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Reads server frames until the connection ends; returns the Close frame's code, if one came.
async fn close_code(s: &mut TcpStream) -> Option<u16> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await.expect("the hub kept the connection open") {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    // Walk the (unmasked, short) server frames.
    let mut i = 0;
    while i + 2 <= bytes.len() {
        let (op, len) = (bytes[i] & 0x0f, (bytes[i + 1] & 0x7f) as usize);
        let (start, len) = match len {
            126 => (i + 4, u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize),
            127 => return None,
            n => (i + 2, n),
        };
        if op == 0x8 {
            return (len >= 2).then(|| u16::from_be_bytes([bytes[start], bytes[start + 1]]));
        }
        i = start + len;
    }
    None
}

fn user_online(user: &common::TestUser) -> String {
    json!({"action":"userOnline","at":user.at,"apikey":user.apikey.as_str(),"appid":common::APPID,"userAgent":"app","sequence":"1"})
        .to_string()
}

/// Every case: what it is, the bytes, and the close code it must get.
fn violations() -> Vec<(&'static str, Vec<u8>, u16)> {
    vec![
        ("RSV1 set", frame(0xC1, b"{}", true), 1002),
        ("RSV3 set", frame(0x91, b"{}", true), 1002),
        ("unknown data opcode", frame(0x83, b"{}", true), 1002),
        ("unknown control opcode", frame(0x8B, b"", true), 1002),
        ("fragmented ping", frame(0x09, b"x", true), 1002),
        ("ping over 125 bytes", frame(0x89, &[0u8; 126], true), 1002),
        ("continuation with nothing to continue", frame(0x80, b"x", true), 1002),
        ("unmasked frame", frame(0x81, b"ping", false), 1002),
        ("invalid UTF-8", frame(0x81, &[b'{', 0xff, 0xfe, b'}'], true), 1007),
        ("invalid UTF-8 across fragments", [frame(0x01, &[b'"', 0xe2, 0x82], true), frame(0x80, b"x\"", true)].concat(), 1007),
    ]
}

// --- the tests ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_clients_close_frame_is_answered() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record("1000000001", Some(&alice)).await;
    // An app session, a device session, and a socket that has not sent its handshake yet.
    let clients = [("app", hub.app(&alice).await), ("device", hub.device("1000000001").await), ("no handshake", hub.raw().await)];
    for (what, mut c) in clients {
        c.ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() }))).await.unwrap();
        // Skip what was on its way (the app hears the device come online).
        let answer = loop {
            match tokio::time::timeout(WAIT, c.ws.next()).await.unwrap_or_else(|_| panic!("{what}: no answer to Close")) {
                Some(Ok(Message::Text(_))) => continue,
                other => break other,
            }
        };
        match answer {
            Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Normal, "{what}"),
            other => panic!("{what}: expected the answering Close frame, got {other:?}"),
        }
        // Then the connection ends cleanly.
        assert!(matches!(tokio::time::timeout(WAIT, c.ws.next()).await.unwrap(), None | Some(Err(_))), "{what}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn protocol_violations_before_the_handshake_close_with_a_code() {
    let hub = TestHub::start().await;
    for (what, bytes, code) in violations() {
        let mut s = upgraded(&hub).await;
        s.write_all(&bytes).await.unwrap();
        assert_eq!(close_code(&mut s).await, Some(code), "{what}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn protocol_violations_in_a_session_close_with_a_code() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    for (what, bytes, code) in violations() {
        let mut s = upgraded(&hub).await;
        s.write_all(&frame(0x81, user_online(&alice).as_bytes(), true)).await.unwrap();
        // The reply to userOnline, then the violation.
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 2 && buf[0] == 0x81 && String::from_utf8_lossy(&buf[2..n]).contains(r#""error":0"#), "{what}: handshake");
        s.write_all(&bytes).await.unwrap();
        assert_eq!(close_code(&mut s).await, Some(code), "{what}");
    }
    // The hub still serves sessions.
    let mut app = hub.app(&alice).await;
    app.send_text("ping").await;
    assert_eq!(app.recv_text().await, "pong");
    hub.stop().await;
}

#[tokio::test]
async fn an_upgrade_with_another_version_is_400_naming_version_13() {
    let hub = TestHub::start().await;
    for version in ["8", "12", "14", ""] {
        let mut s = TcpStream::connect(hub.http).await.unwrap();
        let head = format!(
            "GET /api/ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut got = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut got)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&got[..n]).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 400"), "version {version:?}: {text}");
        assert!(text.contains("\r\nsec-websocket-version: 13\r\n"), "version {version:?}: {text}");
    }
    hub.stop().await;
}
