//! Access tokens, one per WeChat application: fetched with the appid and secret, kept until
//! shortly before WeChat's `expires_in`, dropped when WeChat says a call's token is invalid.
//!
//! One fetch at a time per application: callers that find no usable token queue on that
//! application's slot, and all but the first find the token the first one fetched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A token is given up this long before WeChat says it expires (at most a tenth of its life).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct Cached {
    token: String,
    use_until: Instant,
}

#[derive(Default)]
struct Slot {
    current: tokio::sync::Mutex<Option<Cached>>,
}

/// The tokens of every application the connector has called for. Entries are few (one per
/// WeChat application the operator added) and never removed.
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl TokenCache {
    fn slot(&self, appid: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(appid.to_owned()).or_default().clone()
    }

    /// The application's token: the cached one while it is usable, else what `fetch` answers
    /// (`(token, expires_in)`), which is then cached.
    pub async fn get<F, Fut, E>(&self, appid: &str, fetch: F) -> Result<String, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(String, Duration), E>>,
    {
        let slot = self.slot(appid);
        let mut current = slot.current.lock().await;
        if let Some(c) = current.as_ref().filter(|c| Instant::now() < c.use_until) {
            return Ok(c.token.clone());
        }
        let (token, expires_in) = fetch().await?;
        let margin = REFRESH_MARGIN.min(expires_in / 10);
        *current = Some(Cached { token: token.clone(), use_until: Instant::now() + expires_in.saturating_sub(margin) });
        Ok(token)
    }

    /// Drops `stale` if it is still the application's cached token (a newer one fetched by
    /// someone else meanwhile is kept).
    pub async fn invalidate(&self, appid: &str, stale: &str) {
        let slot = self.slot(appid);
        let mut current = slot.current.lock().await;
        if current.as_ref().is_some_and(|c| c.token == stale) {
            *current = None;
        }
    }

    /// Forgets the application's token (e.g. after its secret changed).
    pub async fn forget(&self, appid: &str) {
        *self.slot(appid).current.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn kept_until_shortly_before_expiry_then_fetched_again() {
        let cache = TokenCache::default();
        let fetches = std::sync::atomic::AtomicU32::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, ()>((format!("t{n}"), Duration::from_secs(7200)))
        };
        assert_eq!(cache.get("wx1", fetch).await.unwrap(), "t0");
        tokio::time::advance(Duration::from_secs(7200 - 301)).await;
        assert_eq!(cache.get("wx1", fetch).await.unwrap(), "t0");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.get("wx1", fetch).await.unwrap(), "t1", "refreshed within the margin before expiry");
        // Another application has its own token.
        assert_eq!(cache.get("wx2", fetch).await.unwrap(), "t2");
        // Invalidating an old token keeps the current one; invalidating the current one drops it.
        cache.invalidate("wx1", "t0").await;
        assert_eq!(cache.get("wx1", fetch).await.unwrap(), "t1");
        cache.invalidate("wx1", "t1").await;
        assert_eq!(cache.get("wx1", fetch).await.unwrap(), "t3");
    }

    #[tokio::test(start_paused = true)]
    async fn short_lived_tokens_keep_most_of_their_life() {
        let cache = TokenCache::default();
        let fetch = || async { Ok::<_, ()>(("t".to_owned(), Duration::from_secs(100))) };
        cache.get("wx", fetch).await.unwrap();
        tokio::time::advance(Duration::from_secs(89)).await;
        let again = || async { Ok::<_, ()>(("u".to_owned(), Duration::from_secs(100))) };
        assert_eq!(cache.get("wx", again).await.unwrap(), "t");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.get("wx", again).await.unwrap(), "u");
    }

    #[tokio::test]
    async fn a_failed_fetch_caches_nothing() {
        let cache = TokenCache::default();
        let fail = || async { Err::<(String, Duration), _>("no") };
        assert_eq!(cache.get("wx", fail).await, Err("no"));
        let ok = || async { Ok::<_, &str>(("t".to_owned(), Duration::from_secs(7200))) };
        assert_eq!(cache.get("wx", ok).await.unwrap(), "t");
    }
}
