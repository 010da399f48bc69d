//! Signing in and out — with a local or directory account, or through the
//! OIDC provider's page (start and callback) — and changing one's password
//! (forced when the account must change it).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use crate::api::{seg, MGMT};
use crate::error::UiError;
use crate::session::{
    clear_cookie, cookie, set_cookie, Session, CSRF_FIELD, LOGIN_COOKIE, SESSION_COOKIE,
};
use crate::view;
use crate::Ui;

/// How long a UI session lasts.
const SESSION_SECONDS: u64 = 12 * 3600;

/// The cookie binding an OIDC sign-in to the browser that started it
/// (`SameSite=Lax`: it must come back with the provider's redirect).
const OIDC_COOKIE: &str = "__Host-drover-oidc";

/// The providers people may sign in with, as the server says.
pub(crate) async fn providers(ui: &Ui) -> Vec<String> {
    match ui
        .api
        .call(Method::GET, "/v1-public/authproviders", "", None)
        .await
    {
        Ok(v) => v["providers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect(),
        Err(_) => vec!["local".to_owned()],
    }
}

fn provider_label(p: &str) -> &str {
    match p {
        "local" => "Local account",
        "ldap" => "LDAP directory",
        "activedirectory" => "Active Directory",
        other => other,
    }
}

fn login_form(csrf: &str, username: &str, error: Option<&str>, providers: &[String]) -> Markup {
    let password_providers: Vec<&String> = providers.iter().filter(|p| *p != "oidc").collect();
    view::bare(
        "Sign in",
        html! {
            h1 { "Sign in to Drover" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            @if providers.iter().any(|p| p == "oidc") {
                p { a.button #oidc href="/dashboard/login/oidc" { "Sign in with single sign-on" } }
            }
            form method="post" action="/dashboard/login" data-native {
                input type="hidden" name=(CSRF_FIELD) value=(csrf);
                @if password_providers.len() > 1 {
                    div.field {
                        label for="provider" { "Account" }
                        select #provider name="provider" {
                            @for p in &password_providers { option value=(p) { (provider_label(p)) } }
                        }
                    }
                }
                div.field {
                    label for="username" { "Username" }
                    input #username name="username" type="text" value=(username) required autocomplete="username" autofocus;
                }
                div.field {
                    label for="password" { "Password" }
                    input #password name="password" type="password" required autocomplete="current-password";
                }
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// `GET /dashboard/login`: the form, with a fresh sign-in CSRF cookie.
pub(crate) async fn login_page(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    if cookie(&headers, SESSION_COOKIE).is_some() {
        // Already signed in (or a stale cookie, which the next page clears).
        return Redirect::to("/dashboard/clusters").into_response();
    }
    let csrf = drover_core::names::random_suffix(32);
    (
        [(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &csrf, 3600))],
        login_form(&csrf, "", None, &providers(&ui).await),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    provider: Option<String>,
    username: String,
    password: String,
}

/// The page that ends a sign-in: sets the session and moves on from the
/// site itself, so the `SameSite=Strict` session cookie goes with the
/// next request even after a provider's cross-site redirect.
fn signed_in(token: &str) -> Response {
    let page = view::bare(
        "Signed in",
        html! {
            meta http-equiv="refresh" content="0;url=/dashboard/clusters";
            p { "Signed in. " a href="/dashboard/clusters" { "Continue" } }
        },
    );
    let mut resp = page.into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, token, SESSION_SECONDS),
    );
    h.append(header::SET_COOKIE, clear_cookie(LOGIN_COOKIE));
    h.append(header::SET_COOKIE, clear_cookie(OIDC_COOKIE));
    resp
}

/// `GET /dashboard/login/oidc`: off to the provider's page.
pub(crate) async fn oidc_start(State(ui): State<Arc<Ui>>) -> Response {
    match ui
        .api
        .call(Method::POST, "/v1-public/oidc/start", "", Some(&json!({})))
        .await
    {
        Ok(started) => {
            let state = started["state"].as_str().unwrap_or_default();
            let url = started["url"].as_str().unwrap_or_default();
            let mut resp = Redirect::to(url).into_response();
            let value = format!(
                "{OIDC_COOKIE}={state}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600"
            );
            if let Ok(v) = header::HeaderValue::from_str(&value) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => {
            let csrf = drover_core::names::random_suffix(32);
            (
                e.status(),
                [(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &csrf, 3600))],
                login_form(&csrf, "", Some(&e.to_string()), &providers(&ui).await),
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct OidcCallback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// `GET /dashboard/login/oidc/callback`: the provider's redirect. The state
/// must be the one this browser started with.
pub(crate) async fn oidc_callback(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Query(q): Query<OidcCallback>,
) -> Response {
    let started_here = cookie(&headers, OIDC_COOKIE);
    let outcome = match (&q.code, &q.state, &q.error) {
        (_, _, Some(err)) => Err(format!(
            "The identity provider refused the sign-in ({err})."
        )),
        (Some(code), Some(state), None)
            if started_here
                .as_deref()
                .is_some_and(|s| crate::session::same(s, state)) =>
        {
            let body = json!({
                "provider": "oidc", "code": code, "state": state,
                "ttlSeconds": SESSION_SECONDS, "description": "Drover web UI session",
            });
            ui.api
                .call(Method::POST, "/v1-public/login", "", Some(&body))
                .await
                .map_err(|e| match e {
                    UiError::SignedOut => "The sign-in was refused; try again.".to_owned(),
                    other => other.to_string(),
                })
        }
        _ => Err(
            "This sign-in was not started in this browser, or it expired; try again.".to_owned(),
        ),
    };
    match outcome {
        Ok(done) => signed_in(done["token"].as_str().unwrap_or_default()),
        Err(message) => {
            let csrf = drover_core::names::random_suffix(32);
            (
                StatusCode::UNAUTHORIZED,
                [(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &csrf, 3600))],
                login_form(&csrf, "", Some(&message), &providers(&ui).await),
            )
                .into_response()
        }
    }
}

/// `POST /dashboard/login`.
pub(crate) async fn login(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let csrf = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let body = json!({
        "provider": form.provider.as_deref().unwrap_or("local"),
        "username": form.username, "password": form.password,
        "ttlSeconds": SESSION_SECONDS, "description": "Drover web UI session",
    });
    match ui
        .api
        .call(Method::POST, "/v1-public/login", "", Some(&body))
        .await
    {
        Ok(done) => {
            let token = done["token"].as_str().unwrap_or_default();
            let mut resp = Redirect::to("/dashboard/clusters").into_response();
            let h = resp.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, token, SESSION_SECONDS),
            );
            h.append(header::SET_COOKIE, clear_cookie(LOGIN_COOKIE));
            resp
        }
        Err(e)
            if form.provider.as_deref().is_some_and(|p| p != "local")
                && matches!(e, UiError::SignedOut) =>
        {
            (
                StatusCode::UNAUTHORIZED,
                login_form(
                    &csrf,
                    &form.username,
                    Some("Invalid username or password."),
                    &providers(&ui).await,
                ),
            )
                .into_response()
        }
        Err(e) => {
            let (status, message) = match &e {
                UiError::SignedOut => (
                    StatusCode::UNAUTHORIZED,
                    "Invalid username or password.".to_owned(),
                ),
                other => (other.status(), other.to_string()),
            };
            (
                status,
                login_form(&csrf, &form.username, Some(&message), &providers(&ui).await),
            )
                .into_response()
        }
    }
}

/// `POST /dashboard/logout`: revoke the session's token, drop the cookie.
pub(crate) async fn logout(State(ui): State<Arc<Ui>>, session: Session) -> Response {
    let path = format!("{MGMT}/tokens/{}", seg(session.token_name()));
    if let Err(e) = ui
        .api
        .call(Method::DELETE, &path, &session.token, None)
        .await
    {
        tracing::warn!(error = %e, "could not revoke a UI session token at sign-out");
    }
    (
        [(header::SET_COOKIE, clear_cookie(SESSION_COOKIE))],
        Redirect::to("/dashboard/login"),
    )
        .into_response()
}

fn password_form(session: &Session, error: Option<&str>, forced: bool) -> Markup {
    view::bare(
        "Change password",
        html! {
            h1 { "Change your password" }
            @if forced { p { "Your account must have a new password before you go on." } }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/dashboard/password" data-native {
                (view::csrf(session))
                div.field {
                    label for="current" { "Current password" }
                    input #current name="current" type="password" required autocomplete="current-password";
                }
                div.field {
                    label for="new" { "New password" }
                    input #new name="new" type="password" required autocomplete="new-password" minlength="12";
                }
                div.field {
                    label for="confirm" { "New password, again" }
                    input #confirm name="confirm" type="password" required autocomplete="new-password" minlength="12";
                }
                button type="submit" { "Change password" }
            }
            p { a href="/dashboard/clusters" { "Cancel" } }
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct Forced {
    #[serde(default)]
    forced: Option<String>,
}

/// `GET /dashboard/password`.
pub(crate) async fn password_page(session: Session, Query(q): Query<Forced>) -> Markup {
    password_form(&session, None, q.forced.is_some())
}

#[derive(Deserialize)]
pub(crate) struct PasswordForm {
    current: String,
    new: String,
    confirm: String,
}

/// `POST /dashboard/password`.
pub(crate) async fn change_password(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Form(form): Form<PasswordForm>,
) -> Response {
    if form.new != form.confirm {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            password_form(&session, Some("The two new passwords differ."), false),
        )
            .into_response();
    }
    let path = format!("{MGMT}/users/{}/password", seg(&session.user));
    let body = json!({"newPassword": form.new, "currentPassword": form.current});
    match ui
        .api
        .call(Method::POST, &path, &session.token, Some(&body))
        .await
    {
        Ok(_) => Redirect::to("/dashboard/clusters?notice=password").into_response(),
        Err(UiError::SignedOut) => UiError::SignedOut.into_response(),
        Err(e) => (
            e.status(),
            password_form(&session, Some(&e.to_string()), false),
        )
            .into_response(),
    }
}
