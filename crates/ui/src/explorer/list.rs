//! A kind's objects: in one namespace, a project's namespaces or all of
//! them, a page at a time as the cluster pages them (`limit` and
//! `continue`), each row with its status at a glance; a list of one
//! namespace or of all is kept live: the page follows a watch (server-sent
//! events) and reloads its rows when something changes.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::{find, num, object_url, Kind};
use crate::access::Rules;
use crate::api::{seg, MGMT};
use crate::error::UiError;
use crate::pages::clusters::project_name;
use crate::session::{Bearer, Session};
use crate::view::{self, s, Section};
use crate::Ui;

/// Objects per page.
const PAGE: usize = 100;

/// The namespaces the user may choose in a cluster, each with its project
/// (`cluster:project`, or "").
pub(crate) async fn namespaces(
    ui: &Ui,
    token: &str,
    cluster: &str,
) -> Result<Vec<(String, String)>, UiError> {
    let items = ui
        .api
        .items(
            &format!("/k8s/clusters/{}/api/v1/namespaces", seg(cluster)),
            token,
        )
        .await?;
    Ok(items
        .iter()
        .map(|n| {
            (
                s(n, "/metadata/name").to_owned(),
                s(n, "/metadata/annotations/drover.io~1project-id").to_owned(),
            )
        })
        .collect())
}

#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    /// One namespace, or "" for all the user may see.
    #[serde(default)]
    pub(crate) ns: String,
    /// A project's id: its namespaces only.
    #[serde(default)]
    pub(crate) project: String,
    /// The cluster's continue token of the page.
    #[serde(default, rename = "continue")]
    pub(crate) cont: String,
}

/// `GET /dashboard/clusters/{id}/explore`: the first kind.
pub(crate) async fn home(
    state: State<Arc<Ui>>,
    session: Session,
    Path(id): Path<String>,
    q: Query<ListQuery>,
) -> Result<Markup, UiError> {
    list(state, session, Path((id, "deployments".to_owned())), q).await
}

