//! Authentication at the HTTP edge: the bearer-token middleware that turns
//! `Authorization: Bearer token-xxxxx:SECRET` into the caller's identity,
//! `POST /v1-public/login`, `POST …/users/{name}/password`, and the
//! sign-in providers' endpoints: `GET /v1-public/authproviders`, `POST
//! /v1-public/oidc/start`, `GET /v1/principals` (directory search) and
//! `POST …/users/{name}/refreshgroups`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use drover_apiserver::ApiError;
use drover_auth::authn::{Identity, Refusal};
use drover_auth::login::{LoginError, LoginRequest};
use drover_auth::users::{self, PasswordChange};
use drover_rbac::UserInfo;
use serde_json::json;

use super::AppState;

/// Largest login or password body.
const SMALL_BODY: usize = 64 * 1024;

/// The caller's identity from `Authorization: Bearer …`, or the error to
/// answer (401 for a missing, unknown, expired or disabled token). Refusals
/// are logged at debug with the source address, never with the token.
pub(crate) async fn identify(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    peer: Option<String>,
) -> Result<Identity, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .map(str::to_owned);
    let Some(bearer) = bearer else {
        return Err(ApiError::unauthorized());
    };
    match state.authn.authenticate(&bearer).await {
        Ok(Ok(identity)) => {
            // A kubeconfig from before a CA rotation trusts the old CA
            // (which still validates, cross-signed, for a while): tell its
            // user what to do rather than let it work on unnoticed.
            if let (true, Some(issued)) = (identity.for_kubeconfig, identity.issued_at) {
                if state
                    .tls
                    .rotated_at()
                    .is_some_and(|rotated| issued < rotated)
                {
                    return Err(ApiError::new(
                        401,
                        "Unauthorized",
                        "this kubeconfig was downloaded before the Drover server's CA was rotated, and trusts the old CA; download it again (drover kubeconfig CLUSTER, or the cluster's page in the web UI)",
                    ));
                }
            }
            Ok(identity)
        }
        Ok(Err(refusal)) => {
            tracing::debug!(?refusal, peer, "token refused");
            Err(match refusal {
                Refusal::Expired => {
                    ApiError::new(401, "Unauthorized", "the token has expired; log in again")
                }
                _ => ApiError::unauthorized(),
            })
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot check a token");
            Err(ApiError::unavailable("the datastore is unavailable"))
        }
    }
}

/// The source address of a request, for logs.
pub(crate) fn peer_of(req: &Request) -> Option<String> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string())
}

/// Require a valid token; put [`UserInfo`] and [`Identity`] in the request.
pub(crate) async fn require(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let identity = match identify(&state, req.headers(), peer_of(&req)).await {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    if let Some(cluster) = &identity.cluster_scope {
        return ApiError::new(
            401,
            "Unauthorized",
            format!("this token is scoped to cluster {cluster:?} and works only for that cluster"),
        )
        .into_response();
    }
    if let Some(caller) = req.extensions().get::<super::audit::Caller>() {
        caller.set(&identity.user);
    }
    if identity.must_change_password && !password_change_allowed(&req, &identity.user.name) {
        return ApiError::forbidden_because(format!(
            "user {:?} must change their password first (POST /apis/management.drover.io/v1/users/{}/password)",
            identity.user.name, identity.user.name
        ))
        .into_response();
    }
    // The bindings that authorize a watch, taken before it runs: one
    // removed meanwhile must end it.
    let grants = if super::sessions::watch_requested(req.method(), req.uri()) {
        match state.authz.snapshot().await {
            Ok(s) => Some(s.grants_of(&identity.user, None)),
            Err(e) => return e.into_response(),
        }
    } else {
        None
    };
    req.extensions_mut().insert(identity.user.clone());
    req.extensions_mut().insert(identity.clone());
    let response = next.run(req).await;
    if !response.status().is_success() || !super::sessions::streams(response.body()) {
        return response;
    }
    // A watch ends, as a finished stream, when its rights are revoked.
    let grants = match grants {
        Some(g) => g,
        None => match state.authz.snapshot().await {
            Ok(s) => s.grants_of(&identity.user, None),
            Err(e) => return e.into_response(),
        },
    };
    let registration = state.sessions.open(&state, &identity, None, grants).await;
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, super::sessions::Revocable::wrap(body, registration))
}

