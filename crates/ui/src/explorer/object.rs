//! One object's page and its actions. Every kind shows its summary,
//! events and a link to its YAML; a workload adds its conditions, pods and
//! revisions, with scale, restart, image and environment forms and a
//! rollback that shows the diff first; a pod adds its containers, a live
//! log tail and a shell. Actions the user's role does not allow are not
//! shown, and a refused form action comes back on this page with the input
//! kept and the cluster's reason beside the form (a delete is confirmed on
//! a page of its own).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

use super::list::{self, images, keys, pod_ready, pod_status, restarts};
use super::{find, num, object_url, selector, Kind};
use crate::access::{why_not, Rules};
use crate::api::seg;
use crate::error::UiError;
use crate::session::Session;
use crate::view::{self, s, Section};
use crate::Ui;

/// The path of an object's page: cluster, resource, namespace, name.
type ObjectPath = Path<(String, String, String, String)>;

/// A refused form, shown again on its page.
#[derive(Debug, Default)]
pub(crate) struct Refusal {
    /// Which form (`scale`, `image`…).
    pub form: &'static str,
    /// The reason, in the cluster's words.
    pub message: String,
    /// What the user had entered.
    pub input: BTreeMap<String, String>,
    /// The HTTP status of the page.
    pub status: u16,
}

impl Refusal {
    /// A refusal of `form`, if `error` is the cluster's (or the UI's) "no".
    pub(crate) fn of(
        form: &'static str,
        error: UiError,
        input: BTreeMap<String, String>,
    ) -> Result<Refusal, UiError> {
        match error {
            UiError::Api { status, message } => Ok(Refusal {
                form,
                message: plain(&message),
                input,
                status,
            }),
            UiError::BadRequest(message) => Ok(Refusal {
                form,
                message,
                input,
                status: 400,
            }),
            other => Err(other),
        }
    }

    /// The refusal's message, when it is `form`'s.
    fn of_form(this: Option<&Refusal>, form: &str) -> Option<String> {
        this.filter(|r| r.form == form).map(|r| r.message.clone())
    }

    /// What the user had entered in `field` of `form`.
    fn value<'a>(this: Option<&'a Refusal>, form: &str, field: &str) -> Option<&'a str> {
        this.filter(|r| r.form == form)
            .and_then(|r| r.input.get(field))
            .map(String::as_str)
    }
}

/// The cluster's message without the API's prefix (`Deployment.apps "x"
/// is invalid: spec.replicas: …` keeps its field and reason).
pub(crate) fn plain(message: &str) -> String {
    message.trim().to_owned()
}

/// An inline error after a form field (its id is `{id}-error`).
pub(crate) fn field_error(id: &str, message: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = message {
            p.error.field-error id={ (id) "-error" } role="alert" { (m) }
        }
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct PageQuery {
    #[serde(default)]
    notice: Option<String>,
    /// Show a Secret's values.
    #[serde(default)]
    reveal: Option<String>,
}

/// `GET /dashboard/clusters/{id}/explore/{resource}/{ns}/{name}`.
pub(crate) async fn page(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path((id, resource, ns, name)): ObjectPath,
    Query(q): Query<PageQuery>,
) -> Result<Response, UiError> {
    let kind = find(&resource)?;
    let reveal = q.reveal.is_some();
    render(
        &ui,
        &session,
        &id,
        kind,
        &ns,
        &name,
        q.notice.as_deref(),
        None,
        reveal,
    )
    .await
}

/// What a `?notice=` code says on an object's page.
fn notice_text(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "scaled" => "The new scale was saved.",
        "restarted" => "A restart was started.",
        "image" => "The image was changed; the rollout has started.",
        "env" => "The environment was changed; the rollout has started.",
        "rolled-back" => "The rollback was started.",
        "saved" => "The YAML was saved.",
        _ => return None,
    })
}

