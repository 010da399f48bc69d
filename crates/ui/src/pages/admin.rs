//! Users and global roles, API keys, and settings.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{seg, MGMT};
use crate::error::UiError;
use crate::pages::clusters::{notice_text, NoticeQuery};
use crate::session::Session;
use crate::view::{self, s, Section};
use crate::Ui;

/// The global role that makes an administrator.
const ADMIN_ROLE: &str = "admin";

/// `GET /dashboard/users`.
pub(crate) async fn users(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Query(q): Query<NoticeQuery>,
) -> Result<Markup, UiError> {
    let token = &session.token;
    let users = ui.api.items(&format!("{MGMT}/users"), token).await?;
    let bindings = ui
        .api
        .items(&format!("{MGMT}/globalrolebindings"), token)
        .await?;
    let roles = ui.api.items(&format!("{MGMT}/globalroles"), token).await?;
    let is_admin = |user: &str| {
        bindings
            .iter()
            .any(|b| s(b, "/spec/userName") == user && s(b, "/spec/globalRoleName") == ADMIN_ROLE)
    };
    Ok(view::page(
        "Users",
        &session,
        Section::Users,
        html! {
            h1 { "Users" }
            (view::notice(notice_text(q.notice.as_deref())))
            div.scroll { table #users {
                thead { tr {
                    th scope="col" { "Username" } th scope="col" { "Display name" }
                    th scope="col" { "Enabled" } th scope="col" { "Administrator" } th scope="col" { span.sr { "Actions" } }
                } }
                tbody { @for u in &users {
                    @let name = s(u, "/metadata/name");
                    @let enabled = u.pointer("/spec/enabled").and_then(Value::as_bool).unwrap_or(true);
                    @let admin = is_admin(name);
                    tr {
                        td { (s(u, "/spec/username")) }
                        td { (s(u, "/spec/displayName")) }
                        td { (if enabled { "yes" } else { "no" }) }
                        td { (if admin { "yes" } else { "no" }) }
                        td.actions {
                            form.inline method="post" action={ "/dashboard/users/" (seg(name)) "/enabled" } {
                                (view::csrf(&session))
                                input type="hidden" name="value" value=(if enabled { "false" } else { "true" });
                                button.secondary type="submit" { (if enabled { "Disable" } else { "Enable" }) }
                            }
                            form.inline method="post" action={ "/dashboard/users/" (seg(name)) "/admin" } {
                                (view::csrf(&session))
                                input type="hidden" name="value" value=(if admin { "false" } else { "true" });
                                button.secondary type="submit" { (if admin { "Remove administrator" } else { "Make administrator" }) }
                            }
                        }
                    }
                } }
            } }
            h2 { "Add a user" }
            form method="post" action="/dashboard/users" {
                (view::csrf(&session))
                (view::text_field("Username", "username", true))
                (view::text_field("Display name", "displayName", false))
                div.field {
                    label for="f-password" { "Password (at least 12 characters)" }
                    input #f-password name="password" type="password" required minlength="12" autocomplete="new-password";
                }
                div.check {
                    input #f-must name="mustChange" type="checkbox" value="true" checked;
                    label for="f-must" { "Must change the password at first sign-in" }
                }
                div.check {
                    input #f-admin name="admin" type="checkbox" value="true";
                    label for="f-admin" { "Administrator" }
                }
                button type="submit" { "Add user" }
            }
            h2 { "Global roles" }
            div.scroll { table #globalroles {
                thead { tr { th scope="col" { "Role" } th scope="col" { "Display name" } th scope="col" { "Users" } } }
                tbody { @for r in &roles {
                    @let rn = s(r, "/metadata/name");
                    tr {
                        td { (rn) }
                        td { (s(r, "/spec/displayName")) }
                        td { (bindings.iter().filter(|b| s(b, "/spec/globalRoleName") == rn).map(|b| s(b, "/spec/userName")).filter(|u| !u.is_empty()).collect::<Vec<_>>().join(", ")) }
                    }
                } }
            } }
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct NewUser {
    username: String,
    #[serde(default, rename = "displayName")]
    display_name: String,
    password: String,
    #[serde(default, rename = "mustChange")]
    must_change: Option<String>,
    #[serde(default)]
    admin: Option<String>,
}

/// `POST /dashboard/users`: the user, their password, and (if asked) the
/// administrator binding.
pub(crate) async fn create_user(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Form(form): Form<NewUser>,
) -> Result<Response, UiError> {
    let token = &session.token;
    let username = form.username.trim();
    let mut spec = json!({"username": username, "enabled": true, "mustChangePassword": form.must_change.is_some()});
    if !form.display_name.trim().is_empty() {
        spec["displayName"] = json!(form.display_name.trim());
    }
    let user = ui
        .api
        .call(
            Method::POST,
            &format!("{MGMT}/users"),
            token,
            Some(&json!({"apiVersion": "management.drover.io/v1", "kind": "User", "metadata": {"name": username}, "spec": spec})),
        )
        .await?;
    let name = s(&user, "/metadata/name").to_owned();
    let set = ui
        .api
        .call(
            Method::POST,
            &format!("{MGMT}/users/{}/password", seg(&name)),
            token,
            Some(&json!({"newPassword": form.password})),
        )
        .await;
    if let Err(e) = set {
        // A user nobody can sign in as is of no use: take it back.
        let _ = ui
            .api
            .call(
                Method::DELETE,
                &format!("{MGMT}/users/{}", seg(&name)),
                token,
                None,
            )
            .await;
        return Err(e);
    }
    if form.admin.is_some() {
        set_admin(&ui, token, &name, true).await?;
    }
    Ok(Redirect::to("/dashboard/users?notice=user-created").into_response())
}

#[derive(Deserialize)]
pub(crate) struct Flag {
    value: String,
}

/// `POST /dashboard/users/{name}/enabled`.
pub(crate) async fn set_enabled(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(name): Path<String>,
    Form(form): Form<Flag>,
) -> Result<Response, UiError> {
    let patch = json!({"spec": {"enabled": form.value == "true"}});
    ui.api
        .call_as(
            Method::PATCH,
            &format!("{MGMT}/users/{}", seg(&name)),
            &session.token,
            Some(&patch),
            "application/merge-patch+json",
        )
        .await?;
    Ok(Redirect::to("/dashboard/users?notice=user-changed").into_response())
}

/// `POST /dashboard/users/{name}/admin`.
pub(crate) async fn set_admin_flag(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(name): Path<String>,
    Form(form): Form<Flag>,
) -> Result<Response, UiError> {
    set_admin(&ui, &session.token, &name, form.value == "true").await?;
    Ok(Redirect::to("/dashboard/users?notice=user-changed").into_response())
}

async fn set_admin(ui: &Ui, token: &str, user: &str, admin: bool) -> Result<(), UiError> {
    let bindings = ui
        .api
        .items(&format!("{MGMT}/globalrolebindings"), token)
        .await?;
    let existing: Vec<&str> = bindings
        .iter()
        .filter(|b| s(b, "/spec/userName") == user && s(b, "/spec/globalRoleName") == ADMIN_ROLE)
        .map(|b| s(b, "/metadata/name"))
        .collect();
    if admin && existing.is_empty() {
        ui.api
            .call(
                Method::POST,
                &format!("{MGMT}/globalrolebindings"),
                token,
                Some(
                    &json!({"apiVersion": "management.drover.io/v1", "kind": "GlobalRoleBinding",
                    "metadata": {"generateName": "grb-"},
                    "spec": {"userName": user, "globalRoleName": ADMIN_ROLE}}),
                ),
            )
            .await?;
    }
    if !admin {
        for b in existing {
            ui.api
                .call(
                    Method::DELETE,
                    &format!("{MGMT}/globalrolebindings/{}", seg(b)),
                    token,
                    None,
                )
                .await?;
        }
    }
    Ok(())
}

fn tokens_page(
    session: &Session,
    tokens: &[Value],
    created: Option<(&str, &str)>,
    notice: Option<&str>,
) -> Markup {
    view::page(
        "API keys",
        session,
        Section::Tokens,
        html! {
            h1 { "API keys" }
            (view::notice(notice))
            @if let Some((name, secret)) = created {
                section.secret aria-labelledby="secret-h" {
                    h2 #secret-h { "Your new key " code { (name) } }
                    p { strong { "Copy it now: Drover keeps only a hash and will not show it again." } }
                    pre #new-key { code { (secret) } }
                    (view::copy_button("new-key", "Copy key"))
                }
            }
            div.scroll { table #tokens {
                thead { tr {
                    th scope="col" { "Key" } th scope="col" { "Description" } th scope="col" { "Cluster" }
                    th scope="col" { "Expires" } th scope="col" { span.sr { "Actions" } }
                } }
                tbody { @for t in tokens {
                    @let name = s(t, "/metadata/name");
                    tr {
                        td { code { (name) } @if name == session.token_name() { " (this session)" } }
                        td { (s(t, "/spec/description")) }
                        td { (s(t, "/spec/clusterName")) }
                        td { @match s(t, "/status/expiresAt") { "" => "never", e => (view::until(e)) } }
                        td {
                            @if name != session.token_name() {
                                a href={ "/dashboard/tokens/" (seg(name)) "/delete" } aria-label={ "Delete key " (name) } { "Delete…" }
                            }
                        }
                    }
                } }
            } }
            h2 { "Create a key" }
            form method="post" action="/dashboard/tokens" {
                (view::csrf(session))
                (view::text_field("Description", "description", true))
                div.field {
                    label for="f-ttl" { "Expires" }
                    select #f-ttl name="ttl" {
                        option value="2592000" { "in 30 days" }
                        option value="7776000" { "in 90 days" }
                        option value="86400" { "in 1 day" }
                        option value="0" { "never" }
                    }
                }
                button type="submit" { "Create key" }
            }
        },
    )
}

