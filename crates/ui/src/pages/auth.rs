//! Signing in and out, and changing one's password (forced when the account
//! must change it).

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

fn login_form(csrf: &str, username: &str, error: Option<&str>) -> Markup {
    view::bare(
        "Sign in",
        html! {
            h1 { "Sign in to Drover" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/dashboard/login" {
                input type="hidden" name=(CSRF_FIELD) value=(csrf);
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
pub(crate) async fn login_page(headers: HeaderMap) -> Response {
    if cookie(&headers, SESSION_COOKIE).is_some() {
        // Already signed in (or a stale cookie, which the next page clears).
        return Redirect::to("/dashboard/clusters").into_response();
    }
    let csrf = drover_core::names::random_suffix(32);
    (
        [(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &csrf, 3600))],
        login_form(&csrf, "", None),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    username: String,
    password: String,
}

/// `POST /dashboard/login`.
pub(crate) async fn login(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let csrf = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let body = json!({
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
        Err(e) => {
            let (status, message) = match &e {
                UiError::SignedOut => (
                    StatusCode::UNAUTHORIZED,
                    "Invalid username or password.".to_owned(),
                ),
                other => (other.status(), other.to_string()),
            };
            (status, login_form(&csrf, &form.username, Some(&message))).into_response()
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
            form method="post" action="/dashboard/password" {
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