/// Render an object's page, with `refusal` beside its form if a form was
/// refused.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn render(
    ui: &Ui,
    session: &Session,
    id: &str,
    kind: &'static Kind,
    ns: &str,
    name: &str,
    notice: Option<&str>,
    refusal: Option<Refusal>,
    reveal: bool,
) -> Result<Response, UiError> {
    let token = &session.token;
    let o = ui.api.get(&kind.item(id, ns, name), token).await?;
    let cluster_name = super::cluster_name(ui, token, id).await;
    let rules = Rules::cluster(&ui.api, token, id, ns).await;
    let may = |verb: &str, resource: &str| rules.allows(verb, kind.group, resource);
    let may_update = may("update", kind.resource);
    let may_patch = may("patch", kind.resource);
    let may_delete = may("delete", kind.resource);
    let url = object_url(id, kind.resource, ns, name);
    let events = object_events(ui, token, id, kind, ns, name).await;
    let r = refusal.as_ref();
    // A refusal whose form is not on the page (forced, or from a form the
    // user's role no longer shows) is shown at the top.
    let form_shown = match r.map(|r| r.form) {
        Some("scale") => may("patch", &format!("{}/scale", kind.resource)),
        Some("restart" | "image" | "env") => may_patch,
        _ => false,
    };
    let top_error = r.filter(|_| !form_shown).map(|r| r.message.clone());
    let body = html! {
        (super::object_crumbs(id, &cluster_name, kind, ns, name, None))
        div.heading {
            h1 { span.kind { (kind.kind) " " } (name) }
            div.actions {
                @if may("get", kind.resource) {
                    a.button.secondary href={ (url) "/yaml" } { @if may_update { "Edit YAML" } @else { "View YAML" } }
                }
                @if may_delete {
                    a.button.danger href={ (url) "/delete" } { "Delete" }
                }
            }
        }
        (view::notice(notice_text(notice)))
        @if let Some(m) = top_error { p.error #refusal role="alert" { (m) } }
        @if !may_update && !may_patch && !may_delete {
            p.readonly title=(why_not("change", &format!("{} objects", kind.kind))) { "Read only: your role lets you see this " (kind.noun()) " but not change it." }
        }
        dl.summary {
            dt { "Namespace" } dd { (ns) }
            dt { "Created" } dd { (view::since(s(&o, "/metadata/creationTimestamp"))) }
            @if let Some(labels) = o.pointer("/metadata/labels").and_then(Value::as_object).filter(|l| !l.is_empty()) {
                dt { "Labels" } dd { @for (k, v) in labels { code.label { (k) "=" (v.as_str().unwrap_or_default()) } " " } }
            }
            (summary(kind, &o))
        }
        @match kind.resource {
            "pods" => (pod_sections(ui, session, id, &o, &rules, &url).await),
            _ if kind.is_workload() => (workload_sections(ui, session, id, kind, &o, &rules, &url, refusal.as_ref()).await),
            "configmaps" => (data_table(&o, true)),
            "secrets" => (secret_data(&o, reveal, &url)),
            "services" => (service_ports(&o)),
            _ => {}
        }
        @if kind.resource != "events" {
            section aria-labelledby="events-h" {
                h2 #events-h { "Events" }
                (events_table(&events))
            }
        }
    };
    let status = refusal.as_ref().map_or(200, |r| r.status);
    let page = view::page(name, session, Section::Clusters, body);
    let mut resp = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), page).into_response();
    if kind.resource == "pods" {
        resp.extensions_mut().insert(crate::session::TerminalPage);
    }
    Ok(resp)
}

/// Kind-specific lines of the summary.
fn summary(kind: &Kind, o: &Value) -> Markup {
    match kind.resource {
        "deployments" | "statefulsets" => html! {
            dt { "Ready" } dd #ready { (num(o, "/status/readyReplicas")) " of " (o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)) }
            dt { "Images" } dd #images { (images(&o["spec"]["template"]["spec"])) }
            @if kind.resource == "deployments" {
                dt { "Revision" } dd #revision { (s(o, "/metadata/annotations/deployment.kubernetes.io~1revision")) }
            }
        },
        "daemonsets" => html! {
            dt { "Ready" } dd #ready { (num(o, "/status/numberReady")) " of " (num(o, "/status/desiredNumberScheduled")) }
            dt { "Images" } dd #images { (images(&o["spec"]["template"]["spec"])) }
        },
        "jobs" => html! {
            dt { "Succeeded" } dd { (num(o, "/status/succeeded")) " of " (o.pointer("/spec/completions").and_then(Value::as_i64).unwrap_or(1)) }
            dt { "Failed pods" } dd { (num(o, "/status/failed")) }
        },
        "cronjobs" => html! {
            dt { "Schedule" } dd { code { (s(o, "/spec/schedule")) } }
            dt { "Last run" } dd { (view::since(s(o, "/status/lastScheduleTime"))) }
        },
        "pods" => {
            let (status, healthy) = pod_status(o);
            html! {
                dt { "Status" } dd #pod-status { span.status data-ok=(healthy) { (status) } }
                dt { "Node" } dd { (s(o, "/spec/nodeName")) }
                dt { "Pod IP" } dd { (s(o, "/status/podIP")) }
                dt { "Restarts" } dd { (restarts(o)) }
            }
        }
        "services" => html! {
            dt { "Type" } dd { (s(o, "/spec/type")) }
            dt { "Cluster IP" } dd { (s(o, "/spec/clusterIP")) }
            dt { "Selector" } dd { code { (selector(&o["spec"]["selector"])) } }
        },
        "persistentvolumeclaims" => html! {
            dt { "Status" } dd { (s(o, "/status/phase")) }
            dt { "Volume" } dd { (s(o, "/spec/volumeName")) }
            dt { "Capacity" } dd { (s(o, "/status/capacity/storage")) }
        },
        "ingresses" => html! {
            dt { "Class" } dd { (s(o, "/spec/ingressClassName")) }
        },
        "secrets" => html! { dt { "Type" } dd { (s(o, "/type")) } },
        _ => html! {},
    }
}

