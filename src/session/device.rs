//! A device session after `register`: state reports are stored in memory (and saved in batches
//! by the state writer) and fanned out; acks complete the waiting app command; `date` and
//! `query` are answered here; commands the router queues are written to the device in order.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::value::RawValue;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Read, Silence, Ws, read, reject, send, write_batch, write_unless_closed};
use crate::hub::Hub;
use crate::ids::DeviceId;
use crate::protocol::{self, FrameError, Inbound, Outbound};
use crate::registry::{Ack, DeviceLink, DeviceState, SessionHandle};
use crate::audience::Audience;

/// A plain fn returning an `async move` block rather than an `async fn`: an async fn keeps a
/// second copy of its arguments (the socket among them) for its whole life.
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
pub(super) fn run(
    hub: Arc<Hub>,
    mut ws: Ws,
    deviceid: DeviceId,
    apikey: String,
    audience: Option<Audience>,
    state: DeviceState,
    reply: String,
) -> impl Future<Output = ()> + Send {
    async move {
        let (handle, mut outbox, control) = SessionHandle::new(hub.config.outbox_capacity);
        tracing::Span::current().record("session", tracing::field::display(handle.id)).record("device", tracing::field::display(&deviceid));
        tracing::info!(bound = audience.is_some(), "device online");
        let link = Arc::new(DeviceLink::new(deviceid, handle, audience, state));
        hub.router.attach_device(link.clone());
        hub.metrics.device_sessions.fetch_add(1, Ordering::Relaxed);
        // Attached first, so a command sent right after the reply already finds the device; such a
        // command waits in the outbox until the loop below writes it.

        let mut silence = Silence::new(&hub);
        let heartbeat = tokio::time::sleep_until(silence.deadline());
        tokio::pin!(heartbeat);

        'session: {
            if !send(&mut ws, reply).await {
                break 'session;
            }
            loop {
                tokio::select! {
                    reason = control.closed() => {
                        tracing::info!(?reason, "device session closed by the hub");
                        Box::pin(super::close_for(&mut ws, reason)).await;
                        break;
                    }
                    _ = hub.shutdown.cancelled() => {
                        Box::pin(super::close(&mut ws, CloseCode::Away, "shutting down")).await;
                        break;
                    }
                    Some(frame) = outbox.recv() => {
                        if !Box::pin(write_unless_closed(&hub, &control, write_batch(&mut ws, frame, &mut outbox))).await {
                            break;
                        }
                    }
                    _ = &mut heartbeat => {
                        if silence.expired() {
                            hub.metrics.heartbeat_expired.fetch_add(1, Ordering::Relaxed);
                            tracing::info!("device silent past its heartbeat, closing");
                            Box::pin(super::close(&mut ws, CloseCode::Normal, "heartbeat timeout")).await;
                            break;
                        }
                        heartbeat.as_mut().reset(silence.deadline());
                    }
                    r = read(&mut ws) => {
                        silence.last_seen = Instant::now();
                        let reply = match r {
                            Read::Text(text) => on_text(&hub, &link, &apikey, text.as_str()),
                            Read::Binary => Some(reject(&hub, &FrameError::Malformed("binary frame".into()), None)),
                            Read::Nothing => None,
                            Read::TooBig => {
                                Box::pin(super::close(&mut ws, CloseCode::Size, "message too big")).await;
                                break;
                            }
                            Read::End => break,
                        };
                        if let Some(reply) = reply {
                            if !Box::pin(write_unless_closed(&hub, &control, send(&mut ws, reply))).await {
                                break;
                            }
                        }
                    }
                }
            }
        }
        hub.router.detach_device(&link);
        hub.metrics.device_sessions.fetch_sub(1, Ordering::Relaxed);
        // Save now rather than with the next batch, so a quick reconnect reads the latest state.
        Box::pin(hub.state.save_now(&link)).await;
        tracing::info!("device offline");
    }
}

