//! Authentication providers on the settings page (for those who may
//! change them: admins): each provider with its state and an enable or
//! disable button, and forms for a directory (LDAP or Active Directory)
//! and an OIDC provider. Secrets are write-only: their fields are always
//! empty, and left empty they keep what the server has (unless the form
//! moves the provider, when the server wants the secret again). Also the directory
//! search the member pickers call as people type.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{seg, MGMT};
use crate::error::UiError;
use crate::session::Session;
use crate::view::{self, s};
use crate::Ui;

/// Whether the caller may configure providers.
pub(crate) async fn may_configure(ui: &Ui, session: &Session) -> bool {
    ui.api
        .call(
            Method::POST,
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &session.token,
            Some(&json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"group": "management.drover.io", "resource": "authconfigs", "verb": "create"}}})),
        )
        .await
        .is_ok_and(|r| r.pointer("/status/allowed") == Some(&Value::Bool(true)))
}

/// The providers section of the settings page.
pub(crate) fn section(session: &Session, configs: &[Value], server_url: &str) -> Markup {
    let find = |name: &str| configs.iter().find(|c| s(c, "/metadata/name") == name);
    let directory = find("ldap").or_else(|| find("activedirectory"));
    let ldap = |field: &str| {
        directory
            .and_then(|d| d.pointer(&format!("/spec/ldap/{field}")))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let oidc = |field: &str| {
        find("oidc")
            .map(|o| s(o, &format!("/spec/oidc/{field}")).to_owned())
            .unwrap_or_default()
    };
    let tls_mode = if ldap("tls") == "true" {
        "ldaps"
    } else if ldap("starttls") == "true" {
        "starttls"
    } else {
        "none"
    };
    html! {
        h2 { "Sign-in providers" }
        p { "Local users always sign in. People can also sign in with the accounts of a directory or an OIDC provider; their groups can be members of clusters and projects." }
        @if configs.is_empty() {
            p { "No providers yet." }
        } @else {
            div.scroll { table #providers {
                thead { tr { th scope="col" { "Provider" } th scope="col" { "Where" } th scope="col" { "State" } th scope="col" { span.sr { "Actions" } } } }
                tbody { @for c in configs {
                    @let name = s(c, "/metadata/name");
                    @let enabled = c.pointer("/spec/enabled") == Some(&Value::Bool(true));
                    @let place = match name {
                        "oidc" => s(c, "/spec/oidc/issuer").to_owned(),
                        _ => c.pointer("/spec/ldap/servers").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
                    };
                    tr data-provider=(name) {
                        td { (name) }
                        td { code { (place) } }
                        td { span class={ "badge " (if enabled { "active" } else { "pending" }) } data-state=(if enabled { "Enabled" } else { "Disabled" }) { (if enabled { "Enabled" } else { "Disabled" }) } }
                        td {
                            form.inline method="post" action={ "/dashboard/settings/providers/" (seg(name)) "/enabled" } {
                                (view::csrf(session))
                                input type="hidden" name="enabled" value=(if enabled { "false" } else { "true" });
                                button.secondary type="submit" { (if enabled { "Disable" } else { "Enable" }) }
                            }
                        }
                    }
                } }
            } }
        }
        h3 { "Directory (LDAP or Active Directory)" }
        form #ldap-form method="post" action="/dashboard/settings/providers/directory" {
            (view::csrf(session))
            div.field {
                label for="l-kind" { "Kind" }
                select #l-kind name="kind" {
                    option value="ldap" selected[directory.is_none_or(|d| s(d, "/metadata/name") == "ldap")] { "OpenLDAP and other LDAP directories" }
                    option value="activedirectory" selected[directory.is_some_and(|d| s(d, "/metadata/name") == "activedirectory")] { "Active Directory" }
                }
            }
            div.field { label for="l-servers" { "Servers (host names, comma-separated)" } input #l-servers name="servers" type="text" required value=(ldap("servers")) placeholder="ldap1.example.com, ldap2.example.com"; }
            div.field { label for="l-port" { "Port (empty: 389, or 636 with LDAPS)" } input #l-port name="port" type="number" min="1" max="65535" value=(ldap("port")); }
            div.field {
                label for="l-tls" { "Encryption" }
                select #l-tls name="tls" {
                    option value="ldaps" selected[tls_mode == "ldaps"] { "LDAPS" }
                    option value="starttls" selected[tls_mode == "starttls"] { "StartTLS" }
                    option value="none" selected[tls_mode == "none"] { "None (not for production)" }
                }
            }
            div.field { label for="l-ca" { "CA certificate (PEM; empty: the system's)" } textarea #l-ca name="certificate" rows="3" { (ldap("certificate")) } }
            div.field { label for="l-sa" { "Service account DN" } input #l-sa name="service_account" type="text" required value=(ldap("serviceAccountDistinguishedName")); }
            div.field { label for="l-sapw" { "Service account password (empty: keep the current one)" } input #l-sapw name="service_account_password" type="password" autocomplete="new-password"; }
            div.field { label for="l-users" { "User search base" } input #l-users name="user_search_base" type="text" required value=(ldap("userSearchBase")) placeholder="ou=people,dc=example,dc=com"; }
            div.field { label for="l-login" { "Login attribute (empty: uid, or sAMAccountName)" } input #l-login name="user_login_attribute" type="text" value=(ldap("userLoginAttribute")); }
            div.field { label for="l-filter" { "User filter (optional)" } input #l-filter name="user_search_filter" type="text" value=(ldap("userSearchFilter")) placeholder="(!(pwdAccountLockedTime=*))"; }
            div.field { label for="l-groups" { "Group search base (empty: the user search base)" } input #l-groups name="group_search_base" type="text" value=(ldap("groupSearchBase")); }
            div.check { input #l-nested name="nested" type="checkbox" value="true" checked[ldap("nestedGroupMembershipEnabled") == "true"]; label for="l-nested" { "Follow nested groups" } }
            div.check { input #l-enabled name="enabled" type="checkbox" value="true" checked[directory.is_none_or(|d| d.pointer("/spec/enabled") == Some(&Value::Bool(true)))]; label for="l-enabled" { "Enabled" } }
            button type="submit" { "Save directory" }
        }
        h3 { "OIDC provider" }
        p { "Register this redirect URI with the provider: " code #oidc-redirect { (server_url) "/dashboard/login/oidc/callback" } ". The CLI signs in through a loopback address (http://127.0.0.1:PORT/callback), which the provider must allow for the same client." }
        form #oidc-form method="post" action="/dashboard/settings/providers/oidc" {
            (view::csrf(session))
            div.field { label for="o-issuer" { "Issuer URL" } input #o-issuer name="issuer" type="url" required value=(oidc("issuer")) placeholder="https://login.example.com/realms/main"; }
            div.field { label for="o-client" { "Client ID" } input #o-client name="client_id" type="text" required value=(oidc("clientId")); }
            div.field { label for="o-secret" { "Client secret (empty: keep the current one)" } input #o-secret name="client_secret" type="password" autocomplete="new-password"; }
            div.field { label for="o-scopes" { "Scopes besides openid (empty: profile email groups)" } input #o-scopes name="scopes" type="text" value=(find("oidc").and_then(|o| o.pointer("/spec/oidc/scopes")).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")).unwrap_or_default()); }
            div.field { label for="o-user" { "Username claim (empty: preferred_username)" } input #o-user name="username_claim" type="text" value=(oidc("usernameClaim")); }
            div.field { label for="o-groups" { "Groups claim (empty: groups)" } input #o-groups name="groups_claim" type="text" value=(oidc("groupsClaim")); }
            div.check { input #o-enabled name="enabled" type="checkbox" value="true" checked[find("oidc").is_none_or(|d| d.pointer("/spec/enabled") == Some(&Value::Bool(true)))]; label for="o-enabled" { "Enabled" } }
            button type="submit" { "Save OIDC provider" }
        }
    }
}

/// The form's fields over the provider's settings: a field the form left
/// empty (null) is cleared, except a secret, which is kept; fields the form
/// does not show keep their values.
fn merge(current: &mut Value, form: &Value) {
    let (Some(current), Some(form)) = (current.as_object_mut(), form.as_object()) else {
        return;
    };
    for (k, v) in form {
        match v {
            Value::Null if k == "serviceAccountPassword" || k == "clientSecret" => {}
            Value::Null => {
                current.remove(k);
            }
            Value::Object(_) if current.get(k).is_some_and(Value::is_object) => {
                merge(current.get_mut(k).expect("checked"), v);
            }
            _ => {
                current.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Create `name` with the form's `spec`, or set the form's fields on the
/// one there.
async fn save(ui: &Ui, session: &Session, name: &str, spec: Value) -> Result<(), UiError> {
    let path = format!("{MGMT}/authconfigs/{}", seg(name));
    match ui.api.get(&path, &session.token).await {
        Ok(mut current) => {
            merge(&mut current["spec"], &spec);
            ui.api
                .call(Method::PUT, &path, &session.token, Some(&current))
                .await?;
        }
        Err(UiError::Api { status: 404, .. }) => {
            ui.api
                .call(
                    Method::POST,
                    &format!("{MGMT}/authconfigs"),
                    &session.token,
                    Some(
                        &json!({"apiVersion": "management.drover.io/v1", "kind": "AuthConfig",
                        "metadata": {"name": name}, "spec": pruned(spec)}),
                    ),
                )
                .await?;
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

fn optional(v: &str) -> Value {
    match v.trim() {
        "" => Value::Null,
        t => json!(t),
    }
}

/// Drop the nulls (fields left empty) from a spec.
fn pruned(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, x| !x.is_null());
        for x in m.values_mut() {
            *x = pruned(x.take());
        }
    }
    v
}

#[derive(Deserialize)]
pub(crate) struct DirectoryForm {
    kind: String,
    servers: String,
    #[serde(default)]
    port: String,
    tls: String,
    #[serde(default)]
    certificate: String,
    service_account: String,
    #[serde(default)]
    service_account_password: String,
    user_search_base: String,
    #[serde(default)]
    user_login_attribute: String,
    #[serde(default)]
    user_search_filter: String,
    #[serde(default)]
    group_search_base: String,
    #[serde(default)]
    nested: Option<String>,
    #[serde(default)]
    enabled: Option<String>,
}

/// `POST /dashboard/settings/providers/directory`.
pub(crate) async fn save_directory(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Form(f): Form<DirectoryForm>,
) -> Result<Response, UiError> {
    let name = if f.kind == "activedirectory" {
        "activedirectory"
    } else {
        "ldap"
    };
    let port = match f.port.trim() {
        "" => Value::Null,
        p => json!(p
            .parse::<u16>()
            .map_err(|_| UiError::BadRequest(format!("the port {p:?} is not a port number")))?),
    };
    let spec = json!({
        "enabled": f.enabled.is_some(),
        "ldap": {
            "servers": f.servers.split(',').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>(),
            "port": port,
            "tls": f.tls == "ldaps",
            "starttls": f.tls == "starttls",
            "certificate": optional(&f.certificate),
            "serviceAccountDistinguishedName": f.service_account.trim(),
            "serviceAccountPassword": optional(&f.service_account_password),
            "userSearchBase": f.user_search_base.trim(),
            "userLoginAttribute": optional(&f.user_login_attribute),
            "userSearchFilter": optional(&f.user_search_filter),
            "groupSearchBase": optional(&f.group_search_base),
            "nestedGroupMembershipEnabled": f.nested.is_some(),
        }
    });
    save(&ui, &session, name, spec).await?;
    Ok(Redirect::to("/dashboard/settings?notice=provider-saved").into_response())
}

#[derive(Deserialize)]
pub(crate) struct OidcForm {
    issuer: String,
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    username_claim: String,
    #[serde(default)]
    groups_claim: String,
    #[serde(default)]
    enabled: Option<String>,
}

/// `POST /dashboard/settings/providers/oidc`.
pub(crate) async fn save_oidc(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Form(f): Form<OidcForm>,
) -> Result<Response, UiError> {
    let spec = json!({
        "enabled": f.enabled.is_some(),
        "oidc": {
            "issuer": f.issuer.trim(),
            "clientId": f.client_id.trim(),
            "clientSecret": optional(&f.client_secret),
            "scopes": f.scopes.split_whitespace().collect::<Vec<_>>(),
            "usernameClaim": optional(&f.username_claim),
            "groupsClaim": optional(&f.groups_claim),
        }
    });
    save(&ui, &session, "oidc", spec).await?;
    Ok(Redirect::to("/dashboard/settings?notice=provider-saved").into_response())
}

#[derive(Deserialize)]
pub(crate) struct Enabled {
    enabled: String,
}

/// `POST /dashboard/settings/providers/{name}/enabled`.
pub(crate) async fn set_enabled(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(name): Path<String>,
    Form(f): Form<Enabled>,
) -> Result<Response, UiError> {
    ui.api
        .call(
            Method::PATCH,
            &format!("{MGMT}/authconfigs/{}", seg(&name)),
            &session.token,
            Some(&json!({"spec": {"enabled": f.enabled == "true"}})),
        )
        .await?;
    Ok(Redirect::to("/dashboard/settings?notice=provider-saved").into_response())
}

#[derive(Deserialize)]
pub(crate) struct Search {
    #[serde(default)]
    q: String,
}

/// `GET /dashboard/principals?q=…`: directory users and groups, as JSON,
/// for the member pickers (an empty list when there is nothing to ask).
pub(crate) async fn search(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Query(q): Query<Search>,
) -> Response {
    let query = serde_urlencoded::to_string([("q", q.q.trim())]).unwrap_or_default();
    match ui
        .api
        .get(&format!("/v1/principals?{query}"), &session.token)
        .await
    {
        Ok(found) => Json(found).into_response(),
        Err(_) => Json(json!({"items": []})).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_sets_its_fields_and_keeps_the_rest() {
        let mut current = json!({"enabled": true, "ldap": {"servers": ["a"], "userObjectClass": "person",
                                  "userSearchFilter": "(x=y)", "serviceAccountDistinguishedName": "cn=sa"}});
        merge(
            &mut current,
            &json!({"enabled": false, "ldap": {"servers": ["b"], "userSearchFilter": null,
                                     "serviceAccountPassword": null}}),
        );
        assert_eq!(
            current,
            json!({"enabled": false, "ldap": {"servers": ["b"], "userObjectClass": "person",
                                   "serviceAccountDistinguishedName": "cn=sa"}})
        );
    }
}
