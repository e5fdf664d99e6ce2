//! `/v2/device/add`, `add-gsm`, `update-info`, `DELETE /v2/device`, `tags`: a user's devices.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::Hub;

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
}
