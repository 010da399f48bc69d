//! A project's page: its namespaces (create, move to another project), its
//! members, and its quota: use as bars (the project's status, which Drover
//! sums from its namespaces' quotas), in total and per namespace, and a
//! form for the project limit, the namespace default and the container
//! defaults.

use std::collections::BTreeMap;
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
use crate::pages::clusters::{notice_text, project_name, project_namespaces, NoticeQuery};
use crate::pages::members;
use crate::session::Session;
use crate::view::{self, s, Section};
use crate::Ui;

/// `GET /dashboard/clusters/{id}/projects/{pid}`.
pub(crate) async fn detail(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path((id, pid)): Path<(String, String)>,
    Query(q): Query<NoticeQuery>,
) -> Result<Markup, UiError> {
    render(&ui, &session, &id, &pid, q.notice.as_deref(), None).await
}

/// A project's page, with `refused` beside the member form when adding a
/// member was refused.
pub(crate) async fn render(
    ui: &Ui,
    session: &Session,
    id: &str,
    pid: &str,
    notice: Option<&str>,
    refused: Option<&members::Refused>,
) -> Result<Markup, UiError> {
    let (id, pid) = (id.to_owned(), pid.to_owned());
    let token = &session.token;
    let project = ui
        .api
        .get(
            &format!("{MGMT}/namespaces/{}/projects/{}", seg(&id), seg(&pid)),
            token,
        )
        .await?;
    let others: Vec<Value> = ui
        .api
        .items(&format!("{MGMT}/namespaces/{}/projects", seg(&id)), token)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|p| s(p, "/metadata/name") != pid)
        .collect();
    let namespaces = ui
        .api
        .items(
            &format!("/k8s/clusters/{}/api/v1/namespaces", seg(&id)),
            token,
        )
        .await;
    let mine: Vec<String> = namespaces
        .as_ref()
        .map(|all| {
            project_namespaces(all, &id, &pid)
                .into_iter()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let usage = &project["status"]["resourceQuota"]["used"];
    let per_namespace = &project["status"]["namespaces"];
    let bindings = ui
        .api
        .items(
            &format!(
                "{MGMT}/namespaces/{}/projectroletemplatebindings",
                seg(&pid)
            ),
            token,
        )
        .await
        .unwrap_or_default();
    let firing = super::alerts::firing(ui, token, |ns| ns == pid).await;
    let base = format!("/dashboard/clusters/{}/projects/{}", seg(&id), seg(&pid));
    let member_form = members::form(
        ui,
        session,
        "project",
        &format!("{base}/members"),
        &bindings,
        refused,
    )
    .await;
    let project_rules = crate::access::Rules::management(&ui.api, token, &pid).await;
    let may_members = project_rules.allows(
        "create",
        "management.drover.io",
        "projectroletemplatebindings",
    );
    let may_remove = project_rules.allows(
        "delete",
        "management.drover.io",
        "projectroletemplatebindings",
    );
    let may_quota = session
        .rules
        .allows("update", "management.drover.io", "projects");
    let cluster_name = crate::explorer::cluster_name(ui, token, &id).await;
    let role_labels = members::role_labels(ui, token).await;
    // Owners and members of the project make namespaces in it (Drover
    // decides, not the cluster's RBAC); cluster owners move them.
    let may_namespaces = may_quota
        || bindings.iter().any(|b| {
            s(b, "/spec/userName") == session.user
                && matches!(
                    s(b, "/spec/roleTemplateName"),
                    "project-owner" | "project-member"
                )
        });
    let limits: BTreeMap<String, String> = project
        .pointer("/spec/resourceQuota/limit")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    Ok(view::page(
        project_name(&project),
        session,
        Section::Clusters,
        html! {
            (crate::explorer::crumbs(&id, &cluster_name, &[(project_name(&project).to_owned(), None)]))
            h1 { (project_name(&project)) }
            (view::notice(notice_text(notice)))
            (super::alerts::section(&firing))
            section aria-labelledby="quota-h" {
                h2 #quota-h { "Quota" }
                @if limits.is_empty() {
                    p { "This project has no quota." }
                } @else {
                    dl.quota #project-quota {
                        @for (key, limit) in &limits {
                            dt { (key) }
                            dd { (bar(key, usage[key].as_str().unwrap_or("0"), limit, &format!("{key} used"))) }
                        }
                    }
                    @if let Some(shares) = per_namespace.as_object().filter(|m| !m.is_empty()) {
                        div.scroll { table #namespace-quota {
                            thead { tr { th scope="col" { "Namespace" } th scope="col" { "Resource" } th scope="col" { "Used of its share" } } }
                            tbody { @for (ns, q) in shares {
                                @for (key, limit) in q["limit"].as_object().into_iter().flatten() {
                                    tr {
                                        td { (ns) }
                                        td { (key) }
                                        td { (bar(key, q["used"][key].as_str().unwrap_or("0"), limit.as_str().unwrap_or_default(), &format!("{key} used in {ns}"))) }
                                    }
                                }
                            } }
                        } }
                    }
                }
                @if may_quota { (quota_form(session, &format!("{base}/quota"), &project)) }
            }
            section aria-labelledby="ns-h" {
                h2 #ns-h { "Namespaces" }
                @if let Err(e) = &namespaces {
                    p.error { "The namespaces cannot be read now: " (e) }
                }
                div.scroll { table #namespaces {
                    thead { tr { th scope="col" { "Namespace" } @if may_quota { th scope="col" { "Move to project" } } } }
                    tbody { @for ns in &mine {
                        tr {
                            td { a href={ "/dashboard/clusters/" (seg(&id)) "/explore?ns=" (seg(ns)) } { (ns) } }
                            @if may_quota { td {
                                form.inline method="post" action={ (base) "/namespaces/" (seg(ns)) "/move" } {
                                    (view::csrf(session))
                                    label.sr for={ "move-" (ns) } { "Project for " (ns) }
                                    select id={ "move-" (ns) } name="project" {
                                        @for p in &others {
                                            option value=(s(p, "/metadata/name")) { (project_name(p)) }
                                        }
                                    }
                                    button.secondary type="submit" { "Move" }
                                }
                            } }
                        }
                    } }
                } }
                @if may_namespaces {
                    form.inline method="post" action={ (base) "/namespaces" } {
                        (view::csrf(session))
                        (view::text_field("New namespace", "name", true))
                        button type="submit" { "Create namespace" }
                    }
                }
            }
            section aria-labelledby="members-h" {
                h2 #members-h { "Members" }
                (members::table(session, &bindings, &format!("{base}/members"), may_remove, &role_labels))
                @if may_members { (member_form) }
            }
        },
    ))
}