/// What a user who must change their password may still do: change it, and
/// ask who they are and what they may do.
fn password_change_allowed(req: &Request, user: &str) -> bool {
    let path = req.uri().path();
    path == format!("/apis/management.drover.io/v1/users/{user}/password")
        || path.ends_with("/selfsubjectreviews")
        || path.ends_with("/selfsubjectaccessreviews")
        || matches!(
            path,
            "/api" | "/apis" | "/apis/authentication.k8s.io/v1" | "/apis/authorization.k8s.io/v1"
        )
}

async fn small_json<T: serde::de::DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), SMALL_BODY)
        .await
        .map_err(|_| ApiError::too_large(SMALL_BODY))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// `POST /v1-public/login`. A login through a provider is audited as the
/// user it logged in, with the provider, the principal and its groups.
pub(crate) async fn login(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let caller = req.extensions().get::<super::audit::Caller>().cloned();
    let body: LoginRequest = match small_json(req).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match state.login.login(&body).await {
        Ok(done) => {
            if let (Some(caller), Some(p)) = (caller, &done.principal) {
                let mut groups = vec![drover_auth::authn::AUTHENTICATED.to_owned()];
                groups.extend(p.groups.iter().cloned());
                caller.set(&UserInfo {
                    name: done.user.clone(),
                    uid: String::new(),
                    groups,
                    extra: [
                        ("drover.io/provider".to_owned(), vec![p.provider.clone()]),
                        ("drover.io/principal".to_owned(), vec![p.id.clone()]),
                    ]
                    .into_iter()
                    .collect(),
                });
            }
            (
                StatusCode::OK,
                Json(json!({
                    "token": done.token, "expiresAt": done.expires_at, "user": done.user,
                    "username": done.principal.as_ref().map_or(body.username.as_str(), |p| p.login.as_str()),
                })),
            )
                .into_response()
        }
        Err(LoginError::Invalid) => {
            ApiError::new(401, "Unauthorized", "invalid username or password").into_response()
        }
        Err(LoginError::Unavailable) => ApiError::unavailable(
            "the identity provider is unavailable; try again later or ask an admin",
        )
        .into_response(),
        Err(LoginError::Locked(secs)) => ApiError::too_many_requests(
            "too many failed logins for this user; try again later",
            secs,
        )
        .into_response(),
        Err(LoginError::Store(e)) => {
            tracing::error!(error = %e, "login failed");
            ApiError::unavailable("the datastore is unavailable").into_response()
        }
    }
}

/// `POST /apis/management.drover.io/v1/users/{name}/password`.
pub(crate) async fn set_password(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let Some(caller) = req.extensions().get::<UserInfo>().cloned() else {
        return ApiError::unauthorized().into_response();
    };
    let body: PasswordChange = match small_json(req).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match users::set_password(&state.store, &state.authz, &caller, &name, &body).await {
        Ok(()) => (StatusCode::OK, Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "message": "password changed"}))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /v1-public/authproviders`: the providers people may log in with.
pub(crate) async fn providers(State(state): State<Arc<AppState>>) -> Response {
    let mut names = vec!["local"];
    names.extend(state.providers.enabled_names().await);
    Json(json!({"providers": names})).into_response()
}

/// The body of `POST /v1-public/oidc/start`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OidcStart {
    /// A loopback `http://127.0.0.1:PORT/…` URL of the CLI; absent: the web
    /// UI's callback.
    #[serde(default)]
    redirect_uri: Option<String>,
    /// The S256 challenge of a PKCE verifier the client keeps (and sends
    /// with the login); absent: the server's own.
    #[serde(default)]
    code_challenge: Option<String>,
}

/// The web UI's OIDC callback, under the server's URL.
pub const OIDC_CALLBACK: &str = "/dashboard/login/oidc/callback";

