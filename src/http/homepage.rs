//! `POST /v2/homepage`: user, families, things and messages in one call.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::Hub;

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
}