async fn my_tokens(ui: &Ui, session: &Session) -> Result<Vec<Value>, UiError> {
    Ok(ui
        .api
        .items(&format!("{MGMT}/tokens"), &session.token)
        .await?
        .into_iter()
        .filter(|t| s(t, "/spec/userName") == session.user)
        .collect())
}

/// `GET /dashboard/tokens`.
pub(crate) async fn tokens(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Query(q): Query<NoticeQuery>,
) -> Result<Markup, UiError> {
    let tokens = my_tokens(&ui, &session).await?;
    Ok(tokens_page(
        &session,
        &tokens,
        None,
        notice_text(q.notice.as_deref()),
    ))
}

#[derive(Deserialize)]
pub(crate) struct NewToken {
    description: String,
    #[serde(default)]
    ttl: u64,
}

/// `POST /dashboard/tokens`: the key's secret is in this answer only.
pub(crate) async fn create_token(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Form(form): Form<NewToken>,
) -> Result<Markup, UiError> {
    let mut spec = json!({"userName": session.user, "description": form.description.trim()});
    if form.ttl > 0 {
        spec["ttlSeconds"] = json!(form.ttl);
    }
    let created = ui
        .api
        .call(
            Method::POST,
            &format!("{MGMT}/tokens"),
            &session.token,
            Some(&json!({"apiVersion": "management.drover.io/v1", "kind": "Token", "spec": spec})),
        )
        .await?;
    let tokens = my_tokens(&ui, &session).await?;
    Ok(tokens_page(
        &session,
        &tokens,
        Some((s(&created, "/metadata/name"), s(&created, "/status/token"))),
        Some("The key was created."),
    ))
}

