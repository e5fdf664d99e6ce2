//! `GET /api/ws`: the WebSocket upgrade. The response is written here; the upgraded connection
//! becomes a session task tracked by the hub, which keeps the connection's slot in the
//! connection cap until the session ends.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::conn::ConnSlot;
use crate::hub::Hub;
use crate::session;

fn header_has(req: &Request, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().filter_map(|v| v.to_str().ok()).any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

pub async fn upgrade(State(hub): State<Arc<Hub>>, mut req: Request) -> Response {
    let is_upgrade = req.method() == axum::http::Method::GET
        && header_has(&req, header::CONNECTION, "upgrade")
        && header_has(&req, header::UPGRADE, "websocket")
        && req.headers().get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).filter(|_| is_upgrade).cloned() else {
        // RFC 6455 §4.4: a refused handshake names the version this server speaks.
        let version = [(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"))];
        return (StatusCode::BAD_REQUEST, version, "expected a WebSocket upgrade (version 13)\n").into_response();
    };
    let peer = req.extensions().get::<SocketAddr>().copied().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let slot = req.extensions().get::<ConnSlot>().cloned();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tracked = hub.clone();
    hub.tasks.spawn(async move {
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                session::run(tracked, TokioIo::new(upgraded), peer).await;
            }
            Err(e) => tracing::debug!(error = %e, %peer, "upgrade failed"),
        }
    });
    let accept = derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, HeaderValue::from_static("Upgrade"))
        .header(header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(axum::body::Body::empty())
        .expect("static response parts are valid")
}
