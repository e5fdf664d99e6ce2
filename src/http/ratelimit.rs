//! The seed's call rule, "at most 300 calls per 5 minutes from one IP to one API": a fixed-window
//! counter per (client IP, method, route) ([`crate::rate`]; in a cluster, counted over every node).
//! Loopback clients are exempt unless `rate_limit_loopback` is set; behind a reverse proxy listed
//! in `trusted_proxies`, the client is the right-most untrusted address of `X-Forwarded-For`.
//! Over the limit: HTTP 429 with `Retry-After` and the envelope `{"error":412,…}`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::rate::RateLimiter;

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// address in `X-Forwarded-For` that is not one.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','));
    let hops: Vec<IpAddr> = forwarded.filter_map(|h| h.trim().parse().ok()).collect();
    hops.into_iter().rev().find(|ip| !trusted.contains(ip)).unwrap_or(peer)
}

/// What the limit counts by: an IPv4 address, or the /64 network of an IPv6 one (one host
/// usually holds a whole /64, so counting single addresses would let it rotate past the limit).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(v6.to_bits() & !0xffff_ffff_ffff_ffffu128)),
        },
    }
}

/// The rate limit layer's state: the counters and the settings they apply.
pub struct RateLimit {
    /// Shared with the other nodes of a cluster (see [`crate::rate`]).
    counters: Arc<RateLimiter>,
    limit: u32,
    window_secs: u64,
    loopback: bool,
    trusted_proxies: Vec<IpAddr>,
    metrics: Arc<Metrics>,
}

impl RateLimit {
    pub fn new(config: &Config, counters: Arc<RateLimiter>, metrics: Arc<Metrics>) -> Self {
        RateLimit {
            counters,
            limit: config.rate_limit,
            window_secs: config.rate_limit_window.as_secs().max(1),
            loopback: config.rate_limit_loopback,
            trusted_proxies: config.trusted_proxies.clone(),
            metrics,
        }
    }
}

/// Warns when a listener is reachable from other hosts while loopback clients are exempt and no
/// proxy is trusted: a reverse proxy on this host would then make every client look like loopback,
/// and the limit would be off for everyone.
pub fn warn_if_exempt_behind_a_proxy(config: &Config) {
    let public = [config.http, config.https].into_iter().flatten().find(|a| !a.ip().is_loopback());
    if let Some(addr) = public.filter(|_| config.trusted_proxies.is_empty() && !config.rate_limit_loopback && config.rate_limit > 0) {
        tracing::warn!(
            %addr,
            "a listener is public, loopback clients are exempt from the rate limit and no proxy is trusted: behind a reverse proxy \
             on this host every client would be exempt; set --trusted-proxies (or --rate-limit-loopback true)"
        );
    }
}

/// The middleware: counts the call of a `/v2/` route, or answers 429.
pub async fn limit(State(rl): State<Arc<RateLimit>>, req: Request, next: Next) -> Response {
    let (Some(route), Some(peer)) = (req.extensions().get::<MatchedPath>(), req.extensions().get::<SocketAddr>()) else {
        return next.run(req).await;
    };
    if rl.limit == 0 || !route.as_str().starts_with("/v2/") {
        return next.run(req).await;
    }
    let ip = client_ip(peer.ip(), req.headers(), &rl.trusted_proxies);
    if ip.is_loopback() && !rl.loopback {
        return next.run(req).await;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let key = (limit_key(ip), req.method().clone(), route.as_str().to_owned());
    match rl.counters.hit(key, rl.limit, rl.window_secs, now) {
        Ok(()) => next.run(req).await,
        Err(retry_after) => {
            rl.metrics.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(%ip, route = route.as_str(), "rate limit reached");
            let msg = format!("too many calls: at most {} per {} s to one API", rl.limit, rl.window_secs);
            let mut res = ApiError::new(412, msg).into_response();
            *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            res.headers_mut().insert("retry-after", HeaderValue::from(retry_after.max(1)));
            res
        }
    }
}

#[cfg(test)]
mod tests;