/// `GET /dashboard/tokens/{name}/delete`: confirm by typing the key's name.
pub(crate) async fn delete_token_page(session: Session, Path(name): Path<String>) -> Markup {
    view::page(
        "Delete API key",
        &session,
        Section::Tokens,
        html! {
            h1 { "Delete API key " code { (name) } "?" }
            p { "Whatever uses it stops working at once, open connections included." }
            (view::confirm_delete(
                &session,
                &format!("/dashboard/tokens/{}/delete", seg(&name)),
                &name,
                "Delete key",
                "/dashboard/tokens",
            ))
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct Confirm {
    confirm: String,
}

/// `POST /dashboard/tokens/{name}/delete`.
pub(crate) async fn delete_token(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(name): Path<String>,
    Form(form): Form<Confirm>,
) -> Result<Response, UiError> {
    if form.confirm.trim() != name {
        return Err(UiError::BadRequest(format!(
            "type the key's name {name:?} to delete it"
        )));
    }
    ui.api
        .call(
            Method::DELETE,
            &format!("{MGMT}/tokens/{}", seg(&name)),
            &session.token,
            None,
        )
        .await?;
    Ok(Redirect::to("/dashboard/tokens?notice=key-deleted").into_response())
}

/// `GET /dashboard/settings`: the server's facts and, for those who may
/// see them (admins), its backups with "Back up now".
pub(crate) async fn settings(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Query(q): Query<NoticeQuery>,
) -> Result<Markup, UiError> {
    let providers = if super::providers::may_configure(&ui, &session).await {
        Some(
            ui.api
                .items(&format!("{MGMT}/authconfigs"), &session.token)
                .await?,
        )
    } else {
        None
    };
    // Lists show only what the caller may see; the section is for those
    // who may make backups (admins, by default).
    let review = ui
        .api
        .call(
            Method::POST,
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &session.token,
            Some(&json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"group": "management.drover.io", "resource": "backups", "verb": "create"}}})),
        )
        .await?;
    let backups = if review.pointer("/status/allowed") == Some(&Value::Bool(true)) {
        Some(
            ui.api
                .items(&format!("{MGMT}/backups"), &session.token)
                .await?,
        )
    } else {
        None
    };
    // Only those who may list notifiers (admins, by default) see them.
    let notifiers = ui
        .api
        .items(&format!("{MGMT}/notifiers"), &session.token)
        .await
        .ok();
    let notice = match q.notice.as_deref() {
        Some("backup-started") => Some("The backup was started; its state shows below."),
        Some("provider-saved") => Some("The sign-in provider was saved."),
        other => notice_text(other),
    };
    let checksum = ui.tls.ca_checksum();
    Ok(view::page(
        "Settings",
        &session,
        Section::Settings,
        html! {
            h1 { "Settings" }
            (view::notice(notice))
            dl.summary {
                dt { "Drover version" } dd { (drover_core::VERSION) }
                dt { "CA certificate" } dd { a href="/cacerts" { "Download (PEM)" } }
                dt { "CA checksum (SHA-256)" }
                @if checksum.is_empty() {
                    dd { "None: the server's certificate is from a public CA." }
                } @else {
                    dd { code #ca-checksum { (checksum) } " " (view::copy_button("ca-checksum", "Copy")) }
                }
                dt { "Sessions" } dd { "A sign-in lasts 12 hours, or until you sign out." }
            }
            (certificates_section(&ui.tls.certificates()))
            @if let Some(backups) = &backups {
                (backups_section(&session, backups))
            }
            @if let Some(notifiers) = &notifiers {
                (notifiers_section(&session, notifiers))
            }
            @if let Some(configs) = &providers {
                (super::providers::section(&session, configs, &ui.server_url))
            }
            h2 { "Your account" }
            p { a href="/dashboard/password" { "Change your password" } }
        },
    ))
}

