//! The operator dashboard at `/dashboard` on the operator listener: a login for operators
//! ([`login`]), the node's counters sampled once a second for 15 minutes ([`samples`]), and a
//! live view of online devices with their history and a command form ([`live`]), pushed to the
//! browser by Server-Sent Events.
//!
//! It owns no routing: it reads the hub's [`crate::metrics::Metrics`], asks the router what is
//! online ([`crate::router::Router::online_devices`], `device_view`, `live_params`), reads the
//! store for names, owners and history, and sends commands through the one command service
//! ([`crate::command::send_as_operator`]). Its assets (`dashboard/assets/`) are compiled into the
//! binary: no CDN, no build step, nothing fetched at run time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::hub::Hub;
use crate::ids::DeviceId;
use crate::store::DeviceLabel;
use crate::sync::lock;

mod live;
mod login;
mod samples;

pub use samples::{Sample, Samples};

/// Event streams open at once (one per open dashboard page); beyond them a page gets 503.
pub const MAX_STREAMS: usize = 8;

/// Largest request body the dashboard reads (a login form, a command).
const MAX_BODY: usize = 16 * 1024;

/// What the dashboard keeps beside the hub: the sampled counters and the stored labels of the
/// devices it has shown.
pub struct Dashboard {
    hub: Arc<Hub>,
    pub samples: Samples,
    /// Name, model and owner per online device, keyed with the time its session attached: a
    /// device that reconnects is read again (its owner or name may have changed meanwhile).
    labels: Mutex<HashMap<DeviceId, Labeled>>,
    /// Open event streams: each lists the online devices four times a second, so they are few.
    streams: Arc<tokio::sync::Semaphore>,
}

impl Dashboard {
    /// Starts sampling the hub's counters (until shutdown) and returns the dashboard.
    pub fn start(hub: Arc<Hub>) -> Arc<Dashboard> {
        let dashboard = Arc::new(Dashboard {
            hub: hub.clone(),
            samples: Samples::default(),
            labels: Mutex::default(),
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        });
        tokio::spawn(samples::run(dashboard.clone()));
        dashboard
    }

    /// Forgets the labels of devices that are no longer online.
    fn prune_labels(&self) {
        let online: std::collections::HashSet<DeviceId> = self.hub.router.online_devices().into_iter().collect();
        lock(&self.labels).retain(|id, _| online.contains(id));
    }
}

/// A device's stored label as the dashboard keeps it.
struct Labeled {
    /// When the session it was read for attached.
    since: i64,
    label: DeviceLabel,
    /// Id, name, models and owner in lower case, for searching.
    haystack: String,
}

impl Labeled {
    fn new(since: i64, label: DeviceLabel) -> Labeled {
        let haystack =
            [&label.deviceid, &label.name, &label.model, &label.product_model, &label.owner].map(|f| f.to_lowercase()).join("\n");
        Labeled { since, label, haystack }
    }
}

/// The dashboard's routes, to be merged into the operator listener's router.
pub fn routes(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/dashboard", get(login::index))
        .route("/dashboard/", get(login::index))
        .route("/dashboard/device/{id}", get(login::index))
        .route("/dashboard/login", get(login::form).post(login::submit))
        .route("/dashboard/logout", post(login::logout))
        .route("/dashboard/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/dashboard/assets/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/dashboard/api/events", get(live::events))
        .route("/dashboard/api/devices/{id}", get(live::device))
        .route("/dashboard/api/devices/{id}/command", post(live::command))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(dashboard)
}

const APP_JS: &str = include_str!("dashboard/assets/app.js");
const APP_CSS: &str = include_str!("dashboard/assets/app.css");
const INDEX_HTML: &str = include_str!("dashboard/assets/index.html");
const LOGIN_HTML: &str = include_str!("dashboard/assets/login.html");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")], body)
        .into_response()
}

/// Headers every dashboard page carries: nothing but its own assets may load or run, and no
/// other site may frame it.
fn page(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; connect-src 'self'; \
                 form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_html;

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape_html(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
