//! `GET /v2/message/read`: the message centre.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::Hub;

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
}