/// The server's certificates with their expiry; one within 30 days of it
/// is marked.
fn certificates_section(certs: &[crate::CertificateView]) -> Markup {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let what = |name: &str| match name {
        "serving" => "Serving certificate",
        "ca" => "CA",
        "ca-next" => "Next CA (rotation under way)",
        _ => "Certificate",
    };
    html! {
        h2 { "Certificates" }
        @if certs.is_empty() {
            p { "A load balancer in front of Drover serves the certificate clients see." }
        } @else {
            div.scroll { table #certificates {
                thead { tr { th { "Certificate" } th { "Subject" } th { "Issuer" } th { "Expires" } } }
                tbody {
                    @for c in certs {
                        @let days = (c.not_after - now).div_euclid(86_400);
                        @let date = drover_core::meta::rfc3339(drover_core::meta::from_unix(c.not_after));
                        tr data-certificate=(c.name) {
                            td { (what(&c.name)) }
                            td { (c.subject) }
                            td { (c.issuer) }
                            td.warn[days < 30] title=(date) {
                                @if c.not_after <= now { "expired " (date) }
                                @else if days < 1 { "within a day (" (date) ")" }
                                @else { "in " (days) " days (" (date) ")" }
                            }
                        }
                    }
                }
            } }
        }
    }
}