/// The events about an object, newest first.
async fn object_events(
    ui: &Ui,
    token: &str,
    id: &str,
    kind: &Kind,
    ns: &str,
    name: &str,
) -> Vec<Value> {
    if kind.resource == "events" {
        return Vec::new();
    }
    let selector = format!(
        "involvedObject.name={name},involvedObject.kind={}",
        kind.kind
    );
    let mut events = ui
        .api
        .items(
            &format!(
                "{}?fieldSelector={}",
                super::find("events")
                    .map(|e| e.collection(id, ns))
                    .unwrap_or_default(),
                seg(&selector)
            ),
            token,
        )
        .await
        .unwrap_or_default();
    events.sort_by(|a, b| s(b, "/lastTimestamp").cmp(s(a, "/lastTimestamp")));
    events
}

fn events_table(events: &[Value]) -> Markup {
    html! {
        @if events.is_empty() {
            p { "No events." }
        } @else {
            div.scroll { table.events {
                thead { tr { th scope="col" { "Last seen" } th scope="col" { "Type" } th scope="col" { "Reason" } th scope="col" { "Count" } th scope="col" { "Message" } } }
                tbody { @for e in events {
                    tr class=[(s(e, "/type") == "Warning").then_some("warn")] {
                        td { (view::since(s(e, "/lastTimestamp"))) }
                        td { (s(e, "/type")) }
                        td { (s(e, "/reason")) }
                        td { (num(e, "/count").max(1)) }
                        td { (s(e, "/message")) }
                    }
                } }
            } }
        }
    }
}

fn conditions_table(o: &Value) -> Markup {
    let conds: Vec<&Value> = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    html! {
        @if !conds.is_empty() {
            div.scroll { table #conditions {
                thead { tr { th scope="col" { "Condition" } th scope="col" { "Status" } th scope="col" { "Reason" } th scope="col" { "Since" } th scope="col" { "Message" } } }
                tbody { @for c in conds {
                    @let bad = matches!((s(c, "/type"), s(c, "/status")), ("Failed" | "ReplicaFailure", "True") | ("Available" | "Progressing" | "Ready" | "Complete", "False"));
                    tr class=[bad.then_some("warn")] {
                        td { (s(c, "/type")) } td { (s(c, "/status")) } td { (s(c, "/reason")) }
                        td { (view::since(s(c, "/lastTransitionTime"))) } td { (s(c, "/message")) }
                    }
                } }
            } }
        }
    }
}

