//! One task per WebSocket. A new socket must send its handshake (`userOnline` for apps,
//! `register`/`tmpReg` for devices) before the deadline; nothing is registered before that
//! succeeds. The task then owns the socket for its whole life: it reads frames, writes what its
//! bounded outbox receives, answers heartbeats and closes on silence, on a close request (slow
//! consumer, replaced device) or on shutdown.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tracing::Instrument;

use crate::hub::Hub;
use crate::mailbox::{CloseReason, Mailbox, Outbox};
use crate::protocol::{self, FrameError, HbConfig, Inbound};

mod app;
mod device;
#[doc(hidden)]
pub mod fuzzing;
mod handshake;

/// The socket type every session owns: an upgraded HTTP/1.1 connection, plain or TLS.
pub type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Limits for the WebSocket codec: a small read buffer (it grows only for a larger frame),
/// bounded messages, and a write buffer that gathers queued frames until the batch's flush.
pub fn ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(max_frame_bytes * 4)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// Runs a session on an upgraded connection until it ends.
///
/// The handshake runs boxed and the session it picks is boxed on its own, so once a session
/// settles in, the task holds only that session's state and a few pointers: an idle session's
/// memory is mostly its future (see ARCHITECTURE.md, Bounds).
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
pub fn run(hub: Arc<Hub>, io: TokioIo<Upgraded>, peer: SocketAddr) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let span = tracing::info_span!("ws", %peer, session = tracing::field::Empty, deviceid = tracing::field::Empty, apikey = tracing::field::Empty);
        if let Some(session) = Box::pin(open(hub, io)).instrument(span.clone()).await {
            session.instrument(span).await;
        }
    }
}

type SessionFuture = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The WebSocket and its handshake; returns the boxed session the handshake picked.
async fn open(hub: Arc<Hub>, io: TokioIo<Upgraded>) -> Option<SessionFuture> {
    let config = ws_config(hub.config.max_frame_bytes);
    let mut ws = WebSocketStream::from_raw_socket(io, tokio_tungstenite::tungstenite::protocol::Role::Server, Some(config)).await;
    Some(match handshake::run(&hub, &mut ws).await? {
        handshake::Next::App { user, appid, credential, reply } => Box::pin(app::run(hub, ws, user, appid, credential, reply)),
        handshake::Next::Device { device, reply } => Box::pin(device::run(hub, ws, device, reply)),
    })
}

/// What differs between an app and a device session: how a text frame is handled, what answers
/// become ready on their own (an app's commands waiting for acks) and what ending means.
pub(crate) trait Handler: Send {
    /// Handles one text frame; returns the immediate reply, if any.
    fn on_text(&mut self, hub: &Hub, text: Utf8Bytes) -> impl std::future::Future<Output = Option<String>> + Send;
    /// Whether [`Handler::next_answer`] has anything to wait for.
    fn has_pending(&self) -> bool;
    /// Whether the loop should read the next frame now; while false the socket pushes back.
    fn reads(&self) -> bool {
        true
    }
    /// The next answer that became ready on its own; only polled while [`Handler::has_pending`].
    fn next_answer(&mut self, hub: &Hub) -> impl std::future::Future<Output = Option<String>> + Send;
    /// Called once the session is over (the socket is done with).
    fn end(self, hub: &Hub) -> impl std::future::Future<Output = ()> + Send;
}

