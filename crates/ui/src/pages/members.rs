//! Members of a cluster or a project: role template bindings, listed,
//! added (a local user, or a directory user or group found by name as one
//! types, and a role template of the right context) and removed.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::Method;
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

/// The bindings as a table, each with a remove button posting to
/// `{action}/{binding}/delete`.
pub(crate) fn table(session: &Session, bindings: &[Value], action: &str) -> Markup {
    html! {
        div.scroll { table.members {
            thead { tr { th scope="col" { "Member" } th scope="col" { "Role" } th scope="col" { span.sr { "Actions" } } } }
            tbody { @for b in bindings {
                @let name = s(b, "/metadata/name");
                @let who = match (s(b, "/spec/userName"), s(b, "/spec/groupName")) { ("", g) => format!("group {g}"), (u, _) => u.to_owned() };
                tr {
                    td { (who) }
                    td { (s(b, "/spec/roleTemplateName")) }
                    td {
                        form.inline method="post" action={ (action) "/" (seg(name)) "/delete" } {
                            (view::csrf(session))
                            button.secondary type="submit" aria-label={ "Remove " (who) " as " (s(b, "/spec/roleTemplateName")) } { "Remove" }
                        }
                    }
                }
            } }
        } }
    }
}

/// The add-member form: the users the caller may list (a name field
/// otherwise), a directory search when a directory is enabled, and the
/// role templates of `context` (`cluster`, `project`).
pub(crate) async fn form(ui: &Ui, session: &Session, context: &str, action: &str) -> Markup {
    let users = ui
        .api
        .items(&format!("{MGMT}/users"), &session.token)
        .await
        .ok();
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
                            option value=(s(u, "/metadata/name")) { (s(u, "/spec/username")) }
                        }
                    },
                    None => input #member-user name="user" type="text" required[!directory];
                }
            }
            @if directory {
                div.field {
                    label for="member-principal" { "or a directory user or group" }
                    input #member-principal name="principal" type="search" list="member-principals"
                        autocomplete="off" placeholder="Type a name" data-principal-search="member-principals";
                    datalist #member-principals {}
                }
            }
            div.field {
                label for="member-role" { "Role" }
                select #member-role name="role" required {
                    @for r in &roles {
                        @let name = s(r, "/metadata/name");
                        option value=(name) { (match s(r, "/spec/displayName") { "" => name, d => d }) }
                    }
                }
            }
            button type="submit" { "Add member" }
        }
    }
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

/// `POST /dashboard/clusters/{id}/members`.
pub(crate) async fn add_to_cluster(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<NewMember>,
) -> Result<Response, UiError> {
    let (field, who) = form.subject()?;
    let mut body = json!({"apiVersion": "management.drover.io/v1", "kind": "ClusterRoleTemplateBinding",
        "metadata": {"generateName": "m-"},
        "spec": {"roleTemplateName": form.role, "clusterName": id}});
    body["spec"][field] = json!(who);
    ui.api
        .call(
            Method::POST,
            &format!("{MGMT}/namespaces/{}/clusterroletemplatebindings", seg(&id)),
            &session.token,
            Some(&body),
        )
        .await?;
    Ok(Redirect::to(&format!(
        "/dashboard/clusters/{}?notice=member-added",
        seg(&id)
    ))
    .into_response())
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
    let (field, who) = form.subject()?;
    let mut body = json!({"apiVersion": "management.drover.io/v1", "kind": "ProjectRoleTemplateBinding",
        "metadata": {"generateName": "m-"},
        "spec": {"roleTemplateName": form.role, "projectName": format!("{id}:{pid}")}});
    body["spec"][field] = json!(who);
    ui.api
        .call(
            Method::POST,
            &format!(
                "{MGMT}/namespaces/{}/projectroletemplatebindings",
                seg(&pid)
            ),
            &session.token,
            Some(&body),
        )
        .await?;
    Ok(Redirect::to(&format!(
        "/dashboard/clusters/{}/projects/{}?notice=member-added",
        seg(&id),
        seg(&pid)
    ))
    .into_response())
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
