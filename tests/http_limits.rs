//! HTTP limits through raw sockets: whenever the hub answers without reading the whole request
//! body (413, an early refusal), it says `Connection: close`, and a request head over 64 KiB is
//! refused with 431 whatever the size of the reads it arrives in.

mod common;

use common::{APPID, TestHub, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `head` and `body` (the body from its own task, so an early answer is read while it is
/// still being written) and returns the answer's head, lower-cased.
async fn answer_head(hub: &TestHub, head: String, body: Vec<u8>) -> String {
    let s = TcpStream::connect(hub.http).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
        wr
    });
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    while !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, rd.read(&mut buf)).await.expect("no answer").unwrap_or(0);
        assert!(n > 0, "closed without an answer: {}", String::from_utf8_lossy(&bytes));
        bytes.extend_from_slice(&buf[..n]);
    }
    writer.abort();
    let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
    text[..text.find("\r\n\r\n").unwrap() + 2].to_owned()
}

fn closes(head: &str) -> bool {
    head.contains("\r\nconnection: close\r\n")
}

#[tokio::test]
async fn a_body_the_hub_will_not_read_gets_connection_close() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;

    // 413: a declared length over the body limit.
    let big = switchyard::http::MAX_BODY_BYTES + 1024;
    let head = format!(
        "POST /v2/user/login HTTP/1.1\r\nHost: localhost\r\nX-CK-Appid: {APPID}\r\nAuthorization: Sign x\r\nContent-Type: application/json\r\nContent-Length: {big}\r\n\r\n"
    );
    let h = answer_head(&hub, head, vec![b' '; big]).await;
    assert!(h.starts_with("http/1.1 413"), "{h}");
    assert!(closes(&h), "413 without connection: close: {h}");

    // An early refusal (no valid token) of a large body that fits the limit.
    let len = 512 * 1024;
    let head = format!(
        "POST /v2/user/profile HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer nope\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    let h = answer_head(&hub, head, vec![b' '; len]).await;
    assert!(h.contains("content-type: application/json"), "{h}");
    assert!(closes(&h), "an answer before the body was read, without connection: close: {h}");

    // A body that was read, and a request without one, keep the connection.
    let body = r#"{"nickname":"Al"}"#;
    let head = format!(
        "POST /v2/user/profile HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nX-CK-Appid: {APPID}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        alice.at,
        body.len()
    );
    let h = answer_head(&hub, head, body.as_bytes().to_vec()).await;
    assert!(h.starts_with("http/1.1 200") && !closes(&h), "{h}");
    let h = answer_head(&hub, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(), Vec::new()).await;
    assert!(h.starts_with("http/1.1 200") && !closes(&h), "{h}");
    hub.stop().await;
}

#[tokio::test]
async fn a_request_head_over_64_kib_is_431() {
    let hub = TestHub::start().await;
    for (kb, headers) in [(70, 1), (100, 1), (70, 10), (100, 25)] {
        let value = "v".repeat(kb * 1024 / headers);
        let extra: String = (0..headers).map(|i| format!("X-Pad-{i}: {value}\r\n")).collect();
        let head = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n");
        let h = answer_head(&hub, head, Vec::new()).await;
        assert!(h.starts_with("http/1.1 431"), "{kb} KB in {headers} headers: {h}");
        assert!(closes(&h), "{h}");
    }
    // Just under the limit is served.
    let value = "v".repeat(60 * 1024);
    let h = answer_head(&hub, format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: {value}\r\n\r\n"), Vec::new()).await;
    assert!(h.starts_with("http/1.1 200"), "{h}");
    hub.stop().await;
}
