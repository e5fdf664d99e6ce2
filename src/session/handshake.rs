//! The first frame of a socket, under a deadline: `userOnline` makes an app session,
//! `register`/`tmpReg` a device session. Anything else is answered with an error frame and the
//! socket is closed. Nothing is registered with the router before the handshake succeeds.

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Read, Ws, read, reject, send};
use crate::audience::Audience;
use crate::device_state::DeviceState;
use crate::hub::Hub;
use crate::ids::{AppId, DeviceId, UserKey};
use crate::protocol::{self, FrameError, Inbound, Outbound};
use crate::store::TokenCheck;

/// What the handshake decided: the session to run, with what it needs. The handshake future
/// (store queries included) is gone before the long-lived session future starts.
pub(super) enum Next {
    App { user: UserKey, appid: AppId, credential: u64, reply: String },
    Device { device: Registered, reply: String },
}

/// A device that passed `register`: who it is, whom it answers to, and where it starts from.
pub(super) struct Registered {
    pub id: DeviceId,
    /// The owner's apikey (the factory key for an unbound `tmpReg` device).
    pub apikey: String,
    pub audience: Option<Audience>,
    /// The state the store had.
    pub state: DeviceState,
    /// A registered (not `tmpReg`) device, whose login time is kept.
    pub record_login: bool,
    /// When it registered (milliseconds since the epoch).
    pub at: i64,
}

