//! The authentication proxy: `/k8s/clusters/{id}/…` reaches cluster `id`'s
//! API server through its agent, as the caller.
//!
//! 1. Authenticate the bearer token (a token scoped to another cluster
//!    fails).
//! 2. Refuse any path with a `.` or `..` segment, encoded or not, or an
//!    encoded `/` or `\`, so nothing reaches another cluster or a server path.
//! 3. Authorize: an admin, or someone bound to a role in the cluster or one
//!    of its projects; anyone else gets the same 403 whether or not the
//!    cluster exists.
//! 4. Reach the cluster through the [`crate::link::Dialer`], on whichever
//!    replica holds its agent's link; only when none does is the answer
//!    503 "not connected".
//! 5. Drop the client's `Authorization`, `Impersonate-*`, cookies and
//!    hop-by-hop headers; add `Impersonate-User` and one `Impersonate-Group`
//!    per group; send the rest of the path, as is, down the tunnel.
//!    A JSON namespace write that sets a project goes through
//!    [`crate::kinds::namespaces`] first (who may, quota); a create in a project
//!    the caller may use is sent as the agent.
//! 6. Stream the answer back. An upgrade (exec, attach, port-forward) becomes
//!    a byte pipe between the client and the tunnel stream. A stream (a
//!    watch, `logs -f`) whose link fails ends as a finished response, as
//!    when kube-apiserver restarts, so clients list and watch again.
//!
//! The downstream API server authorizes the impersonated user with the RBAC
//! Drover projected there. One answer is Drover's own: a JSON list of
//! namespaces the cluster refuses the caller (a project member, who may
//! `get` each namespace of their projects but list none) is listed again
//! as the agent and narrowed to the namespaces Drover adopted into the
//! projects the caller is bound to ([`own_namespaces`]), as Rancher's
//! proxy does, so members see their namespaces and no others.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use drover_apiserver::ApiError;
use drover_auth::authn::AUTHENTICATED;

use super::AppState;
use crate::kinds::{namespaces, pod_security};
use crate::link::dialer::{UpgradeCut, LINK_WAIT};
use crate::link::kube::DownstreamError;

/// Where the proxy's paths start.
pub const PREFIX: &str = "/k8s/clusters/";

/// Headers never passed on: credentials, and hop-by-hop headers.
const DROPPED: &[&str] = &[
    "authorization",
    "cookie",
    "proxy-authorization",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "host",
];

/// Split `/k8s/clusters/{id}/rest?query` into the cluster and the path to
/// forward, or `None` if the path may not be forwarded.
pub fn split(uri: &Uri) -> Option<(&str, String)> {
    let after = uri.path().strip_prefix(PREFIX)?;
    let (cluster, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, "/"),
    };
    let valid_id = !cluster.is_empty()
        && cluster.len() <= 63
        && cluster
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_id {
        return None;
    }
    // The agent's own paths are for the server alone.
    if rest.starts_with(drover_tunnel::AGENT_PREFIX)
        || rest == drover_tunnel::AGENT_PREFIX.trim_end_matches('/')
    {
        return None;
    }
    for segment in rest.split('/') {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        if decoded == "." || decoded == ".." || decoded.contains(['/', '\\']) {
            return None;
        }
    }
    let forwarded = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    Some((cluster, forwarded))
}