/// A workload's conditions, actions, pods and revisions.
#[allow(clippy::too_many_arguments)]
async fn workload_sections(
    ui: &Ui,
    session: &Session,
    id: &str,
    kind: &Kind,
    o: &Value,
    rules: &Rules,
    url: &str,
    refusal: Option<&Refusal>,
) -> Markup {
    let token = &session.token;
    let ns = s(o, "/metadata/namespace");
    let pods_kind = find("pods").expect("pods are shown");
    let pods = match o.pointer("/spec/selector/matchLabels") {
        Some(labels) if kind.resource != "cronjobs" => ui
            .api
            .items(
                &format!(
                    "{}?labelSelector={}",
                    pods_kind.collection(id, ns),
                    seg(&selector(labels))
                ),
                token,
            )
            .await
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let template = &o["spec"]["template"]["spec"];
    let containers: Vec<&str> = template["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| s(c, "/name"))
        .collect();
    let may_patch = rules.allows("patch", kind.group, kind.resource);
    let may_scale = rules.allows("patch", kind.group, &format!("{}/scale", kind.resource))
        && matches!(kind.resource, "deployments" | "statefulsets");
    let may_update = rules.allows("update", kind.group, kind.resource);
    let (revisions, revisions_error) = if has_revisions(kind) {
        match revisions(ui, token, id, kind, o).await {
            Ok(r) => (r, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        }
    } else {
        (Vec::new(), None)
    };
    let current = current_revision(o, &revisions);
    let csrf = view::csrf(session);
    let value = |form: &str, field: &str, default: &str| {
        Refusal::value(refusal, form, field)
            .unwrap_or(default)
            .to_owned()
    };
    let err = |form: &str| Refusal::of_form(refusal, form);
    let replicas = o
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .to_string();
    html! {
        section aria-labelledby="conditions-h" {
            h2 #conditions-h { "Conditions" }
            (conditions_table(o))
        }
        @if may_scale || (may_patch && kind.resource != "cronjobs" && kind.resource != "jobs") {
            section.workload-actions aria-labelledby="actions-h" {
                h2 #actions-h { "Change" }
                @if may_scale {
                    @let e = err("scale");
                    form.inline method="post" action={ (url) "/scale" } {
                        (csrf)
                        div.field {
                            label for="replicas" { "Replicas" }
                            input #replicas name="replicas" type="number" min="0" required value=(value("scale", "replicas", &replicas))
                                aria-invalid=[e.is_some().then_some("true")] aria-describedby=[e.is_some().then_some("replicas-error")];
                        }
                        button type="submit" { "Scale" }
                    }
                    (field_error("replicas", e.as_deref()))
                }
                @if may_patch {
                    form.inline method="post" action={ (url) "/restart" } {
                        (csrf)
                        button.secondary type="submit" { "Restart" }
                    }
                    (field_error("restart", err("restart").as_deref()))
                    @let e = err("image");
                    form.inline method="post" action={ (url) "/image" } {
                        (csrf)
                        div.field {
                            label for="image-container" { "Container" }
                            select #image-container name="container" {
                                @for c in &containers { option selected[value("image", "container", "") == *c] { (c) } }
                            }
                        }
                        div.field {
                            label for="image" { "Image" }
                            input #image name="image" type="text" required autocomplete="off"
                                value=(value("image", "image", template["containers"][0]["image"].as_str().unwrap_or_default()))
                                aria-invalid=[e.is_some().then_some("true")] aria-describedby=[e.is_some().then_some("image-error")];
                        }
                        button type="submit" { "Change image" }
                    }
                    (field_error("image", e.as_deref()))
                    @let e = err("env");
                    form.inline method="post" action={ (url) "/env" } {
                        (csrf)
                        div.field {
                            label for="env-container" { "Container" }
                            select #env-container name="container" {
                                @for c in &containers { option selected[value("env", "container", "") == *c] { (c) } }
                            }
                        }
                        div.field {
                            label for="env-name" { "Variable" }
                            input #env-name name="name" type="text" required autocomplete="off" value=(value("env", "name", ""))
                                aria-invalid=[e.is_some().then_some("true")] aria-describedby=[e.is_some().then_some("env-error")];
                        }
                        div.field {
                            label for="env-value" { "Value" }
                            input #env-value name="value" type="text" autocomplete="off" value=(value("env", "value", ""));
                        }
                        button type="submit" { "Set variable" }
                    }
                    (field_error("env", e.as_deref()))
                    @if !template["containers"].is_null() {
                        (env_table(template))
                    }
                }
            }
        }
        @if has_revisions(kind) {
            section aria-labelledby="revisions-h" {
                h2 #revisions-h { "Revisions" }
                @if let Some(e) = &revisions_error {
                    p.error { "The revisions cannot be read: " (e) }
                }
                div.scroll { table #revisions {
                    thead { tr { th scope="col" { "Revision" } th scope="col" { "Images" } th scope="col" { "Change cause" } th scope="col" { "Created" } th scope="col" { span.sr { "Actions" } } } }
                    tbody { @for r in &revisions {
                        @let rev = r.number.as_str();
                        tr data-revision=(rev) {
                            td { (rev) @if rev == current { " (current)" } }
                            td { (images(&r.template["spec"])) }
                            td { (r.change_cause) }
                            td { (view::since(&r.created)) }
                            td { @if rev != current && may_update {
                                a href={ (url) "/rollback?revision=" (seg(rev)) } { "Review rollback to revision " (rev) }
                            } }
                        }
                    } }
                } }
            }
        }
        @if kind.resource != "cronjobs" {
            section aria-labelledby="pods-h" {
                h2 #pods-h { "Pods" }
                div.scroll { table #pods {
                    thead { tr { @for c in list::columns(pods_kind) { th scope="col" { (c) } } } }
                    tbody { @for p in &pods { (list::row(pods_kind, id, p)) } }
                } }
            }
        }
    }
}

fn env_table(template: &Value) -> Markup {
    let rows: Vec<(&str, &str, &str)> = template["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| {
            c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |e| (s(c, "/name"), s(e, "/name"), s(e, "/value")))
        })
        .collect();
    html! {
        @if !rows.is_empty() {
            div.scroll { table #env {
                thead { tr { th scope="col" { "Container" } th scope="col" { "Variable" } th scope="col" { "Value" } } }
                tbody { @for (c, n, v) in rows { tr { td { (c) } td { code { (n) } } td { code { (v) } } } } }
            } }
        }
    }
}

