//! Sessions and CSRF.
//!
//! Signing in creates an ordinary API token (stored hashed, revoked at
//! sign-out) and keeps it in a `__Host-` cookie that is `HttpOnly`,
//! `Secure` and `SameSite=Strict`. Every form carries a CSRF token derived
//! from the session's secret (a SHA-256 under a domain label), checked in
//! constant time before any handler runs; the sign-in form, which has no
//! session yet, uses a random token that must match a cookie of its own.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::access::Rules;
use crate::api::Api;
use crate::error::UiError;
use crate::Ui;

/// The session cookie: the user's API token.
pub(crate) const SESSION_COOKIE: &str = "__Host-drover-session";
/// The sign-in form's CSRF cookie.
pub(crate) const LOGIN_COOKIE: &str = "__Host-drover-signin";
/// The form field every POST carries.
pub(crate) const CSRF_FIELD: &str = "_csrf";
/// Largest form accepted: an object's YAML edit or Import YAML holds up to
/// 1 MiB of YAML, URL-encoded.
const MAX_FORM: usize = 3 * 1024 * 1024;

/// A cookie's value from the request headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a secure, script-invisible, same-site-only cookie.
pub(crate) fn set_cookie(name: &str, value: &str, max_age_seconds: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_seconds}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Set-Cookie` that removes a cookie.
pub(crate) fn clear_cookie(name: &str) -> HeaderValue {
    set_cookie(name, "", 0)
}

/// The CSRF token of a session.
pub(crate) fn csrf_for(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"drover-ui-csrf\0");
    h.update(session_token.as_bytes());
    hex::encode(&h.finalize()[..20])
}

pub(crate) fn same(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Refuse every POST whose `_csrf` field does not match the session's (or,
/// for the sign-in form, its cookie's) token; pass the form on untouched.
pub(crate) async fn check_csrf(req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
        return UiError::BadRequest(format!("the form is larger than {MAX_FORM} bytes"))
            .into_response();
    };
    let given = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|fields| {
            fields
                .into_iter()
                .find(|(k, _)| k == CSRF_FIELD)
                .map(|(_, v)| v)
        })
        .unwrap_or_default();
    let expected = if parts.uri.path() == "/dashboard/login" {
        cookie(&parts.headers, LOGIN_COOKIE)
    } else {
        cookie(&parts.headers, SESSION_COOKIE).map(|t| csrf_for(&t))
    };
    match expected {
        Some(expected) if same(&expected, &given) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        _ => {
            tracing::info!(path = %parts.uri.path(), "UI form refused: CSRF token missing or wrong");
            UiError::Csrf.into_response()
        }
    }
}

/// The signed-in user of a page.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// Their API token (the cookie's value).
    pub token: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// Their user name, as the API knows it.
    pub user: String,
    /// What they may do in the management API, in the namespace of the
    /// page's cluster (asked once per page).
    pub rules: Rules,
}

impl Session {
    /// The token's name (`token-xxxxx`), which revokes it.
    pub(crate) fn token_name(&self) -> &str {
        self.token.split(':').next().unwrap_or_default()
    }
}

impl FromRequestParts<Arc<Ui>> for Session {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, ui: &Arc<Ui>) -> Result<Self, UiError> {
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or(UiError::SignedOut)?;
        let user = whoami(&ui.api, &token).await?;
        // `/dashboard/clusters/{id}/…`: the cluster's namespace holds its
        // members and projects.
        let namespace = parts
            .uri
            .path()
            .strip_prefix("/dashboard/clusters/")
            .and_then(|rest| rest.split('/').next())
            .filter(|id| !id.is_empty() && *id != "events" && *id != "new")
            .unwrap_or("default")
            .to_owned();
        let rules = Rules::management(&ui.api, &token, &namespace).await;
        Ok(Session {
            csrf: csrf_for(&token),
            token,
            user,
            rules,
        })
    }
}

/// The signed-in user's token alone, for the streams (live rows, log
/// tails): the API calls they make authenticate it, and a stale one
/// answers 401, which signs the browser out — no review per stream.
pub(crate) struct Bearer(pub String);

impl FromRequestParts<Arc<Ui>> for Bearer {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<Ui>) -> Result<Self, UiError> {
        cookie(&parts.headers, SESSION_COOKIE)
            .map(Bearer)
            .ok_or(UiError::SignedOut)
    }
}

/// Who holds `token`, from a SelfSubjectReview (which a user who must
/// change their password may still make).
pub(crate) async fn whoami(api: &Api, token: &str) -> Result<String, UiError> {
    let review = api
        .call(
            Method::POST,
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            token,
            Some(&serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})),
        )
        .await?;
    review["status"]["userInfo"]["username"]
        .as_str()
        .map(str::to_owned)
        .ok_or(UiError::SignedOut)
}

/// Every page's policy: nothing inline, nothing from elsewhere, no framing.
const STRICT_CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Marks a page whose terminal (xterm.js) sets inline styles (a response
/// extension): it gets [`TERMINAL_CSP`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct TerminalPage;

/// The policy of a page whose terminal (xterm.js) sets inline styles:
/// the same as every page's, with inline styles allowed.
pub(crate) const TERMINAL_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers every UI answer carries: a strict Content-Security-Policy (no
/// inline script or style, nothing from elsewhere, no framing), no caching
/// of pages that may hold secrets, no MIME sniffing, no referrer.
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    // The pod page's terminal sets its styles inline; scripts stay this
    // site's own everywhere, and no other answer sets its own policy.
    let terminal = resp.extensions().get::<TerminalPage>().is_some();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if terminal { TERMINAL_CSP } else { STRICT_CSP }),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-drover-session=token-x:s; b=2"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-drover-signin=abc"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("token-x:s"));
        assert_eq!(cookie(&h, LOGIN_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "drover-session"), None);
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let a = csrf_for("token-a:secret");
        assert_eq!(a.len(), 40);
        assert_ne!(a, csrf_for("token-a:other"));
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &a[..39]));
        assert!(!same("", ""), "an empty token never matches");
    }

    #[test]
    fn session_cookies_are_strict() {
        let v = set_cookie(SESSION_COOKIE, "t", 60);
        let v = v.to_str().unwrap();
        for part in [
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(v.contains(part), "{v} lacks {part}");
        }
    }
}
