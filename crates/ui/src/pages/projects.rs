//! A project's page: its namespaces (create, move to another project), its
//! members, and its quota usage as bars (the sum of its namespaces' quota
//! usage, read from the cluster, against the project's limit).

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

/// The quota each project namespace gets from Drover.
const PROJECT_QUOTA: &str = "drover-project-quota";

/// `GET /dashboard/clusters/{id}/projects/{pid}`.
pub(crate) async fn detail(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path((id, pid)): Path<(String, String)>,
    Query(q): Query<NoticeQuery>,
) -> Result<Markup, UiError> {
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
    let usage = quota_usage(&ui, token, &id, &mine).await;
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
    let base = format!("/dashboard/clusters/{}/projects/{}", seg(&id), seg(&pid));
    let member_form = members::form(&ui, &session, "project", &format!("{base}/members")).await;
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
        &session,
        Section::Clusters,
        html! {
            p.crumbs { a href={ "/dashboard/clusters/" (seg(&id)) } { "Cluster " (id) } " › project" }
            h1 { (project_name(&project)) }
            (view::notice(notice_text(q.notice.as_deref())))
            section aria-labelledby="quota-h" {
                h2 #quota-h { "Quota" }
                @if limits.is_empty() {
                    p { "This project has no quota." }
                } @else {
                    dl.quota {
                        @for (key, limit) in &limits {
                            @let max = drover_core::quantity::parse(limit).unwrap_or(0);
                            @let used = usage.get(key).copied().unwrap_or(0);
                            @let memory = key.contains("memory") || key.contains("storage");
                            dt { (key) }
                            dd {
                                meter min="0" max=(max as f64 / 1000.0) value=(used as f64 / 1000.0) aria-label={ (key) " used" } {}
                                " " (drover_core::quantity::format(used, memory)) " of " (limit)
                            }
                        }
                    }
                }
            }
            section aria-labelledby="ns-h" {
                h2 #ns-h { "Namespaces" }
                @if let Err(e) = &namespaces {
                    p.error { "The namespaces cannot be read now: " (e) }
                }
                div.scroll { table #namespaces {
                    thead { tr { th scope="col" { "Namespace" } th scope="col" { "Move to project" } } }
                    tbody { @for ns in &mine {
                        tr {
                            td { (ns) }
                            td {
                                form.inline method="post" action={ (base) "/namespaces/" (seg(ns)) "/move" } {
                                    (view::csrf(&session))
                                    label.sr for={ "move-" (ns) } { "Project for " (ns) }
                                    select id={ "move-" (ns) } name="project" {
                                        @for p in &others {
                                            option value=(s(p, "/metadata/name")) { (project_name(p)) }
                                        }
                                    }
                                    button.secondary type="submit" { "Move" }
                                }
                            }
                        }
                    } }
                } }
                form.inline method="post" action={ (base) "/namespaces" } {
                    (view::csrf(&session))
                    (view::text_field("New namespace", "name", true))
                    button type="submit" { "Create namespace" }
                }
            }
            section aria-labelledby="members-h" {
                h2 #members-h { "Members" }
                (members::table(&session, &bindings, &format!("{base}/members")))
                (member_form)
            }
        },
    ))
}

/// Quota usage summed over the project's namespaces, in thousandths.
async fn quota_usage(
    ui: &Ui,
    token: &str,
    cluster: &str,
    namespaces: &[String],
) -> BTreeMap<String, i128> {
    let mut sum = BTreeMap::new();
    let Ok(quotas) = ui
        .api
        .items(
            &format!("/k8s/clusters/{}/api/v1/resourcequotas", seg(cluster)),
            token,
        )
        .await
    else {
        return sum;
    };
    for quota in quotas.iter().filter(|q| {
        s(q, "/metadata/name") == PROJECT_QUOTA
            && namespaces.iter().any(|n| n == s(q, "/metadata/namespace"))
    }) {
        if let Some(used) = quota.pointer("/status/used").and_then(Value::as_object) {
            for (k, v) in used {
                let n = v
                    .as_str()
                    .and_then(drover_core::quantity::parse)
                    .unwrap_or(0);
                *sum.entry(k.clone()).or_insert(0) += n;
            }
        }
    }
    sum
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