/// A bar of `used` against `limit` (quantity strings), with the figures.
fn bar(key: &str, used: &str, limit: &str, label: &str) -> Markup {
    let max = drover_core::quantity::parse(limit).unwrap_or(0);
    let value = drover_core::quantity::parse(used).unwrap_or(0);
    let memory = key.contains("memory") || key.contains("storage");
    html! {
        meter min="0" max=(max as f64 / 1000.0) value=(value as f64 / 1000.0)
            high=(max as f64 * 0.9 / 1000.0) aria-label=(label) {}
        " " span.used { (drover_core::quantity::format(value, memory)) } " of " (limit)
    }
}

/// The quota form: the project limit and namespace default of each key,
/// and the container defaults.
fn quota_form(session: &Session, action: &str, project: &Value) -> Markup {
    let spec = &project["spec"];
    let value = |pointer: &str| {
        spec.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    html! {
        details #quota-edit {
            summary { "Edit quota" }
            form method="post" action=(action) {
                (view::csrf(session))
                table {
                    thead { tr { th scope="col" { "Resource" } th scope="col" { "Project limit" } th scope="col" { "Each namespace" } } }
                    tbody { @for key in drover_core::api::QUOTA_KEYS {
                        tr {
                            th scope="row" { (key) }
                            td { input type="text" name={ "limit." (key) } aria-label={ (key) " project limit" }
                                value=(value(&format!("/resourceQuota/limit/{key}"))) size="8"; }
                            td { input type="text" name={ "default." (key) } aria-label={ (key) " namespace default" }
                                value=(value(&format!("/namespaceDefaultResourceQuota/limit/{key}"))) size="8"; }
                        }
                    } }
                }
                fieldset {
                    legend { "Container defaults" }
                    @for (field, label) in CONTAINER_DEFAULTS {
                        label { (label) " "
                            input type="text" name={ "container." (field) }
                                value=(value(&format!("/containerDefaultResourceLimit/{field}"))) size="8";
                        }
                        " "
                    }
                }
                p.hint { "Quantities such as 10, 500m or 2Gi. A resource the project limits needs a value for each namespace too; leave both empty for no limit." }
                button type="submit" { "Save quota" }
            }
        }
    }
}