/// `GET /dashboard/clusters/{id}/explore/{resource}`.
pub(crate) async fn list(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path((id, resource)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> Result<Markup, UiError> {
    let kind = find(&resource)?;
    let token = &session.token;
    let name = super::cluster_name(&ui, token, &id).await;
    let all_ns = namespaces(&ui, token, &id).await.unwrap_or_default();
    let projects = ui
        .api
        .items(&format!("{MGMT}/namespaces/{}/projects", seg(&id)), token)
        .await
        .unwrap_or_default();
    let in_project = |p: &str| {
        q.project.is_empty() || p.split_once(':').is_some_and(|(_, pid)| pid == q.project)
    };
    let shown_ns: Vec<&str> = all_ns
        .iter()
        .filter(|(_, p)| in_project(p))
        .map(|(n, _)| n.as_str())
        .collect();
    // Where to list: one namespace, a project's, or everywhere (a user
    // who may not list everywhere gets their own namespaces instead).
    let mut failure = None;
    let mut objects = Vec::new();
    let mut next = String::new();
    let mut rv = String::new();
    let mut watch_ns = None;
    // Lists of several namespaces show the first page of each.
    let mut truncated = false;
    if !q.ns.is_empty() || q.project.is_empty() {
        let mut path = format!("{}?limit={PAGE}", kind.collection(&id, &q.ns));
        if !q.cont.is_empty() {
            path.push_str("&continue=");
            path.push_str(&seg(&q.cont));
        }
        match ui.api.get(&path, token).await {
            Ok(mut page) => {
                next = s(&page, "/metadata/continue").to_owned();
                rv = s(&page, "/metadata/resourceVersion").to_owned();
                watch_ns = Some(q.ns.clone());
                if let Value::Array(items) = page["items"].take() {
                    objects = items;
                }
            }
            Err(UiError::Api { status: 403, .. }) if q.ns.is_empty() => {
                let got = each(&ui, token, kind, &id, &shown_ns, &mut failure).await;
                (objects, truncated) = (got.objects, got.more);
                if let [only] = shown_ns[..] {
                    watch_ns = Some(only.to_owned());
                    rv = got.rv;
                }
            }
            Err(e) => failure = Some(e.to_string()),
        }
    } else {
        let got = each(&ui, token, kind, &id, &shown_ns, &mut failure).await;
        (objects, truncated) = (got.objects, got.more);
    }
    if kind.resource == "events" {
        objects.sort_by(|a, b| last_seen(b).cmp(last_seen(a)));
    }
    // What the user may do here, for the "Import YAML" button.
    let here_ns = if q.ns.is_empty() {
        shown_ns.first().copied().unwrap_or("")
    } else {
        q.ns.as_str()
    };
    let rules = Rules::cluster(&ui.api, token, &id, here_ns).await;
    let may_create = rules.allows("create", kind.group, kind.resource);
    let here = |cont: &str| {
        let mut url = format!(
            "{}/{}?ns={}&project={}",
            super::base(&id),
            kind.resource,
            seg(&q.ns),
            seg(&q.project)
        );
        if !cont.is_empty() {
            url.push_str("&continue=");
            url.push_str(&seg(cont));
        }
        url
    };
    let watch_url = watch_ns.map(|ns| {
        format!(
            "{}/{}/watch?ns={}&rv={}",
            super::base(&id),
            kind.resource,
            seg(&ns),
            seg(&rv)
        )
    });
    Ok(view::page(
        kind.label,
        &session,
        Section::Clusters,
        html! {
            (super::crumbs(&id, &name, &[(kind.label.to_owned(), None)]))
            div.heading {
                h1 { (kind.label) }
                div.actions {
                    @if may_create {
                        a.button.secondary href={ (super::base(&id)) "/import?ns=" (seg(&q.ns)) } { "Import YAML" }
                    }
                }
            }
            (super::kinds_nav(&id, kind.resource, &q.ns))
            form.filter method="get" action={ (super::base(&id)) "/" (kind.resource) } {
                div.field {
                    label for="project" { "Project" }
                    select #project name="project" {
                        option value="" { "All projects" }
                        @for p in &projects {
                            @let pid = s(p, "/metadata/name");
                            option value=(pid) selected[pid == q.project] { (project_name(p)) }
                        }
                    }
                }
                div.field {
                    label for="ns" { "Namespace" }
                    select #ns name="ns" {
                        option value="" { "All namespaces" }
                        @for n in &shown_ns {
                            option value=(n) selected[*n == q.ns] { (n) }
                        }
                    }
                }
                button type="submit" { "Show" }
            }
            @if let Some(f) = &failure {
                p.error role="alert" { "The " (kind.label.to_lowercase()) " cannot be read: " (f) }
            }
            p.count #explorer-count {
                (count_text(objects.len(), kind))
                @if truncated { " (the first " (PAGE) " of each namespace: choose a namespace to page through all)" }
            }
            div.scroll {
                table #explorer data-watch=[watch_url] {
                    thead { tr { @for c in columns(kind) { th scope="col" { (c) } } } }
                    tbody #explorer-rows {
                        @for o in &objects { (row(kind, &id, o)) }
                    }
                }
            }
            @if !next.is_empty() || !q.cont.is_empty() {
                nav.pages aria-label="Pages" {
                    @if !q.cont.is_empty() { a href=(here("")) { "« First page" } }
                    @if !next.is_empty() { a href=(here(&next)) rel="next" { "Next page ›" } }
                }
            }
        },
    ))
}

/// The objects of `kind` in each of some namespaces: the first page of
/// each, whether any had more, and the resourceVersion of the last list.
struct Each {
    objects: Vec<Value>,
    more: bool,
    rv: String,
}

