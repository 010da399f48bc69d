//! Members of a cluster or a project: role template bindings, listed,
//! added (a local user, or a directory user or group found by name as one
//! types, and a role template of the right context) and removed. A member
//! is added once per role: a subject that holds the role already (in any
//! binding) is refused, and the form says so with the choice kept; the new
//! binding's name is made from the subject and role, so two adds at once
//! cannot both succeed.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{seg, MGMT};
use crate::error::UiError;
use crate::session::Session;
use crate::view::{self, s};
use crate::Ui;

/// A refused "Add member": what was chosen, and why not.
#[derive(Debug)]
pub(crate) struct Refused {
    pub user: String,
    pub principal: String,
    pub role: String,
    pub message: String,
}

/// Each role template's label (its display name, else its name), so a
/// role reads the same in the table and the picker.
pub(crate) async fn role_labels(ui: &Ui, token: &str) -> BTreeMap<String, String> {
    ui.api
        .items(&format!("{MGMT}/roletemplates"), token)
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let name = s(r, "/metadata/name");
            let label = match s(r, "/spec/displayName") {
                "" => role_label(name),
                d => d,
            };
            (name.to_owned(), label.to_owned())
        })
        .collect()
}

/// The bindings as a table, each with a remove button posting to
/// `{action}/{binding}/delete` when `may_remove`; roles by `labels`.
pub(crate) fn table(
    session: &Session,
    bindings: &[Value],
    action: &str,
    may_remove: bool,
    labels: &BTreeMap<String, String>,
) -> Markup {
    html! {
        div.scroll { table.members {
            thead { tr { th scope="col" { "Member" } th scope="col" { "Role" } th scope="col" { span.sr { "Actions" } } } }
            tbody { @for b in bindings {
                @let name = s(b, "/metadata/name");
                @let who = match (s(b, "/spec/userName"), s(b, "/spec/groupName")) { ("", g) => format!("group {g}"), (u, _) => u.to_owned() };
                tr {
                    td { (who) }
                    @let role = s(b, "/spec/roleTemplateName");
                    td { (labels.get(role).map_or(role_label(role), String::as_str)) }
                    td { @if may_remove {
                        form.inline method="post" action={ (action) "/" (seg(name)) "/delete" } {
                            (view::csrf(session))
                            button.secondary type="submit" aria-label={ "Remove " (who) " as " (s(b, "/spec/roleTemplateName")) } { "Remove" }
                        }
                    } }
                }
            } }
        } }
    }
}

/// One label per built-in role, wherever a role is named.
pub(crate) fn role_label(name: &str) -> &str {
    match name {
        "cluster-owner" => "Cluster Owner",
        "cluster-member" => "Cluster Member",
        "project-owner" => "Project Owner",
        "project-member" => "Project Member",
        "read-only" => "Read-only",
        other => other,
    }
}