/// One kept revision of a workload's pod template.
struct Revision {
    number: String,
    /// The pod template, as the workload would take it back.
    template: Value,
    change_cause: String,
    created: String,
}

/// Whether the workload keeps revisions (and rolls back).
fn has_revisions(kind: &Kind) -> bool {
    matches!(kind.resource, "deployments" | "statefulsets" | "daemonsets")
}

/// A workload's kept revisions, newest first: a Deployment's ReplicaSets,
/// a StatefulSet's or DaemonSet's ControllerRevisions (owned by it).
async fn revisions(
    ui: &Ui,
    token: &str,
    id: &str,
    kind: &Kind,
    o: &Value,
) -> Result<Vec<Revision>, UiError> {
    let uid = s(o, "/metadata/uid");
    let ns = s(o, "/metadata/namespace");
    let of = if kind.resource == "deployments" {
        "replicasets"
    } else {
        "controllerrevisions"
    };
    let path = format!(
        "/k8s/clusters/{}/apis/apps/v1/namespaces/{}/{of}?labelSelector={}",
        seg(id),
        seg(ns),
        seg(&selector(&o["spec"]["selector"]["matchLabels"]))
    );
    let mut kept: Vec<Revision> = ui
        .api
        .items(&path, token)
        .await?
        .into_iter()
        .filter(|r| {
            r["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| s(o, "/uid") == uid)
        })
        .map(|r| {
            let (number, mut template) = if of == "replicasets" {
                (
                    s(
                        &r,
                        "/metadata/annotations/deployment.kubernetes.io~1revision",
                    )
                    .to_owned(),
                    r["spec"]["template"].clone(),
                )
            } else {
                (
                    r["revision"].to_string(),
                    r["data"]["spec"]["template"].clone(),
                )
            };
            if let Some(t) = template.as_object_mut() {
                t.remove("$patch");
            }
            if let Some(labels) = template
                .pointer_mut("/metadata/labels")
                .and_then(Value::as_object_mut)
            {
                labels.remove("pod-template-hash");
            }
            Revision {
                number,
                template,
                change_cause: s(&r, "/metadata/annotations/kubernetes.io~1change-cause").to_owned(),
                created: s(&r, "/metadata/creationTimestamp").to_owned(),
            }
        })
        .collect();
    kept.sort_by_key(|r| std::cmp::Reverse(r.number.parse::<u64>().unwrap_or(0)));
    Ok(kept)
}

/// The revision a workload runs now: a Deployment's annotation, else the
/// revision whose template is the workload's.
fn current_revision(o: &Value, kept: &[Revision]) -> String {
    match s(
        o,
        "/metadata/annotations/deployment.kubernetes.io~1revision",
    ) {
        "" => kept
            .iter()
            .find(|r| template_yaml(&r.template) == template_yaml(&o["spec"]["template"]))
            .map(|r| r.number.clone())
            .unwrap_or_default(),
        n => n.to_owned(),
    }
}

/// A pod's containers, log tail and shell.
async fn pod_sections(
    _ui: &Ui,
    session: &Session,
    id: &str,
    p: &Value,
    rules: &Rules,
    url: &str,
) -> Markup {
    let containers: Vec<&Value> = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let status_of = |name: &str| {
        p.pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| s(c, "/name") == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let may_logs = rules.allows("get", "", "pods/log");
    let may_exec = rules.allows("create", "", "pods/exec");
    let (ready, all) = pod_ready(p);
    let _ = (id, session);
    html! {
        section aria-labelledby="containers-h" {
            h2 #containers-h { "Containers" " (" (ready) " of " (all) " ready)" }
            div.scroll { table #containers {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Image" } th scope="col" { "State" } th scope="col" { "Ready" } th scope="col" { "Restarts" } } }
                tbody { @for c in &containers {
                    @let name = s(c, "/name");
                    @let st = status_of(name);
                    @let state = st["state"].as_object().and_then(|m| m.keys().next().cloned()).unwrap_or_else(|| "waiting".into());
                    tr class=[(st["ready"] != Value::Bool(true)).then_some("warn")] {
                        td { (name) } td { (s(c, "/image")) } td { (state) }
                        td { (if st["ready"] == Value::Bool(true) { "yes" } else { "no" }) }
                        td { (num(&st, "/restartCount")) }
                    }
                } }
            } }
        }
        section aria-labelledby="conditions-h" {
            h2 #conditions-h { "Conditions" }
            (conditions_table(p))
        }
        @if may_logs {
            section #logs aria-labelledby="logs-h" data-src={ (url) "/log" } {
                h2 #logs-h { "Logs" }
                div.log-controls {
                    div.field {
                        label for="log-container" { "Container" }
                        select #log-container {
                            @for c in &containers { option { (s(c, "/name")) } }
                        }
                    }
                    div.check {
                        input #log-previous type="checkbox";
                        label for="log-previous" { "Previous instance" }
                    }
                    div.field {
                        label for="log-search" { "Search the tail" }
                        input #log-search type="search" autocomplete="off";
                    }
                    div.check {
                        input #log-follow type="checkbox" checked;
                        label for="log-follow" { "Follow" }
                    }
                    a.button.secondary #log-download href={ (url) "/log/download" } download { "Download" }
                }
                p.error #log-error role="alert" hidden {}
                pre #log-lines tabindex="0" aria-label="Log lines" {}
            }
        } @else {
            p.readonly title=(why_not("read", "pod logs")) { "Your role does not let you read this pod's logs." }
        }
        @if may_exec {
            section #shell aria-labelledby="shell-h" data-src={ (url) "/shell" } {
                link rel="stylesheet" href="/dashboard/static/xterm.css";
                script src="/dashboard/static/xterm.js" defer {}
                h2 #shell-h { "Shell" }
                div.log-controls {
                    div.field {
                        label for="shell-container" { "Container" }
                        select #shell-container {
                            @for c in &containers { option { (s(c, "/name")) } }
                        }
                    }
                    button #shell-connect type="button" { "Open a shell" }
                }
                p.error #shell-error role="alert" hidden {}
                div #terminal role="region" aria-label="Terminal" {}
            }
        }
    }
}