/// `/k8s/clusters/{id}/…`, every method.
pub(crate) async fn proxy(State(state): State<Arc<AppState>>, mut req: Request) -> Response {
    let peer = super::authn::peer_of(&req);
    let identity = match super::authn::identify(&state, req.headers(), peer).await {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    if let Some(caller) = req.extensions().get::<super::audit::Caller>() {
        caller.set(&identity.user);
    }
    let Some((cluster, path)) = split(req.uri()) else {
        return ApiError::bad_request(
            "the path must be /k8s/clusters/{cluster}/… with no '.' or '..' segments, and not the agent's own /drover-agent/…",
        )
        .into_response();
    };
    let cluster = cluster.to_owned();
    let forbidden = || {
        ApiError::forbidden_because(format!(
            "user {:?} cannot reach cluster {cluster:?}",
            identity.user.name
        ))
        .into_response()
    };
    if let Some(scope) = &identity.cluster_scope {
        if *scope != cluster {
            return ApiError::new(
                401,
                "Unauthorized",
                format!(
                    "this token is scoped to cluster {scope:?} and works only for that cluster"
                ),
            )
            .into_response();
        }
    }
    if identity.must_change_password {
        return ApiError::forbidden_because(format!(
            "user {:?} must change their password first",
            identity.user.name
        ))
        .into_response();
    }
    let snapshot = match state.authz.snapshot().await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if !snapshot.reaches_cluster(&identity.user, &cluster) {
        return forbidden();
    }
    // No link anywhere: an agent may be reconnecting (its replica went
    // away), so wait a moment for one — for a cluster that exists.
    if !state.dialer.connected(&cluster) {
        let key = drover_core::keys::object(drover_core::api::GROUP, "clusters", None, &cluster);
        let exists = matches!(state.store.get(&key).await, Ok(Some(_)));
        if !exists || !state.dialer.wait_connected(&cluster, LINK_WAIT).await {
            return DownstreamError::NotConnected.into_response_for(&cluster);
        }
    }
    let upgrade =
        drover_tunnel::upgrade::requested(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let streaming = path
        .parse::<Uri>()
        .is_ok_and(|uri| super::sessions::streaming_request(req.method(), &uri));
    let (parts, mut body) = req.into_parts();
    // Namespace writes that set a project are Drover's to decide.
    let mut as_agent = false;
    let mut membership: Option<(namespaces::NamespaceWrite, namespaces::Decision)> = None;
    let json_write = matches!(parts.method.as_str(), "POST" | "PUT" | "PATCH")
        && path.starts_with("/api/v1/namespaces")
        && !parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("protobuf"));
    let owner = snapshot.owns_cluster(&identity.user, &cluster);
    // Whether the body sent on differs from the one received (its length
    // is then the new body's).
    let mut rewritten = false;
    // A write to a namespace object is checked against the cluster's Pod
    // Security template, read once for it.
    let template = |bytes: &[u8]| {
        let target = pod_security::namespace_object(&parts.method, &path, bytes);
        let store = state.store.clone();
        let cluster = cluster.clone();
        async move {
            match target {
                Some(ns) => Ok(pod_security::cluster_template(&store, &cluster)
                    .await?
                    .map(|t| (ns, t))),
                None => Ok::<_, ApiError>(None),
            }
        }
    };
    if !json_write {
        // A protobuf write of a namespace: its labels cannot be checked.
        match template(b"").await {
            Ok(Some((ns, t))) => {
                if let Err(e) = t.check_opaque_write(&ns, owner) {
                    return e.into_response();
                }
            }
            Ok(None) => {}
            Err(e) => return e.into_response(),
        }
    }
    if json_write {
        let mut bytes = match axum::body::to_bytes(body, super::MAX_BODY).await {
            Ok(b) => b,
            Err(_) => return ApiError::too_large(super::MAX_BODY).into_response(),
        };
        match template(&bytes).await {
            Ok(Some((ns, t))) => {
                let checked = match pod_security::label_writes(&parts.method, &path, &bytes) {
                    Some((ns, labels)) => t.check_write(&ns, &labels),
                    None => t.check_opaque_write(&ns, owner),
                };
                if let Err(e) = checked {
                    return e.into_response();
                }
                // A namespace made through Drover has its levels from the
                // start.
                if parts.method == axum::http::Method::POST
                    && path.split('?').next() == Some("/api/v1/namespaces")
                {
                    if let Ok(mut created) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                        if t.add_levels(&mut created) {
                            bytes = created.to_string().into();
                            rewritten = true;
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(e) => return e.into_response(),
        }
        if let Some(write) = namespaces::inspect(&parts.method, &path, &bytes) {
            let usage = match moved_usage(&state, &snapshot, &cluster, &write, owner).await {
                Ok(u) => u,
                Err(e) => return e.into_response(),
            };
            match namespaces::authorize(
                &state.store,
                &snapshot,
                &identity.user,
                &cluster,
                &write,
                usage.as_ref(),
            )
            .await
            {
                Ok(decision) => {
                    as_agent = decision.as_agent;
                    // A dry run changes nothing downstream, nor here.
                    if !dry_run(&path) {
                        membership = Some((write, decision));
                    }
                }
                Err(e) => return e.into_response(),
            }
        }
        body = Body::from(bytes);
    }
    // A list of namespaces whose caller takes JSON (not a watch): the
    // selectors it filters by, for [`own_namespaces`].
    let list_of_namespaces = (parts.method == axum::http::Method::GET)
        .then(|| namespace_list_selectors(&path))
        .flatten()
        .filter(|_| {
            parts
                .headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                // kubectl asks for a Table and takes plain JSON too.
                .is_none_or(|a| a.contains("application/json") || a.contains("*/*"))
        });
    let mut out = axum::http::Request::builder()
        .method(parts.method)
        .uri(path)
        .version(axum::http::Version::HTTP_11);
    let headers = out.headers_mut().expect("a fresh builder");
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if DROPPED.contains(&n) || n.starts_with("impersonate-") {
            continue;
        }
        if rewritten && n == "content-length" {
            continue;
        }
        if upgrade.is_none() && (n == "connection" || n == "upgrade") {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers.insert(
        header::HOST,
        HeaderValue::from_static("kubernetes.default.svc"),
    );
    // A namespace created in a project the caller may use is created by the
    // agent (members hold no cluster-wide right to create namespaces).
    if !as_agent {
        let Ok(user) = HeaderValue::from_str(&identity.user.name) else {
            return forbidden();
        };
        headers.insert(HeaderName::from_static("impersonate-user"), user);
        let mut groups = identity.user.groups.clone();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.to_owned());
        }
        for g in groups {
            if let Ok(v) = HeaderValue::from_str(&g) {
                headers.append(HeaderName::from_static("impersonate-group"), v);
            }
        }
    }
    let out = out.body(body).expect("headers copied from a valid request");

    let mut resp = match state.dialer.send(&cluster, out).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%cluster, error = %e, "proxied request failed");
            return e.into_response_for(&cluster);
        }
    };
    if let Some(selectors) = list_of_namespaces.filter(|_| resp.status() == StatusCode::FORBIDDEN) {
        return own_namespaces(&state, &snapshot, &identity.user, &cluster, &selectors).await;
    }
    if let Some((write, decision)) = membership {
        // The cluster accepted the write: now, and only now, the namespace's
        // project is recorded, for the UID the cluster answered with.
        if resp.status().is_success() {
            return record_membership(&state, &cluster, &write, &decision, resp).await;
        }
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = upgrade else {
            return ApiError::new(502, "BadGateway", "the cluster switched protocols unasked")
                .into_response();
        };
        // An exec or port-forward session ends when its rights are revoked.
        let grants = snapshot.grants_of(&identity.user, Some(&cluster));
        let registration = state
            .sessions
            .open(&state, &identity, Some(&cluster), grants)
            .await;
        // ...and when its link, or the replica holding it, goes.
        let cut = resp.extensions().get::<UpgradeCut>().cloned();
        let revoked = async move {
            let end = registration.end.clone();
            match cut {
                Some(cut) => tokio::select! {
                    () = end.cancelled() => {}
                    () = cut.cancelled() => {}
                },
                None => end.cancelled().await,
            }
            drop(registration);
        };
        drover_tunnel::upgrade::splice(client, hyper::upgrade::on(&mut resp), revoked);
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (mut parts, body) = resp.into_parts();
    for h in ["connection", "keep-alive", "transfer-encoding", "upgrade"] {
        parts.headers.remove(h);
    }
    let mut body = body;
    if streaming {
        body = Body::new(CleanEnd { body });
        // A watch, `logs -f` or any other stream ends, as a finished
        // stream, when its rights are revoked.
        let grants = snapshot.grants_of(&identity.user, Some(&cluster));
        let registration = state
            .sessions
            .open(&state, &identity, Some(&cluster), grants)
            .await;
        body = super::sessions::Revocable::wrap(body, registration);
    }
    Response::from_parts(parts, body)
}

/// For a list of namespaces (`/api/v1/namespaces`, no `watch` however
/// spelled), its label and field selectors as a query to send on (nothing
/// else of the caller's query: no paging, watching or timeouts).
fn namespace_list_selectors(path: &str) -> Option<String> {
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    if route != "/api/v1/namespaces" {
        return None;
    }
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "watch" => return None,
            "labelSelector" | "fieldSelector" => {
                out.append_pair(&k, &v);
            }
            _ => {}
        }
    }
    Some(out.finish())
}