/// The session loop every kind shares, after its handshake: sends the handshake `reply`, then
/// owns the socket until the peer leaves, the hub asks it to close, the node shuts down or the
/// session goes silent past its heartbeat. Writes whatever the outbox receives, in batches.
pub(crate) async fn drive<H: Handler>(hub: Arc<Hub>, mut ws: Ws, mailbox: Arc<Mailbox>, mut outbox: Outbox, reply: String, mut handler: H) {
    let mut silence = Silence::new(&hub);
    let heartbeat = tokio::time::sleep_until(silence.deadline());
    tokio::pin!(heartbeat);
    'session: {
        if !send(&mut ws, reply).await {
            break 'session;
        }
        loop {
            tokio::select! {
                reason = mailbox.closed() => {
                    tracing::info!(?reason, "session closed by the hub");
                    Box::pin(close_for(&mut ws, reason)).await;
                    break;
                }
                _ = hub.sessions_end.cancelled() => {
                    Box::pin(close(&mut ws, CloseCode::Away, "shutting down")).await;
                    break;
                }
                Some(frame) = outbox.recv() => {
                    if !Box::pin(write_unless_closed(&hub, &mailbox, write_batch(&mut ws, frame, &mut outbox))).await {
                        break;
                    }
                }
                Some(answer) = handler.next_answer(&hub), if handler.has_pending() => {
                    if !Box::pin(write_unless_closed(&hub, &mailbox, send(&mut ws, answer))).await {
                        break;
                    }
                }
                _ = &mut heartbeat => {
                    if silence.expired() {
                        hub.metrics.heartbeat_expired.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("silent past the heartbeat, closing");
                        Box::pin(close(&mut ws, CloseCode::Normal, "heartbeat timeout")).await;
                        break;
                    }
                    heartbeat.as_mut().reset(silence.deadline());
                }
                r = read(&mut ws), if handler.reads() => {
                    silence.last_seen = Instant::now();
                    mailbox.heard_now();
                    let reply = match r {
                        Read::Text(text) => Box::pin(handler.on_text(&hub, text)).await,
                        Read::Binary => Some(reject(&hub, &FrameError::Malformed("binary frame".into()), None)),
                        Read::Nothing => None,
                        Read::TooBig => {
                            Box::pin(close(&mut ws, CloseCode::Size, "message too big")).await;
                            break;
                        }
                        Read::End => break,
                    };
                    if let Some(reply) = reply
                        && !Box::pin(write_unless_closed(&hub, &mailbox, send(&mut ws, reply))).await {
                            break;
                        }
                }
            }
        }
    }
    Box::pin(handler.end(&hub)).await;
}

/// The `config` every handshake reply carries.
pub(crate) fn hb_config(hub: &Hub) -> HbConfig {
    HbConfig { hb: 1, hb_interval: hub.config.hb_interval.as_secs() }
}

/// What one read from the socket meant for the session loop.
pub(crate) enum Read {
    Text(Utf8Bytes),
    /// A frame that needs no answer from the session (control frames, pongs).
    Nothing,
    /// A binary frame: not part of this protocol.
    Binary,
    /// The peer closed or the connection failed; the session ends.
    End,
    /// A message over the size limit: close 1009.
    TooBig,
}

pub(crate) async fn read(ws: &mut Ws) -> Read {
    match ws.next().await {
        Some(Ok(Message::Text(t))) => Read::Text(t),
        Some(Ok(Message::Binary(_))) => Read::Binary,
        Some(Ok(Message::Ping(_))) => {
            // tungstenite queued the Pong; flush it now rather than with the next write.
            let _ = ws.flush().await;
            Read::Nothing
        }
        Some(Ok(Message::Pong(_) | Message::Frame(_))) => Read::Nothing,
        Some(Ok(Message::Close(_))) => {
            // tungstenite queued the answering Close (RFC 6455 §5.5.1); flush it before the
            // session ends, bounded in case the peer stopped reading.
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.flush()).await;
            Read::End
        }
        None => Read::End,
        Some(Err(tungstenite::Error::Capacity(e))) => {
            tracing::debug!(error = %e, "frame over the size limit");
            Read::TooBig
        }
        Some(Err(tungstenite::Error::Protocol(e))) if violation(&e) => {
            tracing::debug!(error = %e, "protocol violation");
            fail(ws, CloseCode::Protocol, "protocol error").await;
            Read::End
        }
        Some(Err(tungstenite::Error::Utf8(e))) => {
            tracing::debug!(error = %e, "invalid UTF-8 in a frame");
            fail(ws, CloseCode::Invalid, "invalid UTF-8").await;
            Read::End
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "connection ended");
            Read::End
        }
    }
}