/// The objects of `kind` in each of `namespaces` (a page of each).
async fn each(
    ui: &Ui,
    token: &str,
    kind: &Kind,
    cluster: &str,
    namespaces: &[&str],
    failure: &mut Option<String>,
) -> Each {
    let mut out = Each {
        objects: Vec::new(),
        more: false,
        rv: String::new(),
    };
    for ns in namespaces {
        let path = format!("{}?limit={PAGE}", kind.collection(cluster, ns));
        match ui.api.get(&path, token).await {
            Ok(mut page) => {
                out.more |= !s(&page, "/metadata/continue").is_empty();
                out.rv = s(&page, "/metadata/resourceVersion").to_owned();
                if let Value::Array(items) = page["items"].take() {
                    out.objects.extend(items);
                }
            }
            // Namespaces the user sees but may not list this kind in.
            Err(UiError::Api { status: 403, .. }) => {}
            Err(e) => *failure = Some(e.to_string()),
        }
    }
    out
}

fn count_text(n: usize, kind: &Kind) -> String {
    match n {
        0 => format!("No {} here", kind.label.to_lowercase()),
        1 => format!("1 {}", kind.noun()),
        n => format!("{n} {}", kind.label.to_lowercase()),
    }
}

fn last_seen(e: &Value) -> &str {
    match s(e, "/lastTimestamp") {
        "" => match s(e, "/eventTime") {
            "" => s(e, "/metadata/creationTimestamp"),
            t => t,
        },
        t => t,
    }
}

/// The table's headings for `kind`.
pub(crate) fn columns(kind: &Kind) -> &'static [&'static str] {
    match kind.resource {
        "deployments" => &["Name", "Namespace", "Ready", "Up to date", "Images", "Age"],
        "statefulsets" => &["Name", "Namespace", "Ready", "Images", "Age"],
        "daemonsets" => &["Name", "Namespace", "Desired", "Ready", "Images", "Age"],
        "jobs" => &["Name", "Namespace", "Completions", "Status", "Age"],
        "cronjobs" => &[
            "Name",
            "Namespace",
            "Schedule",
            "Suspended",
            "Last run",
            "Age",
        ],
        "pods" => &[
            "Name",
            "Namespace",
            "Ready",
            "Status",
            "Restarts",
            "Node",
            "Age",
        ],
        "services" => &["Name", "Namespace", "Type", "Cluster IP", "Ports", "Age"],
        "ingresses" => &["Name", "Namespace", "Class", "Hosts", "Age"],
        "configmaps" => &["Name", "Namespace", "Keys", "Age"],
        "secrets" => &["Name", "Namespace", "Type", "Keys", "Age"],
        "persistentvolumeclaims" => &["Name", "Namespace", "Status", "Volume", "Capacity", "Age"],
        _ => &["Last seen", "Type", "Reason", "Object", "Message"],
    }
}

/// A pod's status as kubectl shows it, and whether it is healthy.
pub(crate) fn pod_status(p: &Value) -> (String, bool) {
    if !s(p, "/metadata/deletionTimestamp").is_empty() {
        return ("Terminating".into(), true);
    }
    let phase = s(p, "/status/phase");
    for c in p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for state in ["waiting", "terminated"] {
            let reason = s(c, &format!("/state/{state}/reason"));
            if !reason.is_empty() && reason != "Completed" {
                return (reason.to_owned(), false);
            }
        }
    }
    let phase = if phase.is_empty() { "Pending" } else { phase };
    (phase.to_owned(), matches!(phase, "Running" | "Succeeded"))
}

/// Ready containers of a pod, of all.
pub(crate) fn pod_ready(p: &Value) -> (usize, usize) {
    let statuses = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let all = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses
        .iter()
        .filter(|c| c["ready"] == Value::Bool(true))
        .count();
    (ready, all)
}

/// Restarts of a pod's containers.
pub(crate) fn restarts(p: &Value) -> i64 {
    p.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| num(c, "/restartCount"))
        .sum()
}