/// Largest list of namespaces read for [`own_namespaces`].
const MAX_NAMESPACE_LIST: usize = 64 * 1024 * 1024;

/// A list of namespaces the cluster refused the caller: listed again as
/// the agent, keeping the namespaces Drover adopted (record and UID
/// agreeing) into projects the caller is bound to. Nothing else of the
/// agent's answer reaches the caller; with no such project the refusal
/// stands.
async fn own_namespaces(
    state: &AppState,
    snapshot: &drover_auth::policy::Snapshot,
    user: &drover_rbac::UserInfo,
    cluster: &str,
    selectors: &str,
) -> Response {
    let forbidden = || {
        ApiError::forbidden_because(format!(
            "namespaces is forbidden: User {:?} cannot list resource \"namespaces\" in API group \"\" at the cluster scope",
            user.name
        ))
        .into_response()
    };
    let projects = snapshot.projects_bound(user, cluster);
    if projects.is_empty() {
        return forbidden();
    }
    let records = match namespaces::records(&state.store, cluster).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let req = axum::http::Request::builder()
        .method(axum::http::Method::GET)
        .uri(if selectors.is_empty() {
            "/api/v1/namespaces".to_owned()
        } else {
            format!("/api/v1/namespaces?{selectors}")
        })
        .version(axum::http::Version::HTTP_11)
        .header(header::HOST, "kubernetes.default.svc")
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .expect("a valid request");
    let resp = match state.dialer.send(cluster, req).await {
        Ok(r) => r,
        Err(e) => return e.into_response_for(cluster),
    };
    if !resp.status().is_success() {
        return forbidden();
    }
    let Ok(bytes) = axum::body::to_bytes(resp.into_body(), MAX_NAMESPACE_LIST).await else {
        return ApiError::new(
            502,
            "BadGateway",
            "the cluster's list of namespaces was too large",
        )
        .into_response();
    };
    let Ok(mut list) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return ApiError::new(
            502,
            "BadGateway",
            "the cluster's list of namespaces was not JSON",
        )
        .into_response();
    };
    // Only a list goes back, narrowed; anything else is refused.
    if list["kind"] != "NamespaceList" || !list["items"].is_array() {
        return forbidden();
    }
    let own = |ns: &serde_json::Value| {
        let name = ns["metadata"]["name"].as_str().unwrap_or_default();
        let uid = ns["metadata"]["uid"].as_str().unwrap_or_default();
        let annotated = ns["metadata"]["annotations"][namespaces::PROJECT_ANNOTATION]
            .as_str()
            .and_then(|a| a.split_once(':'))
            .filter(|(c, _)| *c == cluster)
            .map(|(_, p)| p);
        records.get(name).is_some_and(|(record, _)| {
            record.is_for(uid)
                && projects.contains(&record.project)
                && annotated == Some(record.project.as_str())
        })
    };
    if let Some(items) = list["items"].as_array_mut() {
        items.retain(own);
    }
    if let Some(meta) = list["metadata"].as_object_mut() {
        meta.remove("continue");
        meta.remove("remainingItemCount");
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        list.to_string(),
    )
        .into_response()
}