/// Reads and checks the first frame. `None` when the socket was refused (and closed) or is gone.
pub(super) async fn run(hub: &Hub, ws: &mut Ws) -> Option<Next> {
    let first = tokio::select! {
        r = tokio::time::timeout(hub.config.handshake_timeout, first_text(ws)) => r,
        _ = hub.shutdown.cancelled() => {
            Box::pin(super::close(ws, CloseCode::Away, "shutting down")).await;
            return None;
        }
    };
    let text = match first {
        Err(_) => {
            tracing::debug!("no handshake before the deadline");
            {
                Box::pin(super::close(ws, CloseCode::Policy, "handshake timeout")).await;
                return None;
            }
        }
        Ok(Err(Read::TooBig)) => {
            Box::pin(super::close(ws, CloseCode::Size, "message too big")).await;
            return None;
        }
        Ok(Err(Read::Binary)) => {
            let reply = reject(hub, &FrameError::Malformed("binary frame".into()), None);
            {
                Box::pin(refuse(hub, ws, reply)).await;
                return None;
            }
        }
        Ok(Err(_)) => return None,
        Ok(Ok(text)) => text,
    };
    let frame = match Inbound::parse(&text) {
        Ok(f) => f,
        Err(e) => {
            Box::pin(refuse(hub, ws, reject(hub, &e, None))).await;
            return None;
        }
    };
    match frame.action.as_deref() {
        Some("userOnline") => app_online(hub, ws, &frame).await,
        Some("register" | "tmpReg") => device_register(hub, ws, &frame).await,
        _ => {
            let reply = protocol::error_frame(400, "first frame must be userOnline or register", frame.sequence);
            hub.metrics.frames_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Box::pin(refuse(hub, ws, reply)).await;
            None
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
    Box::pin(super::close(ws, CloseCode::Policy, "handshake refused")).await;
}

async fn app_online(hub: &Hub, ws: &mut Ws, frame: &Inbound<'_>) -> Option<Next> {
    let seq = frame.sequence;
    let (Some(at), Some(apikey), Some(appid)) = (frame.at.as_deref(), frame.apikey.as_deref(), frame.appid.as_deref()) else {
        let missing = if frame.at.is_none() {
            "at"
        } else if frame.apikey.is_none() {
            "apikey"
        } else {
            "appid"
        };
        let reply = reject(hub, &FrameError::Missing(missing), Some(frame));
        {
            Box::pin(refuse(hub, ws, reply)).await;
            return None;
        }
    };
    let refusal = match Box::pin(hub.store.check_access(at)).await {
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
        {
            Box::pin(refuse(hub, ws, protocol::error_frame(code, reason, seq))).await;
            return None;
        }
    }
    let user = UserKey::new(apikey);
    // A soft bound (concurrent handshakes may pass it by a few): refuse, never kick an older one.
    // In a cluster it counts the user's sessions on every node, as heard over NATS (see the
    // bound's slack in `cluster::sessions`).
    if hub.router.user_sessions_everywhere(&user) >= hub.config.max_sessions_per_user {
        tracing::info!(%user, "userOnline refused: too many sessions");
        hub.metrics.frames_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(refuse(hub, ws, protocol::error_frame(406, "too many sessions for this user", seq))).await;
        return None;
    }
    let reply = Outbound { error: Some(0), apikey: Some(apikey), config: Some(super::hb_config(hub)), sequence: seq, ..Default::default() };
    Some(Next::App { user, appid: AppId::new(appid), credential: crate::auth::token_tag(at), reply: reply.to_text() })
}

async fn device_register(hub: &Hub, ws: &mut Ws, frame: &Inbound<'_>) -> Option<Next> {
    let Ok(deviceid) = frame.require_deviceid() else {
        let reply = reject(hub, &FrameError::Missing("deviceid"), Some(frame));
        {
            Box::pin(refuse(hub, ws, reply)).await;
            return None;
        }
    };
    let temporary = frame.action.as_deref() == Some("tmpReg");
    // Factory keys are guessed like passwords: the device's account locks the same way.
    let account = format!("device:{deviceid}");
    if let Err(retry) = hub.lockout.attempt(&account) {
        tracing::info!(device = deviceid, retry_secs = retry.as_secs(), "register refused: too many failed attempts");
        hub.metrics.frames_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(refuse(hub, ws, protocol::register_refusal(429, "Too Many Failed Attempts", deviceid))).await;
        return None;
    }
    let found = match Box::pin(hub.store.device_with_audience(deviceid)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "store unavailable during register");
            Box::pin(refuse(hub, ws, protocol::register_refusal(500, "Internal Error", deviceid))).await;
            return None;
        }
    };
    let key_ok = found.as_ref().is_some_and(|(d, _)| crate::auth::same_secret(&d.factory_apikey, frame.apikey.as_deref().unwrap_or("")));
    if key_ok || found.is_none() {
        // Only a wrong key of a device that exists counts as a failure.
        hub.lockout.succeeded(&account);
    }
    let refusal = match &found {
        None => Some((404, "Not Found")),
        Some(_) if !key_ok => Some((403, "Forbidden")),
        Some((d, _)) if d.owner.is_none() && !temporary => Some((403, "Not Registered")),
        Some(_) => None,
    };
    let (Some((record, audience)), None) = (found, refusal) else {
        let (code, reason) = refusal.unwrap_or((404, "Not Found"));
        tracing::info!(device = deviceid, code, reason, "register refused");
        hub.metrics.frames_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(refuse(hub, ws, protocol::register_refusal(code, reason, deviceid))).await;
        return None;
    };
    let id = DeviceId::new(deviceid);
    let apikey = record.owner.as_ref().map_or(record.factory_apikey.as_str(), UserKey::as_str).to_owned();
    let reply = Outbound {
        error: Some(0),
        deviceid: Some(deviceid),
        apikey: Some(&apikey),
        config: Some(super::hb_config(hub)),
        ..Default::default()
    };
    let reply = reply.to_text();
    let state = DeviceState::from_json(&record.params);
    let at = crate::clock::now_millis();
    if !temporary && !record.active {
        // The first registration activates the device (seed 003's `is_active`/`active_date`):
        // one statement, off the handshake's path. Later logins are recorded when the session
        // ends, and the live hub answers for online devices.
        let (store, deviceid) = (hub.store.clone(), deviceid.to_owned());
        hub.tasks.spawn(async move {
            if let Err(e) = store.device_logged_in(&deviceid, at).await {
                tracing::warn!(error = %e, device = %deviceid, "cannot record a device's activation");
            }
        });
    }
    Some(Next::Device { device: Registered { id, apikey, audience, state, record_login: !temporary, at }, reply })
}