/// The images of a pod template.
pub(crate) fn images(template_spec: &Value) -> String {
    strings_of(template_spec, "containers", "image").join(", ")
}

fn strings_of<'a>(spec: &'a Value, list: &str, field: &str) -> Vec<&'a str> {
    spec[list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| s(c, &format!("/{field}")))
        .collect()
}

/// One row of the table.
pub(crate) fn row(kind: &Kind, cluster: &str, o: &Value) -> Markup {
    let name = s(o, "/metadata/name");
    let ns = s(o, "/metadata/namespace");
    let link = html! { a href=(object_url(cluster, kind.resource, ns, name)) { (name) } };
    let age = view::since(s(o, "/metadata/creationTimestamp"));
    let (warn, cells): (bool, Vec<Markup>) = match kind.resource {
        "deployments" | "statefulsets" => {
            let want = o
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let ready = num(o, "/status/readyReplicas");
            let mut cells = vec![link, html! { (ns) }, html! { (ready) "/" (want) }];
            if kind.resource == "deployments" {
                cells.push(html! { (num(o, "/status/updatedReplicas")) });
            }
            cells.push(html! { (images(&o["spec"]["template"]["spec"])) });
            cells.push(age);
            (ready < want, cells)
        }
        "daemonsets" => {
            let want = num(o, "/status/desiredNumberScheduled");
            let ready = num(o, "/status/numberReady");
            (
                ready < want,
                vec![
                    link,
                    html! { (ns) },
                    html! { (want) },
                    html! { (ready) },
                    html! { (images(&o["spec"]["template"]["spec"])) },
                    age,
                ],
            )
        }
        "jobs" => {
            let done = num(o, "/status/succeeded");
            let want = o
                .pointer("/spec/completions")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let failed = conditions(o)
                .iter()
                .any(|(t, st)| *t == "Failed" && *st == "True");
            let status = if failed {
                "Failed"
            } else if done >= want {
                "Complete"
            } else {
                "Running"
            };
            (
                failed,
                vec![
                    link,
                    html! { (ns) },
                    html! { (done) "/" (want) },
                    html! { (status) },
                    age,
                ],
            )
        }
        "cronjobs" => (
            false,
            vec![
                link,
                html! { (ns) },
                html! { code { (s(o, "/spec/schedule")) } },
                html! { (if o.pointer("/spec/suspend") == Some(&Value::Bool(true)) { "yes" } else { "no" }) },
                view::since(s(o, "/status/lastScheduleTime")),
                age,
            ],
        ),
        "pods" => {
            let (status, healthy) = pod_status(o);
            let (ready, all) = pod_ready(o);
            let r = restarts(o);
            (
                !healthy || r > 0,
                vec![
                    link,
                    html! { (ns) },
                    html! { (ready) "/" (all) },
                    html! { span.status data-ok=(healthy) { (status) } },
                    html! { (r) },
                    html! { (s(o, "/spec/nodeName")) },
                    age,
                ],
            )
        }
        "services" => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{}/{}",
                        p["port"],
                        match s(p, "/protocol") {
                            "" => "TCP",
                            x => x,
                        }
                    )
                })
                .collect();
            (
                false,
                vec![
                    link,
                    html! { (ns) },
                    html! { (s(o, "/spec/type")) },
                    html! { (s(o, "/spec/clusterIP")) },
                    html! { (ports.join(", ")) },
                    age,
                ],
            )
        }
        "ingresses" => {
            let hosts: Vec<&str> = o
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|r| s(r, "/host"))
                .filter(|h| !h.is_empty())
                .collect();
            (
                false,
                vec![
                    link,
                    html! { (ns) },
                    html! { (s(o, "/spec/ingressClassName")) },
                    html! { (hosts.join(", ")) },
                    age,
                ],
            )
        }
        "configmaps" => (
            false,
            vec![link, html! { (ns) }, html! { (keys(o).len()) }, age],
        ),
        "secrets" => (
            false,
            vec![
                link,
                html! { (ns) },
                html! { (s(o, "/type")) },
                html! { (keys(o).len()) },
                age,
            ],
        ),
        "persistentvolumeclaims" => (
            s(o, "/status/phase") != "Bound",
            vec![
                link,
                html! { (ns) },
                html! { (s(o, "/status/phase")) },
                html! { (s(o, "/spec/volumeName")) },
                html! { (s(o, "/status/capacity/storage")) },
                age,
            ],
        ),
        _ => {
            let warning = s(o, "/type") == "Warning";
            let object = format!(
                "{}/{}",
                s(o, "/involvedObject/kind").to_lowercase(),
                s(o, "/involvedObject/name")
            );
            (
                warning,
                vec![
                    view::since(last_seen(o)),
                    html! { (s(o, "/type")) },
                    html! { (s(o, "/reason")) },
                    html! { (object) },
                    html! { (s(o, "/message")) },
                ],
            )
        }
    };
    html! {
        tr data-name=(name) data-namespace=(ns) class=[warn.then_some("warn")] {
            @for c in cells { td { (c) } }
        }
    }
}