/// What a namespace moved into a project with a quota uses now, counted
/// in the cluster (as the agent) for each key the quota limits — only for
/// a cluster owner, who alone may move it (anyone else is refused next).
/// Objects are counted from Tables without their content: no Secret's
/// data is read.
async fn moved_usage(
    state: &AppState,
    snapshot: &drover_auth::policy::Snapshot,
    cluster: &str,
    write: &namespaces::NamespaceWrite,
    owner: bool,
) -> Result<Option<drover_core::api::ResourceList>, ApiError> {
    if write.create || !owner {
        return Ok(None);
    }
    let Some(project) = write
        .project_id
        .as_deref()
        .and_then(|id| id.split_once(':'))
        .filter(|(c, _)| *c == cluster)
        .map(|(_, p)| p)
    else {
        return Ok(None);
    };
    let projects = snapshot.projects_of(cluster);
    let Some(limit) = projects
        .get(project)
        .and_then(|spec| spec.resource_quota.as_ref())
    else {
        return Ok(None);
    };
    let client = crate::link::kube::Client::new(state.dialer.clone(), cluster);
    let ns = &write.namespace;
    let unavailable = |e: DownstreamError| {
        ApiError::unavailable(format!(
            "cannot count what namespace {ns} uses in cluster {cluster}: {e}"
        ))
    };
    let pods = client
        .get(&format!("/api/v1/namespaces/{ns}/pods"))
        .await
        .map_err(unavailable)?;
    let pods = pods["items"].as_array().cloned().unwrap_or_default();
    let mut counts = std::collections::BTreeMap::new();
    for key in limit.limit.keys() {
        if matches!(
            key.as_str(),
            "services" | "configmaps" | "secrets" | "persistentvolumeclaims"
        ) {
            let n = client
                .count(&format!("/api/v1/namespaces/{ns}/{key}"))
                .await
                .map_err(unavailable)?;
            counts.insert(key.clone(), n);
        }
    }
    Ok(Some(namespaces::usage(&pods, &counts)))
}

