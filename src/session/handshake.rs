//! The first frame of a socket, under a deadline: `userOnline` makes an app session,
//! `register`/`tmpReg` a device session. Anything else is answered with an error frame and the
//! socket is closed. Nothing is registered with the router before the handshake succeeds.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Read, Ws, app, device, read, reject, send};
use crate::Hub;
use crate::ids::{AppId, DeviceId, UserKey};
use crate::protocol::{self, FrameError, Inbound, Outbound};
use crate::store::TokenCheck;

pub(super) async fn run(hub: Arc<Hub>, mut ws: Ws) {
    let first = tokio::select! {
        r = tokio::time::timeout(hub.config.handshake_timeout, first_text(&mut ws)) => r,
        _ = hub.shutdown.cancelled() => return super::close(&mut ws, CloseCode::Away, "shutting down").await,
    };
    let text = match first {
        Err(_) => {
            tracing::debug!("no handshake before the deadline");
            return super::close(&mut ws, CloseCode::Policy, "handshake timeout").await;
        }
        Ok(Err(Read::TooBig)) => return super::close(&mut ws, CloseCode::Size, "message too big").await,
        Ok(Err(Read::Binary)) => {
            let reply = reject(&hub, &FrameError::Malformed("binary frame".into()), None);
            return refuse(&hub, &mut ws, reply).await;
        }
        Ok(Err(_)) => return,
        Ok(Ok(text)) => text,
    };
    let frame = match Inbound::parse(&text) {
        Ok(f) => f,
        Err(e) => return refuse(&hub, &mut ws, reject(&hub, &e, None)).await,
    };
    match frame.action.as_deref() {
        Some("userOnline") => app_online(hub, ws, &frame).await,
        Some("register" | "tmpReg") => device_register(hub, ws, &frame).await,
        _ => {
            let reply = protocol::error_frame(400, "first frame must be userOnline or register", frame.sequence);
            hub.metrics.frames_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            refuse(&hub, &mut ws, reply).await
        }
    }
}

/// Reads until the first text frame; binary frames before it are a protocol violation.
async fn first_text(ws: &mut Ws) -> Result<String, Read> {
    loop {
        match read(ws).await {
            Read::Text(t) => return Ok(t.as_str().to_owned()),
            Read::Nothing => continue,
            other => return Err(other),
        }
    }
}

async fn refuse(_hub: &Hub, ws: &mut Ws, reply: String) {
    send(ws, reply).await;
    super::close(ws, CloseCode::Policy, "handshake refused").await;
}

async fn app_online(hub: Arc<Hub>, mut ws: Ws, frame: &Inbound<'_>) {
    let seq = frame.sequence;
    let (Some(at), Some(apikey), Some(appid)) = (frame.at.as_deref(), frame.apikey.as_deref(), frame.appid.as_deref()) else {
        let missing = if frame.at.is_none() {
            "at"
        } else if frame.apikey.is_none() {
            "apikey"
        } else {
            "appid"
        };
        let reply = reject(&hub, &FrameError::Missing(missing), Some(frame));
        return refuse(&hub, &mut ws, reply).await;
    };
    let refusal = match hub.store.check_access(at).await {
        Err(e) => {
            tracing::warn!(error = %e, "store unavailable during userOnline");
            Some((500, "internal error"))
        }
        Ok(TokenCheck::Unknown) => Some((401, "invalid access token")),
        Ok(TokenCheck::Expired) => Some((402, "access token expired")),
        Ok(TokenCheck::Valid { apikey: owner, appid: token_app }) => {
            if owner.as_str() != apikey {
                Some((401, "apikey does not match the access token"))
            } else if token_app.as_str() != appid {
                Some((407, "appid does not match the access token"))
            } else {
                None
            }
        }
    };
    if let Some((code, reason)) = refusal {
        tracing::info!(code, reason, "userOnline refused");
        return refuse(&hub, &mut ws, protocol::error_frame(code, reason, seq)).await;
    }
    let user = UserKey::new(apikey);
    let reply =
        Outbound { error: Some(0), apikey: Some(apikey), config: Some(super::hb_config(&hub)), sequence: seq, ..Default::default() };
    app::run(hub, ws, user, AppId::new(appid), reply.to_text()).await;
}

async fn device_register(hub: Arc<Hub>, mut ws: Ws, frame: &Inbound<'_>) {
    let Ok(deviceid) = frame.require_deviceid() else {
        let reply = reject(&hub, &FrameError::Missing("deviceid"), Some(frame));
        return refuse(&hub, &mut ws, reply).await;
    };
    let temporary = frame.action.as_deref() == Some("tmpReg");
    let record = match hub.store.device(deviceid).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "store unavailable during register");
            return refuse(&hub, &mut ws, protocol::register_refusal(500, "Internal Error", deviceid)).await;
        }
    };
    let refusal = match &record {
        None => Some((404, "Not Found")),
        Some(d) if !crate::auth::same_secret(&d.factory_apikey, frame.apikey.as_deref().unwrap_or("")) => Some((403, "Forbidden")),
        Some(d) if d.owner.is_none() && !temporary => Some((403, "Not Registered")),
        Some(_) => None,
    };
    if let Some((code, reason)) = refusal {
        tracing::info!(device = deviceid, code, reason, "register refused");
        hub.metrics.frames_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return refuse(&hub, &mut ws, protocol::register_refusal(code, reason, deviceid)).await;
    }
    let record = record.expect("checked above");
    let id = DeviceId::new(deviceid);
    let audience = match hub.store.audience(&id).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "store unavailable during register");
            return refuse(&hub, &mut ws, protocol::register_refusal(500, "Internal Error", deviceid)).await;
        }
    };
    let apikey = record.owner.as_ref().map_or(record.factory_apikey.as_str(), UserKey::as_str).to_owned();
    let reply = Outbound {
        error: Some(0),
        deviceid: Some(deviceid),
        apikey: Some(&apikey),
        config: Some(super::hb_config(&hub)),
        ..Default::default()
    };
    let reply = reply.to_text();
    let state = crate::registry::DeviceState::from_json(&record.params);
    device::run(hub, ws, id, apikey, audience, state, reply).await;
}