/// The container defaults a project sets, with their labels.
const CONTAINER_DEFAULTS: [(&str, &str); 4] = [
    ("requestsCpu", "CPU request"),
    ("requestsMemory", "Memory request"),
    ("limitsCpu", "CPU limit"),
    ("limitsMemory", "Memory limit"),
];

/// The merge patch a submitted quota form asks for.
fn quota_patch(fields: &[(String, String)]) -> Value {
    let mut limit = serde_json::Map::new();
    let mut default = serde_json::Map::new();
    let mut container = serde_json::Map::new();
    for (name, value) in fields {
        let value = value.trim();
        let value = if value.is_empty() {
            Value::Null
        } else {
            json!(value)
        };
        if let Some(key) = name.strip_prefix("limit.") {
            limit.insert(key.to_owned(), value);
        } else if let Some(key) = name.strip_prefix("default.") {
            default.insert(key.to_owned(), value);
        } else if let Some(key) = name.strip_prefix("container.") {
            if CONTAINER_DEFAULTS.iter().any(|(f, _)| *f == key) {
                container.insert(key.to_owned(), value);
            }
        }
    }
    let section = |m: serde_json::Map<String, Value>| {
        if m.values().all(Value::is_null) {
            Value::Null
        } else {
            json!({"limit": m})
        }
    };
    let container = if container.values().all(Value::is_null) {
        Value::Null
    } else {
        Value::Object(container)
    };
    json!({"spec": {
        "resourceQuota": section(limit),
        "namespaceDefaultResourceQuota": section(default),
        "containerDefaultResourceLimit": container,
    }})
}

/// `POST /dashboard/clusters/{id}/projects/{pid}/quota`: the project's
/// limits, as the management API decides (cluster owners).
pub(crate) async fn set_quota(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path((id, pid)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    ui.api
        .call_as(
            Method::PATCH,
            &format!("{MGMT}/namespaces/{}/projects/{}", seg(&id), seg(&pid)),
            &session.token,
            Some(&quota_patch(&fields)),
            "application/merge-patch+json",
        )
        .await?;
    Ok(Redirect::to(&format!(
        "/dashboard/clusters/{}/projects/{}?notice=quota-saved",
        seg(&id),
        seg(&pid)
    ))
    .into_response())
}

#[derive(Deserialize)]
pub(crate) struct NewNamespace {
    name: String,
}

/// `POST /dashboard/clusters/{id}/projects/{pid}/namespaces`: created in the
/// cluster through the proxy, which checks membership and quota.
pub(crate) async fn create_namespace(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path((id, pid)): Path<(String, String)>,
    Form(form): Form<NewNamespace>,
) -> Result<Response, UiError> {
    let body = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": form.name.trim(), "annotations": {"drover.io/project-id": format!("{id}:{pid}")}}});
    ui.api
        .call(
            Method::POST,
            &format!("/k8s/clusters/{}/api/v1/namespaces", seg(&id)),
            &session.token,
            Some(&body),
        )
        .await?;
    Ok(Redirect::to(&format!(
        "/dashboard/clusters/{}/projects/{}?notice=namespace-created",
        seg(&id),
        seg(&pid)
    ))
    .into_response())
}

#[derive(Deserialize)]
pub(crate) struct Move {
    project: String,
}

/// `POST /dashboard/clusters/{id}/projects/{pid}/namespaces/{ns}/move`.
pub(crate) async fn move_namespace(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path((id, pid, ns)): Path<(String, String, String)>,
    Form(form): Form<Move>,
) -> Result<Response, UiError> {
    let patch = json!({"metadata": {"annotations": {"drover.io/project-id": format!("{id}:{}", form.project)}}});
    ui.api
        .call_as(
            Method::PATCH,
            &format!("/k8s/clusters/{}/api/v1/namespaces/{}", seg(&id), seg(&ns)),
            &session.token,
            Some(&patch),
            "application/merge-patch+json",
        )
        .await?;
    Ok(Redirect::to(&format!(
        "/dashboard/clusters/{}/projects/{}?notice=namespace-moved",
        seg(&id),
        seg(&pid)
    ))
    .into_response())
}