/// The add-member form: the users the caller may list who are not
/// members yet (a name field otherwise), a directory search when a
/// directory is enabled, and the role templates of `context` (`cluster`,
/// `project`); a refused choice comes back selected, with the reason.
pub(crate) async fn form(
    ui: &Ui,
    session: &Session,
    context: &str,
    action: &str,
    existing: &[Value],
    refused: Option<&Refused>,
) -> Markup {
    let members: Vec<&str> = existing.iter().map(|b| s(b, "/spec/userName")).collect();
    let chosen = refused.map(|r| r.user.as_str()).unwrap_or_default();
    let users = ui
        .api
        .items(&format!("{MGMT}/users"), &session.token)
        .await
        .ok()
        .map(|users| {
            users
                .into_iter()
                .filter(|u| {
                    let name = s(u, "/metadata/name");
                    name == chosen || !members.contains(&name)
                })
                .collect::<Vec<_>>()
        });
    let directory = super::auth::providers(ui)
        .await
        .iter()
        .any(|n| n == "ldap" || n == "activedirectory");
    let roles: Vec<Value> = ui
        .api
        .items(&format!("{MGMT}/roletemplates"), &session.token)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| s(r, "/spec/context") == context)
        .collect();
    html! {
        form.inline.add-member method="post" action=(action) {
            (view::csrf(session))
            div.field {
                label for="member-user" { "User" }
                @match &users {
                    Some(users) => select #member-user name="user" required[!directory] {
                        @if directory { option value="" { "(from the directory)" } }
                        @for u in users {
                            @let name = s(u, "/metadata/name");
                            option value=(name) selected[name == chosen] { (s(u, "/spec/username")) }
                        }
                    },
                    None => input #member-user name="user" type="text" required[!directory] value=(chosen);
                }
            }
            @if directory {
                div.field {
                    label for="member-principal" { "or a directory user or group" }
                    input #member-principal name="principal" type="search" list="member-principals"
                        value=(refused.map(|r| r.principal.as_str()).unwrap_or_default())
                        autocomplete="off" placeholder="Type a name" data-principal-search="member-principals";
                    datalist #member-principals {}
                }
            }
            div.field {
                label for="member-role" { "Role" }
                select #member-role name="role" required {
                    @for r in &roles {
                        @let name = s(r, "/metadata/name");
                        option value=(name) selected[refused.is_some_and(|f| f.role == name)] { (role_label(match s(r, "/spec/displayName") { "" => name, d => d })) }
                    }
                }
            }
            button type="submit" aria-describedby=[refused.is_some().then_some("member-error")] { "Add member" }
        }
        @if let Some(r) = refused {
            p.error #member-error role="alert" { (r.message) }
        }
    }
}

/// Whether a binding in `collection` already gives `who` (in `field`)
/// the role `role`, whatever its name.
async fn exists(
    ui: &Ui,
    token: &str,
    collection: &str,
    field: &str,
    who: &str,
    role: &str,
) -> bool {
    ui.api
        .items(collection, token)
        .await
        .unwrap_or_default()
        .iter()
        .any(|b| s(b, &format!("/spec/{field}")) == who && s(b, "/spec/roleTemplateName") == role)
}

#[derive(Deserialize)]
pub(crate) struct NewMember {
    #[serde(default)]
    user: String,
    #[serde(default)]
    principal: String,
    role: String,
}

impl NewMember {
    /// The binding's name: the same for the same subject and role, so a
    /// second add is refused as existing.
    fn binding_name(&self, field: &str, who: &str) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{field}\0{who}\0{}", self.role).as_bytes());
        format!("m-{}", &hex::encode(digest)[..16])
    }

    /// The refusal to show with the form.
    fn refused(&self, message: String) -> Refused {
        Refused {
            user: self.user.clone(),
            principal: self.principal.clone(),
            role: self.role.clone(),
            message,
        }
    }

    /// The words for a refusal of this add.
    fn why(&self, who: &str, error: UiError) -> Result<String, UiError> {
        match error {
            UiError::Api { status: 409, .. } => Ok(format!(
                "{who} is already a member with the role {}.",
                role_label(&self.role)
            )),
            UiError::Api { message, .. } | UiError::BadRequest(message) => Ok(message),
            other => Err(other),
        }
    }

    /// The binding's subject: a directory principal (a group's goes in
    /// `groupName`), else the local user.
    fn subject(&self) -> Result<(&'static str, &str), UiError> {
        match (self.principal.trim(), self.user.trim()) {
            ("", "") => Err(UiError::BadRequest(
                "choose a user, or a directory user or group".into(),
            )),
            ("", user) => Ok(("userName", user)),
            (p, _) if p.contains("_group://") => Ok(("groupName", p)),
            (p, _) => Ok(("userName", p)),
        }
    }
}

