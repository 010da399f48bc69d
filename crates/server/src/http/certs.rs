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
//!   If a connected agent does not take the new checksums, or cannot keep
//!   them for a restart, the rotation is undone (agents are told to trust
//!   the current CA alone again) and the answer names the clusters —
//!   unless `?force=true`. Any later failure undoes it too, and the steps
//!   run to their end even if the client goes away; `?abort=true` undoes
//!   a rotation a replica left unfinished. Clusters whose agent is away
//!   then need the new checksum (their import manifest applied again).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use drover_apiserver::error::Subject;
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
        Ok(false) => {
            let subject = Subject {
                group: drover_core::api::GROUP,
                resource: "certificates",
                name: "",
            };
            Err(ApiError::forbidden(&user.name, verb, subject, "", sub).into_response())
        }
        Err(e) => Err(e.into_response()),
    }
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
                "notAfter": drover_core::meta::rfc3339(drover_core::meta::from_unix(c.not_after)),
                "expiresInSeconds": c.not_after - drover_net::pki::now().unix_timestamp(),
            })
        })
        .collect();
    Json(json!({
        "items": items,
        "caChecksum": state.tls.ca_checksum(),
        "caRotation": if rotating { "in progress" } else { "none" },
        "caRotatedAt": state.tls.rotated_at().map(drover_core::meta::rfc3339),
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
pub(crate) struct RotateQuery {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    abort: bool,
}

fn rotation_error(e: RotationError) -> Response {
    match e {
        RotationError::InProgress(_) | RotationError::NotRotating => {
            ApiError::new(409, "Conflict", e.to_string()).into_response()
        }
        RotationError::Store(_) => {
            ApiError::unavailable("the datastore is unavailable").into_response()
        }
        RotationError::Certificates(m) => {
            tracing::error!(error = %m, "CA rotation failed");
            ApiError::internal("the new CA could not be made").into_response()
        }
    }
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

/// Send `checksums` (the whole list to trust) to `cluster`'s agent; why
/// not, if it did not take them or cannot keep them for a restart.
async fn tell_agent(state: &AppState, cluster: &str, checksums: &[String]) -> Result<(), String> {
    let body = json!({"caChecksums": checksums}).to_string();
    let req = axum::http::Request::put(drover_tunnel::TRUST_PATH)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a static request");
    let exchange = async {
        let resp = state
            .dialer
            .send_within(cluster, req, Duration::ZERO)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
            .await
            .map_err(|e| format!("reading the agent's answer: {e}"))?;
        Ok::<_, String>((status, body))
    };
    let (status, body) = match tokio::time::timeout(AGENT_TIMEOUT, exchange).await {
        Err(_) => return Err("the agent did not answer in time".into()),
        Ok(r) => r?,
    };
    let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
    if !status.is_success() {
        return Err(format!(
            "the agent answered {status} (an agent older than CA rotation?)"
        ));
    }
    if answer["persisted"] != true {
        return Err(answer["message"]
            .as_str()
            .unwrap_or("the agent could not keep the new checksums for a restart")
            .to_owned());
    }
    Ok(())
}

/// Tell every connected agent `checksums`: (clusters told, failures,
/// clusters not connected).
async fn tell_agents(
    state: &AppState,
    checksums: &[String],
) -> Result<(Vec<String>, Vec<Value>, Vec<String>), drover_store::StoreError> {
    let (connected, away): (Vec<String>, Vec<String>) = clusters(state)
        .await?
        .into_iter()
        .partition(|c| state.dialer.connected(c));
    let results: Vec<(String, Result<(), String>)> = futures::stream::iter(connected)
        .map(|cluster| async move {
            let r = tell_agent(state, &cluster, checksums).await;
            (cluster, r)
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
    Ok((updated, failed, away))
}

/// `POST /v1-admin/certificates/rotate-ca[?force=true|?abort=true]`.
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
    // The rotation runs to its end (or its undoing) even if the client
    // goes away.
    let task = {
        let state = state.clone();
        tokio::spawn(async move {
            if q.abort {
                return abort(&state).await;
            }
            rotate(&state, q.force).await
        })
    };
    match task.await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the CA rotation failed; undoing it");
            let _ = abort(&state).await;
            ApiError::internal("the CA rotation failed and was undone").into_response()
        }
    }
}

/// Undo whatever rotation is under way (one a replica left unfinished).
async fn abort(state: &AppState) -> Response {
    let (_, current) = match generated::current_ca(&state.store).await {
        Ok(c) => c,
        Err(e) => return rotation_error(e),
    };
    match generated::abort_rotation(&state.store, None).await {
        Ok(true) => {
            let _ = state.tls.refresh().await;
            // Other replicas may still serve the new CA's certificate
            // for a refresh round or two.
            tokio::time::sleep(crate::tls::REFRESH * 2).await;
            let (told, failed, _) = tell_agents(state, std::slice::from_ref(&current))
                .await
                .unwrap_or_default();
            Json(json!({"aborted": true, "caChecksum": current,
                        "clusters": {"updated": told, "failed": failed}}))
            .into_response()
        }
        Ok(false) => rotation_error(RotationError::NotRotating),
        Err(e) => rotation_error(e),
    }
}

/// Undo rotation `rotation` after a failure, and answer `why`. Agents are
/// told to trust the current CA alone only once the rotation is certainly
/// gone; if the undo itself fails they keep trusting all three checksums,
/// which fits every state.
async fn undo(
    state: &AppState,
    rotation: &generated::Rotation,
    served: bool,
    why: Response,
) -> Response {
    match generated::abort_rotation(&state.store, Some(&rotation.id)).await {
        Ok(true) => {
            let _ = state.tls.refresh().await;
            if served {
                tokio::time::sleep(crate::tls::REFRESH * 2).await;
            }
            let _ = tell_agents(state, std::slice::from_ref(&rotation.old_checksum)).await;
            why
        }
        Ok(false) => {
            // Nothing to undo: did the last step land after all?
            match generated::current_ca(&state.store).await {
                Ok((ca, _)) if ca == rotation.id => {
                    let _ = state.tls.refresh().await;
                    Json(json!({"oldChecksum": rotation.old_checksum,
                                "newChecksum": rotation.new_checksum}))
                    .into_response()
                }
                _ => why,
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot undo the CA rotation; `drover certs rotate-ca --abort` retries");
            why
        }
    }
}

async fn rotate(state: &AppState, force: bool) -> Response {
    // 1. Trust the new CA beside the old one, everywhere.
    let rotation = match generated::begin_rotation(&state.store).await {
        Ok(r) => r,
        Err(e) => return rotation_error(e),
    };
    if let Err(e) = state.tls.refresh().await {
        tracing::warn!(error = %e, "cannot serve the CA bundle yet");
    }
    // 2. Tell every connected agent: the current CA, both, the new one.
    let checksums = vec![
        rotation.old_checksum.clone(),
        rotation.transition_checksum.clone(),
        rotation.new_checksum.clone(),
    ];
    // The clusters named in the message, as a Status carries no list.
    let refused = |failed: &[Value]| {
        let named: Vec<String> = failed
            .iter()
            .take(10)
            .map(|f| {
                format!(
                    "{} ({})",
                    f["cluster"].as_str().unwrap_or_default(),
                    f["error"].as_str().unwrap_or_default()
                )
            })
            .collect();
        let more = failed.len().saturating_sub(named.len());
        let message = format!(
            "the CA was not rotated: {} connected agent(s) did not take the new CA checksum, or cannot keep it for a restart: {}{}; fix them (apply their import manifest again), or rotate with force=true (they then need the new checksum)",
            failed.len(),
            named.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() },
        );
        ApiError::new(409, "Conflict", message).into_response()
    };
    let unavailable = || ApiError::unavailable("the datastore is unavailable").into_response();
    let Ok((_, failed, away)) = tell_agents(state, &checksums).await else {
        return undo(state, &rotation, false, unavailable()).await;
    };
    if !failed.is_empty() && !force {
        return undo(state, &rotation, false, refused(&failed)).await;
    }
    // 3. The new CA signs the serving certificate.
    if let Err(e) =
        generated::serve_with_next(&state.store, &rotation.id, state.kubeconfig_ttl).await
    {
        return undo(state, &rotation, false, rotation_error(e)).await;
    }
    if let Err(e) = state.tls.refresh().await {
        tracing::warn!(error = %e, "cannot serve the new certificate yet");
    }
    // Every replica reads the certificates every REFRESH; give the others
    // two rounds to serve the new one before the old CA goes.
    tokio::time::sleep(crate::tls::REFRESH * 2).await;
    // Agents that connected meanwhile (to a replica that had not yet read
    // the rotation) are told too; those told already hear the same again.
    let Ok((updated, failed, away_now)) = tell_agents(state, &checksums).await else {
        return undo(state, &rotation, true, unavailable()).await;
    };
    if !failed.is_empty() && !force {
        return undo(state, &rotation, true, refused(&failed)).await;
    }
    let away: Vec<String> = away.into_iter().filter(|c| away_now.contains(c)).collect();
    // 4. Retire the old CA.
    if let Err(e) = generated::retire_old(&state.store, &rotation.id).await {
        return undo(state, &rotation, true, rotation_error(e)).await;
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
