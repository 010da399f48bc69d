//! `GET /v1-public/import/{token}.yaml`: the manifest `kubectl apply`
//! installs a cluster's agent with. An unknown or revoked token gets a bare
//! 404.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use drover_apiserver::ApiError;

use super::AppState;
use crate::kinds::registration;

/// Answer the import manifest of the token named by `file`.
pub(crate) async fn manifest(
    State(state): State<Arc<AppState>>,
    Path(file): Path<String>,
) -> Response {
    let not_found = || ApiError::new(404, "NotFound", "not found").into_response();
    let Some(token) = file.strip_suffix(".yaml") else {
        return not_found();
    };
    let found = match registration::lookup(&state.store, token).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(),
        Err(e) => return e.into_response(),
    };
    let body = registration::render_manifest(
        &state.import,
        &state.tls.agent_checksums(),
        &found.cluster,
        token,
    );
    ([(header::CONTENT_TYPE, "application/yaml")], body).into_response()
}