/// Whether a redirect is a loopback one a CLI may listen on (RFC 8252).
fn loopback_redirect(uri: &str) -> bool {
    url::Url::parse(uri).is_ok_and(|u| {
        u.scheme() == "http"
            && matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
            && u.port().is_some()
            && u.username().is_empty()
            && u.password().is_none()
            && u.fragment().is_none()
    })
}

/// `POST /v1-public/oidc/start`: where to send someone signing in with
/// the OIDC provider, and the state it will come back with.
pub(crate) async fn oidc_start(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let body: OidcStart = match small_json(req).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let redirect = match body.redirect_uri {
        Some(uri) if loopback_redirect(&uri) => uri,
        Some(_) => {
            return ApiError::bad_request(
                "redirectUri must be a loopback URL such as http://127.0.0.1:PORT/callback",
            )
            .into_response()
        }
        None => format!("{}{OIDC_CALLBACK}", state.import.server_url),
    };
    let oidc = match state.providers.oidc().await {
        Ok(o) => o,
        Err(_) => {
            return ApiError::new(404, "NotFound", "the oidc provider is not enabled")
                .into_response()
        }
    };
    match oidc
        .start(&state.store, &redirect, body.code_challenge.as_deref())
        .await
    {
        Ok(started) => Json(started).into_response(),
        Err(drover_auth::providers::ProviderError::Invalid) => ApiError::bad_request(
            "codeChallenge must be an S256 challenge: 43 URL-safe base64 characters",
        )
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot start an OIDC sign-in");
            ApiError::unavailable(
                "the identity provider is unavailable; try again later or ask an admin",
            )
            .into_response()
        }
    }
}

/// `GET /v1/principals?q=…`: users and groups of the enabled directories
/// whose names contain the query (at least 2 characters), for pickers.
pub(crate) async fn search_principals(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let query = q.get("q").map(|s| s.trim()).unwrap_or_default();
    if query.chars().count() < 2 || query.len() > 128 {
        return ApiError::bad_request("q must be 2 to 128 characters").into_response();
    }
    match state.providers.search(query).await {
        Ok(found) => Json(json!({"items": found})).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "principal search failed");
            ApiError::unavailable("the directory is unavailable").into_response()
        }
    }
}

/// `POST …/users/{name}/refreshgroups`: read a provider user's groups from
/// their provider now (needs `update` on `users/refreshgroups`).
pub(crate) async fn refresh_groups(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let Some(caller) = req.extensions().get::<UserInfo>().cloned() else {
        return ApiError::unauthorized().into_response();
    };
    let attrs =
        drover_rbac::Attributes::resource("update", drover_core::api::GROUP, "users", "", &name)
            .on_subresource("refreshgroups");
    match drover_apiserver::Authorizer::authorize(state.authz.as_ref(), &caller, &attrs).await {
        Ok(true) => {}
        Ok(false) => {
            return ApiError::forbidden_because(format!(
                "user {:?} cannot refresh the groups of user {name:?}",
                caller.name
            ))
            .into_response()
        }
        Err(e) => return e.into_response(),
    }
    use crate::controller::groups::Refreshed;
    match crate::controller::groups::refresh_user(&state.store, &state.providers, &name).await {
        Ok(r) => Json(json!({"refreshed": match r {
            Refreshed::Unchanged => "unchanged",
            Refreshed::Groups => "groups changed",
            Refreshed::Disabled => "disabled or gone at their provider",
            Refreshed::Skipped => "not a provider's user, their provider is disabled, or it cannot be asked",
        }}))
        .into_response(),
        Err(e) => {
            tracing::error!(user = %name, error = %e, "cannot refresh a user's groups");
            ApiError::unavailable("the directory is unavailable").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_redirects() {
        assert!(super::loopback_redirect("http://127.0.0.1:8000/callback"));
        assert!(super::loopback_redirect("http://localhost:1234/cb"));
        assert!(!super::loopback_redirect("http://127.0.0.1/callback"));
        assert!(!super::loopback_redirect("https://evil.example:443/cb"));
        assert!(!super::loopback_redirect(
            "http://127.0.0.1.evil.example:80/cb"
        ));
        assert!(!super::loopback_redirect("http://user@127.0.0.1:80/cb"));
    }
}