/// Whether a forwarded path asks for a dry run.
fn dry_run(path: &str) -> bool {
    path.split_once('?').is_some_and(|(_, q)| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "dryRun" && !v.is_empty())
    })
}

/// Read the cluster's answer to an accepted namespace write, record the
/// namespace's project, and pass the answer on.
async fn record_membership(
    state: &AppState,
    cluster: &str,
    write: &namespaces::NamespaceWrite,
    decision: &namespaces::Decision,
    resp: Response,
) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, super::MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(%cluster, error = %e, "cannot read the cluster's answer");
            return ApiError::new(502, "BadGateway", "the cluster's answer could not be read")
                .into_response();
        }
    };
    let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if let Err(e) = namespaces::record_write(&state.store, cluster, write, decision, &answer).await
    {
        tracing::warn!(%cluster, namespace = %write.namespace, error = %e, "the namespace was written, but its project could not be recorded");
        return e.into_response();
    }
    for h in ["connection", "keep-alive", "transfer-encoding", "upgrade"] {
        parts.headers.remove(h);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

/// A streamed answer whose failure (the link or the replica holding it
/// went away) ends it as a finished response instead of a reset: the
/// chunked stream closes, and kubectl and client-go list and watch again,
/// as after a kube-apiserver restart.
struct CleanEnd {
    body: Body,
}

impl http_body::Body for CleanEnd {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match std::pin::Pin::new(&mut self.body).poll_frame(cx) {
            std::task::Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, "a proxied stream lost its link; ending it");
                std::task::Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(uri: &str) -> Option<(String, String)> {
        split(&uri.parse().unwrap()).map(|(c, p)| (c.to_owned(), p))
    }

    #[test]
    fn only_plain_namespace_lists_are_narrowed() {
        assert_eq!(
            namespace_list_selectors("/api/v1/namespaces").as_deref(),
            Some("")
        );
        assert_eq!(
            namespace_list_selectors(
                "/api/v1/namespaces?limit=500&labelSelector=a%3Db&continue=x&timeoutSeconds=9"
            )
            .as_deref(),
            Some("labelSelector=a%3Db")
        );
        for watch in ["?watch=true", "?%77atch=1", "?watch", "?limit=1&watch=0"] {
            assert_eq!(
                namespace_list_selectors(&format!("/api/v1/namespaces{watch}")),
                None,
                "{watch}"
            );
        }
        assert_eq!(namespace_list_selectors("/api/v1/namespaces/x"), None);
        assert_eq!(namespace_list_selectors("/api/v1/namespacesx"), None);
    }

    #[test]
    fn splits_and_refuses_traversal() {
        assert_eq!(
            s("/k8s/clusters/c-1/api/v1/pods?watch=1"),
            Some(("c-1".into(), "/api/v1/pods?watch=1".into()))
        );
        assert_eq!(s("/k8s/clusters/c-1"), Some(("c-1".into(), "/".into())));
        for bad in [
            "/k8s/clusters/c-1/../c-2/api",
            "/k8s/clusters/c-1/api/%2e%2e/%2E%2E/c-2",
            "/k8s/clusters/c-1/api/.%2e/x",
            "/k8s/clusters/c-1/api/./x",
            "/k8s/clusters/c-1/api%2f..%2fx",
            "/k8s/clusters/c-1/a%5c..",
            "/k8s/clusters/C-1/api",
            "/k8s/clusters//api",
            // The agent's own paths are the server's alone.
            "/k8s/clusters/c-1/drover-agent/v1/trust",
            "/k8s/clusters/c-1/drover-agent/",
            "/k8s/clusters/c-1/drover-agent",
        ] {
            assert_eq!(s(bad), None, "{bad}");
        }
    }
}
