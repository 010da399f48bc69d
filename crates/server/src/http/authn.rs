//! Authentication at the HTTP edge: the bearer-token middleware that turns
//! `Authorization: Bearer token-xxxxx:SECRET` into the caller's identity,
//! `POST /v1-public/login`, and `POST …/users/{name}/password`.

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
        Ok(Ok(identity)) => Ok(identity),
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

/// `POST /v1-public/login`.
pub(crate) async fn login(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let body: LoginRequest = match small_json(req).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match state.login.login(&body).await {
        Ok(done) => (
            StatusCode::OK,
            Json(json!({"token": done.token, "expiresAt": done.expires_at})),
        )
            .into_response(),
        Err(LoginError::Invalid) => {
            ApiError::new(401, "Unauthorized", "invalid username or password").into_response()
        }
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