fn data_table(o: &Value, values: bool) -> Markup {
    html! {
        section aria-labelledby="data-h" {
            h2 #data-h { "Data" }
            div.scroll { table #data {
                thead { tr { th scope="col" { "Key" } th scope="col" { "Value" } } }
                tbody { @for k in keys(o) {
                    tr { td { code { (k) } } td { @if values { pre.value { (o["data"][k].as_str().unwrap_or("(binary)")) } } @else { "hidden" } } }
                } }
            } }
        }
    }
}

/// A Secret's keys; its values only when asked.
fn secret_data(o: &Value, reveal: bool, url: &str) -> Markup {
    use base64::Engine;
    let decode = |v: &Value| {
        v.as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| String::from_utf8(b).unwrap_or_else(|_| "(binary)".into()))
            .unwrap_or_default()
    };
    html! {
        section aria-labelledby="data-h" {
            h2 #data-h { "Data" }
            @if reveal {
                a href=(url) { "Hide the values" }
            } @else {
                a.button.secondary href={ (url) "?reveal=1" } { "Show the values" }
            }
            div.scroll { table #data {
                thead { tr { th scope="col" { "Key" } th scope="col" { "Value" } } }
                tbody { @for k in keys(o) {
                    tr { td { code { (k) } } td { @if reveal { pre.value { (decode(&o["data"][k])) } } @else { span.hidden { "••••••" } } } }
                } }
            } }
        }
    }
}

fn service_ports(o: &Value) -> Markup {
    html! {
        section aria-labelledby="ports-h" {
            h2 #ports-h { "Ports" }
            div.scroll { table #ports {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Port" } th scope="col" { "Target" } th scope="col" { "Protocol" } th scope="col" { "Node port" } } }
                tbody { @for p in o.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
                    tr { td { (s(p, "/name")) } td { (p["port"]) } td { (p["targetPort"].to_string().trim_matches('"')) } td { (s(p, "/protocol")) }
                        td { @if let Some(n) = p["nodePort"].as_i64() { (n) } } }
                } }
            } }
        }
    }
}

// ---- actions -------------------------------------------------------------

/// Run `action`; on success go back to the page with `notice`, on a
/// refusal show the page again with the input and the reason by `form`.
#[allow(clippy::too_many_arguments)]
async fn act(
    ui: &Ui,
    session: &Session,
    (id, resource, ns, name): (String, String, String, String),
    form: &'static str,
    input: BTreeMap<String, String>,
    notice: &str,
    action: impl std::future::Future<Output = Result<(), UiError>>,
) -> Result<Response, UiError> {
    let kind = find(&resource)?;
    match action.await {
        Ok(()) => Ok(Redirect::to(&format!(
            "{}?notice={notice}",
            object_url(&id, &resource, &ns, &name)
        ))
        .into_response()),
        Err(e) => {
            let refusal = Refusal::of(form, e, input)?;
            render(
                ui,
                session,
                &id,
                kind,
                &ns,
                &name,
                None,
                Some(refusal),
                false,
            )
            .await
        }
    }
}