/// Bind the chosen subject to the chosen role in `collection` (a binding
/// of `kind`, whose spec is `spec` and the subject), unless it holds the
/// role there already; `None` when it was made, else the status and the
/// refusal to show with the form.
async fn add(
    ui: &Ui,
    session: &Session,
    form: &NewMember,
    kind: &str,
    collection: &str,
    mut spec: Value,
) -> Result<Option<(StatusCode, Refused)>, UiError> {
    let (field, who) = match form.subject() {
        Ok(s) => s,
        Err(e) => {
            return Ok(Some((
                StatusCode::BAD_REQUEST,
                form.refused(form.why("", e)?),
            )))
        }
    };
    spec[field] = json!(who);
    spec["roleTemplateName"] = json!(form.role);
    let body = json!({"apiVersion": "management.drover.io/v1", "kind": kind,
        "metadata": {"name": form.binding_name(field, who)}, "spec": spec});
    let added = if exists(ui, &session.token, collection, field, who, &form.role).await {
        Err(UiError::Api {
            status: 409,
            message: String::new(),
        })
    } else {
        ui.api
            .call(Method::POST, collection, &session.token, Some(&body))
            .await
    };
    match added {
        Ok(_) => Ok(None),
        Err(e) => Ok(Some((e.status(), form.refused(form.why(who, e)?)))),
    }
}

/// `POST /dashboard/clusters/{id}/members`.
pub(crate) async fn add_to_cluster(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<NewMember>,
) -> Result<Response, UiError> {
    let collection = format!("{MGMT}/namespaces/{}/clusterroletemplatebindings", seg(&id));
    let spec = json!({"clusterName": id});
    match add(
        &ui,
        &session,
        &form,
        "ClusterRoleTemplateBinding",
        &collection,
        spec,
    )
    .await?
    {
        None => Ok(Redirect::to(&format!(
            "/dashboard/clusters/{}?notice=member-added",
            seg(&id)
        ))
        .into_response()),
        Some((status, r)) => Ok((
            status,
            super::clusters::render_detail(&ui, &session, &id, None, Some(&r)).await?,
        )
            .into_response()),
    }
}

/// `POST /dashboard/clusters/{id}/members/{binding}/delete`.
pub(crate) async fn remove_from_cluster(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path((id, binding)): Path<(String, String)>,
) -> Result<Response, UiError> {
    ui.api
        .call(
            Method::DELETE,
            &format!(
                "{MGMT}/namespaces/{}/clusterroletemplatebindings/{}",
                seg(&id),
                seg(&binding)
            ),
            &session.token,
            None,
        )
        .await?;
    Ok(Redirect::to(&format!(
        "/dashboard/clusters/{}?notice=member-removed",
        seg(&id)
    ))
    .into_response())
}

/// `POST /dashboard/clusters/{id}/projects/{pid}/members`.
pub(crate) async fn add_to_project(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path((id, pid)): Path<(String, String)>,
    Form(form): Form<NewMember>,
) -> Result<Response, UiError> {
    let collection = format!(
        "{MGMT}/namespaces/{}/projectroletemplatebindings",
        seg(&pid)
    );
    let spec = json!({"projectName": format!("{id}:{pid}")});
    match add(
        &ui,
        &session,
        &form,
        "ProjectRoleTemplateBinding",
        &collection,
        spec,
    )
    .await?
    {
        None => Ok(Redirect::to(&format!(
            "/dashboard/clusters/{}/projects/{}?notice=member-added",
            seg(&id),
            seg(&pid)
        ))
        .into_response()),
        Some((status, r)) => Ok((
            status,
            super::projects::render(&ui, &session, &id, &pid, None, Some(&r)).await?,
        )
            .into_response()),
    }
}

/// `POST /dashboard/clusters/{id}/projects/{pid}/members/{binding}/delete`.
pub(crate) async fn remove_from_project(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path((id, pid, binding)): Path<(String, String, String)>,
) -> Result<Response, UiError> {
    ui.api
        .call(
            Method::DELETE,
            &format!(
                "{MGMT}/namespaces/{}/projectroletemplatebindings/{}",
                seg(&pid),
                seg(&binding)
            ),
            &session.token,
            None,
        )
        .await?;
    Ok(Redirect::to(&format!(
        "/dashboard/clusters/{}/projects/{}?notice=member-removed",
        seg(&id),
        seg(&pid)
    ))
    .into_response())
}
