//! How anyone but its own task reaches a session: a [`SessionHandle`] queues frames into the
//! session's bounded [`Mailbox`] without waiting (a full queue is the caller's to answer, or
//! closes a slow consumer) and asks the session to close. The session task drains its
//! [`Outbox`] and watches for the close request.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::ids::SessionId;
use crate::metrics::Metrics;
use crate::sync::lock;

/// Why the hub asked a session to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// Its outbound queue was full: it is not reading fast enough.
    SlowConsumer = 1,
    /// Another connection registered the same device.
    Replaced = 2,
    /// The access token the session logged in with was revoked (logout).
    LoggedOut = 3,
    /// The node is shutting down and drains its sessions a few at a time.
    Draining = 4,
}

impl CloseReason {
    pub fn from_code(code: u8) -> Option<CloseReason> {
        match code {
            1 => Some(CloseReason::SlowConsumer),
            2 => Some(CloseReason::Replaced),
            3 => Some(CloseReason::LoggedOut),
            4 => Some(CloseReason::Draining),
            _ => None,
        }
    }
}

/// A session's mailbox, shared between its task and every handle to it: the close request and
/// the outbound queue. The queue is a plain deque that allocates only when frames arrive (an idle session
/// holds no queue memory), bounded by `capacity`.
#[derive(Debug)]
pub struct Mailbox {
    reason: AtomicU8,
    notify: Notify,
    queue: Mutex<Queue>,
    ready: Notify,
    capacity: usize,
    /// A tag of the credential an app session logged in with (0 for devices), so revoking it
    /// can close the sessions it opened.
    credential: AtomicU64,
    /// When the peer was last heard from (any frame), in milliseconds since the epoch; set by
    /// the session task, read by operators.
    heard: AtomicI64,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Utf8Bytes>,
    /// Set when the session's receiving end is gone: nothing more is accepted.
    closed: bool,
}

impl Mailbox {
    fn new(capacity: usize) -> Self {
        Mailbox {
            reason: AtomicU8::new(0),
            notify: Notify::new(),
            queue: Mutex::default(),
            ready: Notify::new(),
            capacity,
            credential: AtomicU64::new(0),
            heard: AtomicI64::new(crate::clock::now_millis()),
        }
    }

    /// Resolves once a close was requested; returns the first reason given.
    pub async fn closed(&self) -> CloseReason {
        loop {
            if let Some(r) = self.reason() {
                return r;
            }
            self.notify.notified().await;
        }
    }

    pub fn reason(&self) -> Option<CloseReason> {
        CloseReason::from_code(self.reason.load(Ordering::Acquire))
    }

    /// The session task heard from its peer now.
    pub fn heard_now(&self) {
        self.heard.store(crate::clock::now_millis(), Ordering::Relaxed);
    }

    fn request(&self, reason: CloseReason) {
        if self.reason.compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.notify.notify_one();
        }
    }

    /// Queues `frame` unless the queue is closed or holds `capacity - reserved` frames already.
    fn push(&self, frame: Utf8Bytes, reserved: usize) -> Result<(), Refused> {
        {
            let mut q = lock(&self.queue);
            if q.closed {
                return Err(Refused::Closed);
            }
            if q.frames.len() >= self.capacity.saturating_sub(reserved) {
                return Err(Refused::Full);
            }
            q.frames.push_back(frame);
        }
        self.ready.notify_one();
        Ok(())
    }

    fn pop(&self) -> Option<Utf8Bytes> {
        let mut q = lock(&self.queue);
        let frame = q.frames.pop_front();
        if q.frames.is_empty() && q.frames.capacity() > 16 {
            // Give back what a burst grew; an idle session keeps a small queue at most.
            q.frames = VecDeque::new();
        }
        frame
    }
}

/// The session task's end of its outbound queue. Dropping it closes the queue and frees what
/// is left in it.
#[derive(Debug)]
pub struct Outbox {
    mailbox: Arc<Mailbox>,
}

impl Outbox {
    /// The next queued frame, waiting for one. (`Option` for the `select!` pattern; never `None`.)
    pub async fn recv(&mut self) -> Option<Utf8Bytes> {
        loop {
            if let Some(f) = self.mailbox.pop() {
                return Some(f);
            }
            // A push between the pop and this wait leaves a permit, so no wake-up is lost.
            self.mailbox.ready.notified().await;
        }
    }

    pub fn try_recv(&mut self) -> Option<Utf8Bytes> {
        self.mailbox.pop()
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut q = lock(&self.mailbox.queue);
        q.closed = true;
        q.frames = VecDeque::new();
    }
}

/// A handle to one live session. Cloning is cheap; the session task holds the receiving end.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub id: SessionId,
    mailbox: Arc<Mailbox>,
}

/// Why a frame could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    Closed,
}

impl SessionHandle {
    /// Queues a frame without waiting and without judging the peer: a full queue is the
    /// caller's to answer (a command for a busy device), not a reason to close the session.
    pub fn offer(&self, frame: Utf8Bytes) -> Result<(), Refused> {
        self.mailbox.push(frame, 0)
    }

    /// [`SessionHandle::offer`], but refused while fewer than a quarter of the queue's places are
    /// free: what a device's sharees send leaves room for its owner's commands.
    pub fn offer_leaving_room(&self, frame: Utf8Bytes) -> Result<(), Refused> {
        self.mailbox.push(frame, self.mailbox.capacity / 4)
    }

    /// A handle and the two ends its session task keeps.
    pub fn new(capacity: usize) -> (SessionHandle, Outbox, Arc<Mailbox>) {
        let mailbox = Arc::new(Mailbox::new(capacity));
        (SessionHandle { id: SessionId::next(), mailbox: mailbox.clone() }, Outbox { mailbox: mailbox.clone() }, mailbox)
    }

    /// Queues a frame without waiting. A full queue closes the session as a slow consumer: the
    /// router never waits for a peer.
    pub fn deliver(&self, frame: Utf8Bytes, metrics: &Metrics) -> bool {
        match self.mailbox.push(frame, 0) {
            Ok(()) => true,
            Err(Refused::Full) => {
                if self.mailbox.reason().is_none() {
                    metrics.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(session = %self.id, "outbound queue full, closing slow consumer");
                }
                self.close(CloseReason::SlowConsumer);
                false
            }
            Err(Refused::Closed) => false,
        }
    }

    pub fn close(&self, reason: CloseReason) {
        self.mailbox.request(reason);
    }

    /// Records the credential tag this session logged in with.
    pub fn set_credential(&self, tag: u64) {
        self.mailbox.credential.store(tag, Ordering::Relaxed);
    }

    pub fn credential(&self) -> u64 {
        self.mailbox.credential.load(Ordering::Relaxed)
    }

    /// When the peer was last heard from (any frame), in milliseconds since the epoch.
    pub fn last_heard(&self) -> i64 {
        self.mailbox.heard.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
