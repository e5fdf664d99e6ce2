//! `POST /v2/device/ota/query`: firmware updates from the operator's catalogue.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::Hub;

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
}
