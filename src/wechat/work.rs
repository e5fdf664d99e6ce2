//! The WeChat work a node does beside the sessions: the authorisation jobs of seed 000 (one per
//! product at a time, their progress in memory only, as the seed says) and pushes to WeChat
//! users (command results and alarms, seed 002) in background tasks with bounded retries.
//!
//! Nothing here is on the routing path: a push is handed over with [`Work::push`], which never
//! waits, and runs in a task the node tracks; at most [`MAX_PUSHES`] run at once, and a push
//! beyond that is dropped and counted. A push is tried up to [`PUSH_ATTEMPTS`] times (each under
//! the connector's own deadline and network retries) when WeChat timed out, could not be reached
//! or answered 5xx or errcode -1 (busy); any other errcode is final.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{WeChat, WeChatError};
use crate::store::Store;

/// Pushes that may run at once.
pub const MAX_PUSHES: usize = 256;
/// Tries per push.
pub const PUSH_ATTEMPTS: u32 = 3;
/// The wait before the second try; doubled for each later one.
pub const PUSH_BACKOFF: Duration = Duration::from_millis(500);

/// How an authorisation job of one product is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub running: bool,
    /// Devices the job set out to authorise.
    pub total: usize,
    /// Devices WeChat authorised so far.
    pub done: usize,
    /// The error the job stopped at: WeChat's errcode (or -1) and errmsg.
    pub error: Option<(i64, String)>,
}

#[derive(Clone)]
pub struct Work {
    store: Store,
    wechat: WeChat,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// The latest job of each product, by product id.
    jobs: Arc<Mutex<HashMap<String, Progress>>>,
    pushes: Arc<Semaphore>,
    pub stats: Arc<PushStats>,
}

/// What became of the pushes handed over since the node started.
#[derive(Debug, Default)]
pub struct PushStats {
    pub sent: AtomicU64,
    /// Given up: a final errcode, or every try failed.
    pub failed: AtomicU64,
    /// Not tried: [`MAX_PUSHES`] were under way.
    pub dropped: AtomicU64,
}

/// Marks the job finished when dropped (its task ended, however it ended).
pub struct JobGuard {
    jobs: Arc<Mutex<HashMap<String, Progress>>>,
    product_id: String,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        if let Some(p) = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&self.product_id) {
            p.running = false;
        }
    }
}

impl Work {
    pub fn new(store: Store, wechat: WeChat, tasks: TaskTracker, shutdown: CancellationToken) -> Work {
        Work { store, wechat, tasks, shutdown, jobs: Arc::default(), pushes: Arc::new(Semaphore::new(MAX_PUSHES)), stats: Arc::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Progress>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the product's job unless one runs; the guard ends it.
    pub fn start_job(&self, product_id: &str) -> Option<JobGuard> {
        let mut jobs = self.lock();
        if jobs.get(product_id).is_some_and(|p| p.running) {
            return None;
        }
        jobs.insert(product_id.to_owned(), Progress { running: true, ..Progress::default() });
        Some(JobGuard { jobs: self.jobs.clone(), product_id: product_id.to_owned() })
    }

    /// The product's latest job, if one ran since the node started.
    pub fn progress(&self, product_id: &str) -> Option<Progress> {
        self.lock().get(product_id).cloned()
    }

    pub fn update(&self, product_id: &str, f: impl FnOnce(&mut Progress)) {
        if let Some(p) = self.lock().get_mut(product_id) {
            f(p);
        }
    }

    /// Pushes `msg` to the WeChat user holding `push_token` of application `appid`, in the
    /// background. Never waits.
    pub fn push(&self, appid: &str, push_token: &str, msg: String) {
        let Ok(permit) = self.pushes.clone().try_acquire_owned() else {
            let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(dropped = n + 1, "too many WeChat pushes under way; dropped");
            }
            return;
        };
        let (store, wechat, shutdown) = (self.store.clone(), self.wechat.clone(), self.shutdown.clone());
        let (appid, push_token) = (appid.to_owned(), push_token.to_owned());
        let stats = self.stats.clone();
        self.tasks.spawn(async move {
            let _permit = permit;
            let outcome = tokio::select! {
                r = push_with_retries(&store, &wechat, &appid, &push_token, &msg) => r,
                _ = shutdown.cancelled() => return,
            };
            match outcome {
                Ok(()) => stats.sent.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(appid = %appid, error = %e, "a WeChat push failed");
                    stats.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        });
    }
}

async fn push_with_retries(store: &Store, wechat: &WeChat, appid: &str, push_token: &str, msg: &str) -> Result<(), String> {
    let app = match store.wechat_app(appid).await {
        Ok(Some(app)) => app,
        Ok(None) => return Err("the WeChat application is no longer on the platform".to_owned()),
        Err(e) => return Err(e.to_string()),
    };
    let mut last = String::new();
    for attempt in 0..PUSH_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(PUSH_BACKOFF * (1 << (attempt - 1))).await;
        }
        match wechat.push_app_msg(&app, push_token, msg).await {
            Ok(()) => return Ok(()),
            Err(e) if retryable(&e) => last = e.to_string(),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("{last} (after {PUSH_ATTEMPTS} tries)"))
}

fn retryable(e: &WeChatError) -> bool {
    match e {
        WeChatError::Timeout(_) | WeChatError::Network(_) => true,
        WeChatError::Status(s) => *s >= 500,
        WeChatError::Api { errcode, .. } => *errcode == -1,
        _ => false,
    }
}