fn on_text(hub: &Hub, link: &Arc<DeviceLink>, apikey: &str, text: &str) -> Option<String> {
    if text == "ping" {
        return Some("pong".to_owned());
    }
    let frame = match Inbound::parse(text) {
        Ok(f) => f,
        Err(e) => return Some(reject(hub, &e, None)),
    };
    if let Some(id) = frame.deviceid.as_deref() {
        if id != link.deviceid.as_str() {
            hub.metrics.frames_rejected.fetch_add(1, Ordering::Relaxed);
            return Some(protocol::error_frame(406, "a device may only speak for its own deviceid", frame.sequence));
        }
    }
    let deviceid = link.deviceid.as_str();
    let ok = || Outbound {
        error: Some(0),
        deviceid: Some(deviceid),
        apikey: Some(apikey),
        sequence: frame.sequence,
        d_seq: frame.d_seq,
        ..Default::default()
    };
    match frame.action.as_deref() {
        None if frame.error.is_some() => {
            on_ack(hub, link, &frame);
            None
        }
        Some("update") => {
            let params = match frame.object_params() {
                Ok(p) => p,
                Err(e) => return Some(reject(hub, &e, Some(&frame))),
            };
            let Ok(delta) = serde_json::from_str::<BTreeMap<String, &RawValue>>(params.get()) else {
                return Some(reject(hub, &FrameError::WrongType("params"), Some(&frame)));
            };
            let merged = link.state.lock().unwrap_or_else(|p| p.into_inner()).merge(delta, hub.config.max_frame_bytes);
            if let Err(e) = merged {
                hub.metrics.frames_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::info!(limit = e.limit, "state report refused: stored state would be too large");
                return Some(protocol::error_frame(400, "device state would exceed the size limit", frame.sequence));
            }
            hub.state.mark(link);
            hub.router.report(link, params);
            if let Some(audience) = link.audience() {
                hub.state.reported(&link.deviceid, audience, params);
            }
            Some(ok().to_text())
        }
        Some("query") => Some(query(link, &frame, ok())),
        Some("date") => {
            let date = protocol_date();
            Some(Outbound { date: Some(&date), ..ok() }.to_text())
        }
        Some("register" | "tmpReg") => Some(Outbound { config: Some(super::hb_config(hub)), ..ok() }.to_text()),
        Some(other) => Some(reject(hub, &FrameError::UnknownAction(other.to_owned()), Some(&frame))),
        None => Some(reject(hub, &FrameError::Missing("action"), Some(&frame))),
    }
}

/// An ack for a routed command: hand it to the waiting app, or drop it if nobody waits.
fn on_ack(hub: &Hub, link: &Arc<DeviceLink>, frame: &Inbound<'_>) {
    let Some(sequence) = frame.sequence else {
        tracing::debug!("ack without a sequence dropped");
        return;
    };
    let params = frame.params.map(ToOwned::to_owned);
    let ack = Ack { error: frame.error.unwrap_or(0), params };
    let merge = |params: &RawValue| {
        // An acked update changed the device as a report would; a later report still wins.
        let Ok(delta) = serde_json::from_str::<BTreeMap<String, &RawValue>>(params.get()) else { return };
        if link.state.lock().unwrap_or_else(|p| p.into_inner()).merge(delta, hub.config.max_frame_bytes).is_ok() {
            hub.state.mark(link);
        }
    };
    if !link.complete(&protocol::sequence_key(sequence), ack, merge) {
        hub.metrics.acks_late.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(sequence = sequence.get(), "late or unsolicited ack dropped");
    }
}

/// The device asks for its stored params: the named ones, or all for an empty list; the number
/// `0` when there is nothing to answer.
fn query(link: &DeviceLink, frame: &Inbound<'_>, ok: Outbound<'_>) -> String {
    let wanted: Vec<String> = match frame.params.map(|p| serde_json::from_str::<Vec<String>>(p.get())) {
        None => Vec::new(),
        Some(Ok(keys)) => keys,
        Some(Err(_)) => return protocol::error_frame(400, "field `params` has the wrong type", frame.sequence),
    };
    let answer = link.state.lock().unwrap_or_else(|p| p.into_inner()).pick(&wanted).map(protocol::raw);
    let params: &RawValue = answer.as_deref().unwrap_or_else(|| protocol::zero());
    Outbound { params: Some(params), ..ok }.to_text()
}

/// ISO-8601 UTC with milliseconds, as firmware expects from `date`.
pub fn protocol_date() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::now_utc().format(&format).expect("UTC timestamps format")
}