/// The backups table and the "Back up now" form.
fn backups_section(session: &Session, backups: &[Value]) -> Markup {
    html! {
        h2 { "Backups" }
        @if backups.is_empty() {
            p { "No backups yet." }
        } @else {
            div.scroll { table #backups {
                thead { tr {
                    th scope="col" { "Backup" } th scope="col" { "Location" } th scope="col" { "Schedule" }
                    th scope="col" { "State" } th scope="col" { "Last backup" } th scope="col" { "Files" }
                    th scope="col" { "Last failure" }
                } }
                tbody { @for b in backups {
                    @let ready = b.pointer("/status/conditions").and_then(Value::as_array)
                        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
                    @let state = match ready {
                        None => "Pending",
                        Some(c) if c["status"] == "True" => "Ready",
                        Some(_) => "Failed",
                    };
                    tr data-backup=(s(b, "/metadata/name")) {
                        td { (s(b, "/metadata/name")) }
                        td { code { (s(b, "/spec/location")) } }
                        td { @if s(b, "/spec/schedule").is_empty() { "once" } @else { code { (s(b, "/spec/schedule")) } } }
                        td { span class={ "badge " (if state == "Ready" { "active" } else if state == "Failed" { "unavailable" } else { "pending" }) } data-state=(state) { (state) } }
                        td { (view::since(s(b, "/status/lastBackupTime"))) }
                        td { (b.pointer("/status/files").and_then(Value::as_array).map_or(0, Vec::len)) }
                        td.failure { @if state == "Failed" { (ready.map(|c| s(c, "/message")).unwrap_or_default()) } }
                    }
                } }
            } }
        }
        h3 { "Back up now" }
        form #backup-now method="post" action="/dashboard/settings/backups" {
            (view::csrf(session))
            div.field {
                label for="f-location" { "Location (empty: the server's data directory)" }
                input #f-location name="location" type="text" placeholder="s3://bucket/prefix or file:///dir" autocomplete="off";
            }
            div.check {
                input #f-encrypt name="encrypt" type="checkbox" value="true";
                label for="f-encrypt" { "Encrypt with the server's backup key" }
            }
            button type="submit" { "Back up now" }
        }
    }
}

/// The notifiers, each with "Send test".
fn notifiers_section(session: &Session, notifiers: &[Value]) -> Markup {
    let kind = |n: &Value| {
        ["webhook", "slack", "email", "pagerduty", "alertmanager"]
            .into_iter()
            .find(|k| n["spec"].get(*k).is_some())
            .unwrap_or("–")
    };
    html! {
        h2 { "Notifiers" }
        @if notifiers.is_empty() {
            p { "No notifiers: alert rules send nowhere yet (docs/alerts.md)." }
        } @else {
            div.scroll { table #notifiers {
                thead { tr {
                    th scope="col" { "Notifier" } th scope="col" { "Type" } th scope="col" { "Description" }
                    th scope="col" { span.visually-hidden { "Actions" } }
                } }
                tbody { @for n in notifiers {
                    @let name = s(n, "/metadata/name");
                    tr data-notifier=(name) {
                        td { (name) }
                        td { (kind(n)) }
                        td { (s(n, "/spec/description")) }
                        td {
                            form method="post" action={ "/dashboard/settings/notifiers/" (seg(name)) "/test" } {
                                (view::csrf(session))
                                button.secondary type="submit" aria-label={ "Send a test message through " (name) } { "Send test" }
                            }
                        }
                    }
                } }
            } }
        }
    }
}

/// `POST /dashboard/settings/notifiers/{name}/test`: send a test message
/// and show how it went.
pub(crate) async fn test_notifier(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(name): Path<String>,
) -> Result<Markup, UiError> {
    let answer = ui
        .api
        .call(
            Method::POST,
            &format!("{MGMT}/notifiers/{}/test", seg(&name)),
            &session.token,
            Some(&json!({})),
        )
        .await?;
    let delivered = answer["result"] == "Delivered";
    Ok(view::page(
        "Notifier test",
        &session,
        Section::Settings,
        html! {
            h1 { "Test of notifier " (name) }
            @if delivered {
                p.notice #test-result role="status" { "The test message was delivered." }
            } @else {
                p.error #test-result role="alert" { "The test message was not delivered: " (s(&answer, "/error")) }
            }
            p { a href="/dashboard/settings" { "Back to the settings" } }
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct NewBackup {
    #[serde(default)]
    location: String,
    #[serde(default)]
    encrypt: Option<String>,
}

/// `POST /dashboard/settings/backups`: a one-shot Backup, now.
pub(crate) async fn backup_now(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Form(form): Form<NewBackup>,
) -> Result<Response, UiError> {
    let mut spec = json!({"encrypt": form.encrypt.as_deref() == Some("true")});
    if !form.location.trim().is_empty() {
        spec["location"] = json!(form.location.trim());
    }
    let stamp: String = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis().to_string())
        .unwrap_or_default();
    ui.api
        .call(
            Method::POST,
            &format!("{MGMT}/backups"),
            &session.token,
            Some(
                &json!({"apiVersion": "management.drover.io/v1", "kind": "Backup",
                "metadata": {"name": format!("manual-{stamp}")}, "spec": spec}),
            ),
        )
        .await?;
    Ok(Redirect::to("/dashboard/settings?notice=backup-started").into_response())
}