/// PATCH an object (or its subresource) as the user.
async fn patch(
    ui: &Ui,
    token: &str,
    path: &str,
    content_type: &str,
    body: &Value,
) -> Result<(), UiError> {
    ui.api
        .call_as(Method::PATCH, path, token, Some(body), content_type)
        .await
        .map(|_| ())
}

/// A strategic merge patch of the workload's pod template (containers merge
/// by name), as `kubectl set image|env` and `rollout restart` send.
async fn patch_template(
    ui: &Ui,
    token: &str,
    (id, resource, ns, name): &(String, String, String, String),
    template: Value,
) -> Result<(), UiError> {
    let path = find(resource)?.item(id, ns, name);
    let body = json!({"spec": {"template": template}});
    patch(
        ui,
        token,
        &path,
        "application/strategic-merge-patch+json",
        &body,
    )
    .await
}

#[derive(Deserialize)]
pub(crate) struct ScaleForm {
    replicas: String,
}

/// `POST …/{resource}/{ns}/{name}/scale`.
pub(crate) async fn scale(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(p): ObjectPath,
    Form(f): Form<ScaleForm>,
) -> Result<Response, UiError> {
    let kind = find(&p.1)?;
    let path = format!("{}/scale", kind.item(&p.0, &p.2, &p.3));
    let input = BTreeMap::from([("replicas".to_owned(), f.replicas.clone())]);
    let token = session.token.clone();
    let action = async {
        let n: u32 = f.replicas.trim().parse().map_err(|_| {
            UiError::BadRequest(format!(
                "Replicas must be a whole number from 0, not {:?}.",
                f.replicas.trim()
            ))
        })?;
        patch(
            &ui,
            &token,
            &path,
            "application/merge-patch+json",
            &json!({"spec": {"replicas": n}}),
        )
        .await
    };
    act(&ui, &session, p.clone(), "scale", input, "scaled", action).await
}

/// `POST …/restart`: a new rollout of the same template, as `kubectl
/// rollout restart` makes one.
pub(crate) async fn restart(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(p): ObjectPath,
) -> Result<Response, UiError> {
    let template = json!({"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": drover_core::meta::now_rfc3339()}}});
    let action = patch_template(&ui, &session.token, &p, template);
    act(
        &ui,
        &session,
        p.clone(),
        "restart",
        BTreeMap::new(),
        "restarted",
        action,
    )
    .await
}

#[derive(Deserialize)]
pub(crate) struct ImageForm {
    container: String,
    image: String,
}

/// `POST …/image`: one container's image.
pub(crate) async fn image(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(p): ObjectPath,
    Form(f): Form<ImageForm>,
) -> Result<Response, UiError> {
    let input = BTreeMap::from([
        ("container".to_owned(), f.container.clone()),
        ("image".to_owned(), f.image.clone()),
    ]);
    let template =
        json!({"spec": {"containers": [{"name": f.container, "image": f.image.trim()}]}});
    let action = async {
        if f.image.trim().is_empty() {
            return Err(UiError::BadRequest("Enter an image.".into()));
        }
        patch_template(&ui, &session.token, &p, template).await
    };
    act(&ui, &session, p.clone(), "image", input, "image", action).await
}

#[derive(Deserialize)]
pub(crate) struct EnvForm {
    container: String,
    name: String,
    #[serde(default)]
    value: String,
}

/// `POST …/env`: set one environment variable of a container.
pub(crate) async fn env(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(p): ObjectPath,
    Form(f): Form<EnvForm>,
) -> Result<Response, UiError> {
    let input = BTreeMap::from([
        ("container".to_owned(), f.container.clone()),
        ("name".to_owned(), f.name.clone()),
        ("value".to_owned(), f.value.clone()),
    ]);
    let template = json!({"spec": {"containers": [
        {"name": f.container, "env": [{"name": f.name.trim(), "value": f.value}]}]}});
    let action = patch_template(&ui, &session.token, &p, template);
    act(&ui, &session, p.clone(), "env", input, "env", action).await
}

#[derive(Deserialize)]
pub(crate) struct RevisionQuery {
    revision: String,
}

/// A pod template as YAML for a diff: without the hash label the
/// controller adds.
fn template_yaml(template: &Value) -> String {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
    }
    if let Some(m) = t.pointer_mut("/metadata").and_then(Value::as_object_mut) {
        m.remove("creationTimestamp");
    }
    yaml_serde::to_string(&t).unwrap_or_default()
}

/// Revision `number` of a workload.
async fn revision(
    ui: &Ui,
    token: &str,
    id: &str,
    kind: &Kind,
    o: &Value,
    number: &str,
) -> Result<Revision, UiError> {
    revisions(ui, token, id, kind, o)
        .await?
        .into_iter()
        .find(|r| r.number == number)
        .ok_or_else(|| UiError::NotFound(format!("revision {number} is no longer kept")))
}

