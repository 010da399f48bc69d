//! `POST /apis/management.drover.io/v1/clusters/{id}/kubeconfig`: a
//! kubeconfig for the caller that reaches the cluster through the proxy,
//! with a new token scoped to that cluster (shown only in this answer) and
//! the server's CA inline when it is self-signed. The context is named after
//! the cluster's display name.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use drover_apiserver::ApiError;
use drover_auth::token;
use drover_core::{api, keys};
use drover_rbac::{Attributes, UserInfo};
use serde_json::{json, Value};

use super::AppState;

/// The kubeconfig document.
pub fn render(
    server_url: &str,
    ca_pem: &str,
    cluster: &str,
    display: &str,
    bearer: &str,
) -> String {
    let mut entry = json!({"server": format!("{server_url}/k8s/clusters/{cluster}")});
    if !ca_pem.is_empty() {
        entry["certificate-authority-data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(ca_pem));
    }
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": display, "cluster": entry}],
        "users": [{"name": display, "user": {"token": bearer}}],
        "contexts": [{"name": display, "context": {"cluster": display, "user": display}}],
        "current-context": display,
        "preferences": {},
    });
    yaml_serde::to_string(&doc).expect("JSON values always serialise to YAML")
}

pub(crate) async fn kubeconfig(
    State(state): State<Arc<AppState>>,
    Path(cluster): Path<String>,
    req: Request,
) -> Response {
    let Some(user) = req.extensions().get::<UserInfo>().cloned() else {
        return ApiError::unauthorized().into_response();
    };
    let mut attrs = Attributes::resource("create", api::GROUP, "clusters", "", &cluster);
    attrs.subresource = "kubeconfig".into();
    match state.api.authorizer().authorize(&user, &attrs).await {
        Ok(true) => {}
        Ok(false) => {
            return ApiError::forbidden_because(format!(
                "clusters.{} {cluster:?} is forbidden: User {:?} cannot create resource \"clusters/kubeconfig\"",
                api::GROUP,
                user.name
            ))
            .into_response()
        }
        Err(e) => return e.into_response(),
    }
    let obj: Value = match state
        .store
        .get(&keys::object(api::GROUP, "clusters", None, &cluster))
        .await
    {
        Ok(Some(kv)) => serde_json::from_slice(&kv.value).unwrap_or_default(),
        Ok(None) => {
            return ApiError::new(
                404,
                "NotFound",
                format!("clusters.{} {cluster:?} not found", api::GROUP),
            )
            .into_response()
        }
        Err(_) => return ApiError::unavailable("the datastore is unavailable").into_response(),
    };
    let display = obj
        .pointer("/spec/displayName")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .unwrap_or(&cluster)
        .to_owned();
    let minted = token::mint(
        &user.name,
        Some(&format!("{}{cluster}", token::KUBECONFIG_DESCRIPTION)),
        Some(&cluster),
        Some(state.kubeconfig_ttl),
        state.token_max_ttl,
    );
    // Not for a user deleted (or made again) meanwhile.
    let user_kv = match state
        .store
        .get(&drover_auth::authn::user_key(&user.name))
        .await
    {
        Ok(Some(kv)) => kv,
        Ok(None) => return ApiError::unauthorized().into_response(),
        Err(_) => return ApiError::unavailable("the datastore is unavailable").into_response(),
    };
    let mut ops = minted.store_ops();
    ops.push(drover_store::Op::live(&user_kv));
    match state.store.txn(&ops).await {
        Ok(_) => {}
        Err(drover_store::StoreError::NotFound(_) | drover_store::StoreError::Conflict { .. }) => {
            return ApiError::unauthorized().into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store a kubeconfig token");
            return ApiError::unavailable("the datastore is unavailable").into_response();
        }
    }
    let body = render(
        &state.import.server_url,
        &state.tls.ca_pem(),
        &cluster,
        &display,
        &minted.bearer,
    );
    ([(header::CONTENT_TYPE, "application/yaml")], body).into_response()
}
