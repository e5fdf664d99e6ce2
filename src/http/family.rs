//! `/v2/family…`: families, rooms, the order of things in a family and which room they are in.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::Hub;

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
}
