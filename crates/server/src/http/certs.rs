//! The server's certificates over the API (admins):
//! - `GET /v1-admin/certificates`: each certificate in use with its expiry,
//!   the CA checksum, and whether a CA rotation is under way;
//! - `POST /v1-admin/certificates/rotate-ca`: rotate Drover's own CA
//!   (`drover certs rotate-ca`), with no cluster re-imported:
//!   1. a new CA is trusted beside the old (`/cacerts` serves both);
//!   2. every connected agent is sent the new checksums down its tunnel,
//!      and keeps them (see `drover_agent::trust`);
//!   3. the new CA issues the serving certificate, and each replica
//!      serves it at its next refresh;
//!   4. the old CA is retired; a cross-certificate (the new CA signed by
//!      the old, valid as long as a kubeconfig) keeps kubeconfigs from
//!      before the rotation reaching the server, whose answer tells their
//!      users to download them again.
//!
//!   If a connected agent does not take the new checksums, the rotation
//!   is undone before step 3 and the answer names the clusters — unless
//!   `?force=true`. Clusters whose agent is away then need the new
//!   checksum (their import manifest applied again).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use drover_apiserver::ApiError;
use drover_rbac::{Attributes, UserInfo};
use futures::StreamExt;
use serde_json::{json, Value};

use super::AppState;
use crate::tls::generated::{self, RotationError};

/// Time an agent has to answer the new checksums.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

