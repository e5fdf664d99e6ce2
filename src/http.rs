//! The HTTP side: `fn app()` builds the router that both listeners serve. Dispatch endpoints,
//! the user routes of this issue, the WebSocket upgrade at `/api/ws` and `/healthz` (`/metrics` is
//! on the [`crate::operator`] listener).
//! Every API answer is the seed's `{error,msg,data}` envelope (see [`error::ApiError`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::hub::Hub;

pub mod alarm;
pub mod api;
pub mod auth;
pub mod device;
pub mod dispatch;
pub mod error;
pub mod family;
pub mod group;
pub mod history;
pub mod homepage;
pub mod message;
pub mod ota;
pub mod ratelimit;
pub mod share;
pub mod thing;
pub mod unread;
pub mod user;
pub mod wechat;
pub mod ws;
pub mod xlink;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// A request (body included) must be answered within this, or it gets 408.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The REST routes with their OpenAPI document, built from the same handler items.
pub fn rest() -> (Router<Arc<Hub>>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    utoipa_axum::router::OpenApiRouter::with_openapi(api::ApiDoc::openapi())
        .merge(dispatch::routes())
        .merge(user::routes())
        .merge(homepage::routes())
        .merge(thing::routes())
        .merge(device::routes())
        .merge(group::routes())
        .merge(share::routes())
        .merge(history::routes())
        .merge(ota::routes())
        .merge(family::routes())
        .merge(message::routes())
        .merge(xlink::routes())
        .merge(wechat::routes())
        .merge(alarm::routes())
        .split_for_parts()
}

pub fn app(hub: Arc<Hub>) -> Router {
    let (rest, openapi) = rest();
    Router::new()
        .merge(rest)
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .route("/api/ws", any(ws::upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(error::not_found)
        // A known path with the wrong method is an unknown API too: answer with the envelope,
        // not an empty 405.
        .method_not_allowed_fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(ratelimit::RateLimit::new(&hub.config, hub.rate_counts.clone(), hub.metrics.clone())),
            ratelimit::limit,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(axum::middleware::map_response(envelope_too_large))
        .layer(axum::middleware::from_fn(unread::close_if_unread))
        .with_state(hub)
}

/// Bodies over the limit are refused by the extractor with a bare 413; give them the envelope.
async fn envelope_too_large(res: Response) -> Response {
    if res.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let mut e = error::ApiError::new(413, "request body too large").into_response();
        *e.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
        e
    } else {
        res
    }
}