/// The keys of a ConfigMap's or Secret's data.
pub(crate) fn keys(o: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = ["/data", "/binaryData", "/stringData"]
        .iter()
        .filter_map(|p| o.pointer(p).and_then(Value::as_object))
        .flat_map(|m| m.keys().map(String::as_str))
        .collect();
    keys.sort_unstable();
    keys
}

/// An object's conditions as (type, status).
pub(crate) fn conditions(o: &Value) -> Vec<(&str, &str)> {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| (s(c, "/type"), s(c, "/status")))
        .collect()
}

#[derive(Deserialize)]
pub(crate) struct WatchQuery {
    #[serde(default)]
    ns: String,
    #[serde(default)]
    rv: String,
}

/// `GET /dashboard/clusters/{id}/explore/{resource}/watch`: a `change`
/// event whenever an object of the kind changes after `rv` (the page then
/// reloads its rows), `reload` when the watch cannot resume.
pub(crate) async fn watch(
    State(ui): State<Arc<Ui>>,
    Bearer(token): Bearer,
    Path((id, resource)): Path<(String, String)>,
    Query(q): Query<WatchQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, UiError> {
    let kind = find(&resource)?;
    let rv: String = q.rv.chars().filter(char::is_ascii_digit).collect();
    let path = format!(
        "{}?watch=true&resourceVersion={rv}",
        kind.collection(&id, &q.ns)
    );
    let events = ui.api.watch(&path, &token).await?;
    let events = events.filter_map(|event| async move {
        match event["type"].as_str()? {
            "ERROR" => Some(Ok(Event::default().event("reload").data("reload"))),
            "BOOKMARK" => None,
            _ => Some(Ok(Event::default()
                .event("change")
                .data(s(&event, "/object/metadata/resourceVersion")))),
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_status_reads_as_kubectl() {
        let running = json!({"status": {"phase": "Running", "containerStatuses": [{"ready": true, "state": {"running": {}}}]}});
        assert_eq!(pod_status(&running), ("Running".into(), true));
        let crash = json!({"status": {"phase": "Running", "containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(pod_status(&crash), ("CrashLoopBackOff".into(), false));
        let done = json!({"status": {"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"reason": "Completed"}}}]}});
        assert_eq!(pod_status(&done), ("Succeeded".into(), true));
        assert_eq!(pod_status(&json!({})), ("Pending".into(), false));
    }

    #[test]
    fn keys_of_data_are_sorted() {
        let cm = json!({"data": {"b": "1", "a": "2"}, "binaryData": {"c": ""}});
        assert_eq!(keys(&cm), ["a", "b", "c"]);
    }
}