async fn authorize(
    state: &AppState,
    user: Option<UserInfo>,
    verb: &str,
    sub: &str,
) -> Result<(), Response> {
    let Some(user) = user else {
        return Err(ApiError::unauthorized().into_response());
    };
    let mut attrs = Attributes::resource(verb, drover_core::api::GROUP, "certificates", "", "");
    if !sub.is_empty() {
        attrs = attrs.on_subresource(sub);
    }
    match state.api.authorizer().authorize(&user, &attrs).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::forbidden_because(format!(
            "User {:?} cannot {verb} resource \"certificates{}\"",
            user.name,
            if sub.is_empty() {
                String::new()
            } else {
                format!("/{sub}")
            }
        ))
        .into_response()),
        Err(e) => Err(e.into_response()),
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// `GET /v1-admin/certificates`.
pub(crate) async fn list(State(state): State<Arc<AppState>>, req: Request) -> Response {
    if let Err(r) = authorize(
        &state,
        req.extensions().get::<UserInfo>().cloned(),
        "get",
        "",
    )
    .await
    {
        return r;
    }
    let rotating = match state.store.get(generated::CA_NEXT).await {
        Ok(kv) => kv.is_some(),
        Err(_) => return ApiError::unavailable("the datastore is unavailable").into_response(),
    };
    let items: Vec<Value> = state
        .tls
        .certificates()
        .into_iter()
        .map(|c| {
            json!({
                "name": c.name,
                "subject": c.subject,
                "issuer": c.issuer,
                "names": c.names,
                "notAfter": rfc3339(c.not_after),
                "expiresInSeconds": c.not_after - drover_net::pki::now().unix_timestamp(),
            })
        })
        .collect();
    Json(json!({
        "items": items,
        "caChecksum": state.tls.ca_checksum(),
        "caRotation": if rotating { "in progress" } else { "none" },
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
pub(crate) struct RotateQuery {
    #[serde(default)]
    force: bool,
}

fn rotation_error(e: RotationError) -> Response {
    match e {
        RotationError::InProgress(_) | RotationError::NotRotating => (
            StatusCode::CONFLICT,
            Json(status_body(409, "Conflict", &e.to_string())),
        )
            .into_response(),
        RotationError::Store(_) => {
            ApiError::unavailable("the datastore is unavailable").into_response()
        }
        RotationError::Certificates(m) => {
            tracing::error!(error = %m, "CA rotation failed");
            ApiError::internal("the new CA could not be made").into_response()
        }
    }
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// The clusters, by name.
async fn clusters(state: &AppState) -> Result<Vec<String>, drover_store::StoreError> {
    let prefix = drover_core::keys::prefix(drover_core::api::GROUP, "clusters", None);
    let page = state
        .store
        .list(&drover_store::ListOptions {
            prefix: prefix.clone(),
            ..Default::default()
        })
        .await?;
    Ok(page
        .items
        .iter()
        .map(|kv| kv.key[prefix.len()..].to_owned())
        .collect())
}

/// Send `checksums` to `cluster`'s agent; why not, if it did not take them.
async fn tell_agent(state: &AppState, cluster: &str, checksums: &[String]) -> Result<(), String> {
    let body = json!({"caChecksums": checksums}).to_string();
    let req = axum::http::Request::put(drover_tunnel::TRUST_PATH)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a static request");
    let sent = tokio::time::timeout(
        AGENT_TIMEOUT,
        state.dialer.send_within(cluster, req, Duration::ZERO),
    )
    .await;
    match sent {
        Err(_) => Err("the agent did not answer in time".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => Err(format!(
            "the agent answered {} (an agent older than CA rotation?)",
            resp.status()
        )),
    }
}

/// `POST /v1-admin/certificates/rotate-ca[?force=true]`.
pub(crate) async fn rotate_ca(
    State(state): State<Arc<AppState>>,
    Query(q): Query<RotateQuery>,
    req: Request,
) -> Response {
    if let Err(r) = authorize(
        &state,
        req.extensions().get::<UserInfo>().cloned(),
        "update",
        "rotate-ca",
    )
    .await
    {
        return r;
    }
    if !state.tls.is_generated() {
        return ApiError::bad_request(
            "only Drover's own CA can be rotated; this server's certificate comes from --tls-cert, ACME or a balancer in front",
        )
        .into_response();
    }
    // 1. Trust the new CA beside the old one, everywhere.
    let rotation = match generated::begin_rotation(&state.store).await {
        Ok(r) => r,
        Err(e) => return rotation_error(e),
    };
    if let Err(e) = state.tls.refresh().await {
        tracing::warn!(error = %e, "cannot serve the CA bundle yet");
    }
    // 2. Tell every connected agent.
    let names = match clusters(&state).await {
        Ok(n) => n,
        Err(_) => return ApiError::unavailable("the datastore is unavailable").into_response(),
    };
    let checksums = vec![
        rotation.transition_checksum.clone(),
        rotation.new_checksum.clone(),
    ];
    let (connected, away): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|c| state.dialer.connected(c));
    let results: Vec<(String, Result<(), String>)> = futures::stream::iter(connected)
        .map(|cluster| {
            let (state, checksums) = (&state, &checksums);
            async move {
                let r = tell_agent(state, &cluster, checksums).await;
                (cluster, r)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut updated = Vec::new();
    let mut failed = Vec::new();
    for (cluster, r) in results {
        match r {
            Ok(()) => updated.push(cluster),
            Err(why) => failed.push(json!({"cluster": cluster, "error": why})),
        }
    }
    updated.sort();
    if !failed.is_empty() && !q.force {
        // Undo: nothing but the bundle was served, and agents that took
        // the new checksums still trust the old CA too.
        if let Err(e) = undo(&state).await {
            tracing::error!(error = %e, "cannot undo the CA rotation");
        }
        let message = format!(
            "the CA was not rotated: {} connected agent(s) did not take the new CA checksum; fix them, or rotate with force=true (their clusters then need the new checksum)",
            failed.len()
        );
        let mut body = status_body(409, "Conflict", &message);
        body["details"] = json!({"failed": failed, "updated": updated});
        return (StatusCode::CONFLICT, Json(body)).into_response();
    }
    // 3. The new CA signs the serving certificate.
    if let Err(e) = generated::serve_with_next(&state.store).await {
        return rotation_error(e);
    }
    if let Err(e) = state.tls.refresh().await {
        tracing::warn!(error = %e, "cannot serve the new certificate yet");
    }
    // Every replica reads the certificates every REFRESH; give the others
    // two rounds to serve the new one before the old CA goes.
    tokio::time::sleep(crate::tls::REFRESH * 2).await;
    // 4. Retire the old CA.
    if let Err(e) = generated::retire_old(&state.store, state.kubeconfig_ttl).await {
        return rotation_error(e);
    }
    if let Err(e) = state.tls.refresh().await {
        tracing::warn!(error = %e, "cannot serve the new CA yet");
    }
    Json(json!({
        "oldChecksum": rotation.old_checksum,
        "newChecksum": rotation.new_checksum,
        "clusters": {"updated": updated, "failed": failed, "notConnected": away},
    }))
    .into_response()
}

/// Drop the next CA of a rotation still in its first step.
async fn undo(state: &AppState) -> Result<(), drover_store::StoreError> {
    if let Some(kv) = state.store.get(generated::CA_NEXT).await? {
        state
            .store
            .delete(generated::CA_NEXT, Some(kv.mod_revision))
            .await?;
    }
    let _ = state.tls.refresh().await;
    Ok(())
}