/// Frame-level faults of the peer that RFC 6455 answers by failing the connection with 1002.
fn violation(e: &tungstenite::error::ProtocolError) -> bool {
    use tungstenite::error::ProtocolError as P;
    matches!(
        e,
        P::NonZeroReservedBits
            | P::UnmaskedFrameFromClient
            | P::FragmentedControlFrame
            | P::ControlFrameTooBig
            | P::UnknownControlFrameType(_)
            | P::UnknownDataFrameType(_)
            | P::UnexpectedContinueFrame
            | P::ExpectedFragment(_)
            | P::InvalidOpcode(_)
            | P::InvalidCloseSequence
    )
}

/// Fails the connection (RFC 6455 §7.1.7): sends a Close frame with `code` and does not wait for
/// the answer, since what the peer sends next cannot be trusted to be framed.
async fn fail(ws: &mut Ws, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame { code, reason: reason.into() };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
}

pub(crate) async fn send(ws: &mut Ws, text: String) -> bool {
    ws.send(Message::Text(text.into())).await.is_ok()
}

/// Sends a close frame and gives the peer a moment to answer; errors mean it is gone already.
/// Bounded as a whole: a peer that stopped reading cannot hold the session open.
pub(crate) async fn close(ws: &mut Ws, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame { code, reason: reason.into() };
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if ws.close(Some(frame)).await.is_ok() {
            while ws.next().await.is_some() {}
        }
    })
    .await;
}

/// Writes everything the outbox holds right now in one flush.
pub(crate) async fn write_batch(ws: &mut Ws, first: Utf8Bytes, outbox: &mut Outbox) -> bool {
    if ws.feed(Message::Text(first)).await.is_err() {
        return false;
    }
    for _ in 0..64 {
        match outbox.try_recv() {
            Some(frame) => {
                if ws.feed(Message::Text(frame)).await.is_err() {
                    return false;
                }
            }
            None => break,
        }
    }
    ws.flush().await.is_ok()
}

/// Runs a write unless the hub asks the session to close, or shuts down, while it is blocked: a
/// peer that stops reading fills its socket and would otherwise keep a closed session (and its
/// registry entry) alive forever. False when the write failed or was abandoned; the caller ends
/// the session without a close frame, which could not get through a full socket anyway.
pub(crate) async fn write_unless_closed(hub: &Hub, mailbox: &Mailbox, write: impl std::future::Future<Output = bool>) -> bool {
    tokio::select! {
        biased;
        ok = write => ok,
        reason = mailbox.closed() => {
            tracing::info!(?reason, "closed by the hub while a write was blocked");
            false
        }
        _ = hub.sessions_end.cancelled() => false,
    }
}

/// Closes for a hub-side reason with the matching code.
pub(crate) async fn close_for(ws: &mut Ws, reason: CloseReason) {
    match reason {
        CloseReason::SlowConsumer => close(ws, CloseCode::Policy, "outbound queue full").await,
        CloseReason::Replaced => close(ws, CloseCode::Normal, "replaced by a newer connection").await,
        CloseReason::LoggedOut => close(ws, CloseCode::Policy, "logged out").await,
        CloseReason::Draining => close(ws, CloseCode::Away, "shutting down").await,
    }
}

/// The error frame for a frame that could not be used; counts it.
pub(crate) fn reject(hub: &Hub, err: &FrameError, frame: Option<&Inbound<'_>>) -> String {
    hub.metrics.frames_rejected.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(error = %err, "frame rejected");
    let reason = match err {
        FrameError::Malformed(_) => "malformed JSON or wrong field type".to_owned(),
        other => other.to_string(),
    };
    protocol::error_frame(400, &reason, frame.and_then(|f| f.sequence))
}

/// When a silent session must be closed, re-armed lazily from the last time anything arrived.
pub(crate) struct Silence {
    limit: Duration,
    pub last_seen: Instant,
}

impl Silence {
    pub fn new(hub: &Hub) -> Self {
        Silence { limit: hub.config.hb_interval + hub.config.hb_grace, last_seen: Instant::now() }
    }

    pub fn deadline(&self) -> Instant {
        self.last_seen + self.limit
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline()
    }
}
