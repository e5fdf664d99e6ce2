//! `/v2/device/history`: a device's operation history.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::Hub;

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
}