/// `GET …/{deployments|statefulsets|daemonsets}/{ns}/{name}/rollback?revision=N`:
/// the change a rollback makes, as a diff, before it is made.
pub(crate) async fn rollback_page(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path((id, resource, ns, name)): ObjectPath,
    Query(q): Query<RevisionQuery>,
) -> Result<Markup, UiError> {
    let kind = find(&resource)?;
    if !has_revisions(kind) {
        return Err(UiError::NotFound(format!(
            "{} keep no revisions",
            kind.label
        )));
    }
    let token = &session.token;
    let d = ui.api.get(&kind.item(&id, &ns, &name), token).await?;
    let r = revision(&ui, token, &id, kind, &d, &q.revision).await?;
    let now = template_yaml(&d["spec"]["template"]);
    let then = template_yaml(&r.template);
    let cluster_name = super::cluster_name(&ui, token, &id).await;
    let url = object_url(&id, &resource, &ns, &name);
    let diff = similar::TextDiff::from_lines(&now, &then);
    Ok(view::page(
        "Roll back",
        &session,
        Section::Clusters,
        html! {
            (super::object_crumbs(&id, &cluster_name, kind, &ns, &name, Some("Roll back")))
            h1 { "Roll back " (name) " to revision " (q.revision) "?" }
            p { "The pod template changes as follows (" del { "− now" } ", " ins { "+ after" } "):" }
            pre.diff #diff aria-label="Changes" {
                @for change in diff.iter_all_changes() {
                    @match change.tag() {
                        similar::ChangeTag::Delete => del { "- " (change.value()) },
                        similar::ChangeTag::Insert => ins { "+ " (change.value()) },
                        similar::ChangeTag::Equal => span { "  " (change.value()) },
                    }
                }
            }
            form method="post" action={ (url) "/rollback" } {
                (view::csrf(&session))
                input type="hidden" name="revision" value=(q.revision);
                button type="submit" { "Roll back to revision " (q.revision) }
                " "
                a href=(url) { "Cancel" }
            }
        },
    ))
}

/// `POST …/rollback`: the revision's template back in the workload (which
/// makes it the newest revision, as `kubectl rollout undo` does).
pub(crate) async fn rollback(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(p): ObjectPath,
    Form(f): Form<RevisionQuery>,
) -> Result<Response, UiError> {
    let kind = find(&p.1)?;
    let path = kind.item(&p.0, &p.2, &p.3);
    let token = session.token.clone();
    let action = async {
        if !has_revisions(kind) {
            return Err(UiError::NotFound(format!(
                "{} keep no revisions",
                kind.label
            )));
        }
        let mut d = ui.api.get(&path, &token).await?;
        let r = revision(&ui, &token, &p.0, kind, &d, &f.revision).await?;
        d["spec"]["template"] = r.template;
        ui.api
            .call(Method::PUT, &path, &token, Some(&d))
            .await
            .map(|_| ())
    };
    let input = BTreeMap::from([("revision".to_owned(), f.revision.clone())]);
    act(
        &ui,
        &session,
        p.clone(),
        "page",
        input,
        "rolled-back",
        action,
    )
    .await
}

/// `GET …/delete`: confirm by typing the name.
pub(crate) async fn delete_page(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path((id, resource, ns, name)): ObjectPath,
) -> Result<Markup, UiError> {
    let kind = find(&resource)?;
    let token = &session.token;
    ui.api.get(&kind.item(&id, &ns, &name), token).await?;
    let cluster_name = super::cluster_name(&ui, token, &id).await;
    let url = object_url(&id, &resource, &ns, &name);
    Ok(view::page(
        "Delete",
        &session,
        Section::Clusters,
        html! {
            (super::object_crumbs(&id, &cluster_name, kind, &ns, &name, Some("Delete")))
            h1 { "Delete " (kind.noun()) " " (name) "?" }
            (view::confirm_delete(&session, &format!("{url}/delete"), &name, &format!("Delete {}", kind.noun()), &url))
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct Confirm {
    confirm: String,
}

/// `POST …/delete`.
pub(crate) async fn delete(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path((id, resource, ns, name)): ObjectPath,
    Form(f): Form<Confirm>,
) -> Result<Response, UiError> {
    let kind = find(&resource)?;
    if f.confirm.trim() != name {
        return Err(UiError::BadRequest(format!(
            "type the name {name:?} to delete it"
        )));
    }
    ui.api
        .call(
            Method::DELETE,
            &kind.item(&id, &ns, &name),
            &session.token,
            None,
        )
        .await?;
    Ok(Redirect::to(&format!(
        "{}/{}?ns={}",
        super::base(&id),
        kind.resource,
        seg(&ns)
    ))
    .into_response())
}
