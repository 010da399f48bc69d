//! The clusters table (filtered and paged by the server, live by
//! server-sent events), importing a cluster, and one cluster's page: its
//! nodes, projects and members, its kubeconfig, and its deletion.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, Method};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use futures::{Stream, StreamExt};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{seg, MGMT};
use crate::error::UiError;
use crate::pages::members;
use crate::session::{Bearer, Session};
use crate::view::{self, s, Section};
use crate::Ui;

/// Clusters per page of the table.
const PAGE_SIZE: usize = 50;

/// One row of the clusters table, also sent as a live event.
#[derive(Debug, serde::Serialize)]
struct Row {
    id: String,
    display: String,
    state: &'static str,
    version: String,
    nodes: String,
    cpu: String,
    memory: String,
}

impl Row {
    fn of(c: &Value) -> Row {
        let id = s(c, "/metadata/name").to_owned();
        let display = match s(c, "/spec/displayName") {
            "" => id.clone(),
            d => d.to_owned(),
        };
        Row {
            id,
            display,
            state: drover_core::api::cluster_state(c),
            version: match s(c, "/status/version") {
                "" => "–".into(),
                v => v.to_owned(),
            },
            nodes: c
                .pointer("/status/nodeCount")
                .and_then(Value::as_u64)
                .map(|n| n.to_string())
                .unwrap_or_else(|| "–".into()),
            cpu: view::cpu(c.pointer("/status/capacity/cpu").and_then(Value::as_str)),
            memory: view::memory(c.pointer("/status/capacity/memory").and_then(Value::as_str)),
        }
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    notice: Option<String>,
}

/// What a `?notice=` code says.
pub(crate) fn notice_text(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "password" => "Your password was changed.",
        "deleted" => "The cluster is being removed.",
        "member-added" => "The member was added.",
        "member-removed" => "The member was removed.",
        "project-created" => "The project was created.",
        "namespace-created" => "The namespace was created.",
        "namespace-moved" => "The namespace was moved.",
        "quota-saved" => "The quota was saved.",
        "user-created" => "The user was created.",
        "user-changed" => "The user was changed.",
        "key-deleted" => "The API key was deleted.",
        _ => return None,
    })
}

/// `GET /dashboard/clusters`.
pub(crate) async fn list(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Query(q): Query<ListQuery>,
) -> Result<Markup, UiError> {
    let list = ui
        .api
        .get(&format!("{MGMT}/clusters"), &session.token)
        .await?;
    let rv = s(&list, "/metadata/resourceVersion").to_owned();
    let needle = q.q.trim().to_lowercase();
    // Filter and sort by (display name, id); full rows only for the page.
    let mut matching: Vec<(String, &str, &Value)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let id = s(c, "/metadata/name");
            let display = match s(c, "/spec/displayName") {
                "" => id,
                d => d,
            };
            (display.to_lowercase(), id, c)
        })
        .filter(|(display, id, _)| {
            needle.is_empty() || display.contains(&needle) || id.contains(&needle)
        })
        .collect();
    matching.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let total = matching.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let shown: Vec<Row> = matching[(page - 1) * PAGE_SIZE..(page * PAGE_SIZE).min(total)]
        .iter()
        .map(|(_, _, c)| Row::of(c))
        .collect();
    let link = |p: usize| {
        let mut url = format!("/dashboard/clusters?page={p}");
        if !q.q.is_empty() {
            url.push_str("&q=");
            url.push_str(&seg(&q.q));
        }
        url
    };
    let firing = super::alerts::firing(&ui, &session.token, |_| true).await;
    // Health at a glance, over every cluster the user sees.
    let all = list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let unhealthy = all
        .iter()
        .filter(|c| drover_core::api::cluster_state(c) != "Active")
        .count();
    let nodes_not_ready: u64 = all
        .iter()
        .map(|c| {
            let n = c
                .pointer("/status/nodeCount")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let r = c
                .pointer("/status/nodesReady")
                .and_then(Value::as_u64)
                .unwrap_or(n);
            n.saturating_sub(r)
        })
        .sum();
    let pods_failing: u64 = all
        .iter()
        .filter_map(|c| c.pointer("/status/podsFailing").and_then(Value::as_u64))
        .sum();
    let may_import = session
        .rules
        .allows("create", "management.drover.io", "clusters");
    // New clusters appear live on the first, unfiltered page.
    let live_adds = page == 1 && needle.is_empty() && total < PAGE_SIZE;
    Ok(view::page(
        "Clusters",
        &session,
        Section::Clusters,
        html! {
            div.heading {
                h1 { "Clusters" }
                @if may_import {
                    a.button href="/dashboard/clusters/new" { "Import cluster" }
                }
            }
            (view::notice(notice_text(q.notice.as_deref())))
            ul.health #health aria-label="Fleet health" {
                li data-bad=(unhealthy > 0) { strong { (unhealthy) } " of " (all.len()) " clusters not Active" }
                li data-bad=(nodes_not_ready > 0) { strong { (nodes_not_ready) } " nodes not Ready" }
                li data-bad=(pods_failing > 0) title="Failed or Unknown, or Pending for over five minutes (a crash-looping pod is Running, and not counted)" { strong { (pods_failing) } " pods failing" }
            }
            (super::alerts::section(&firing))
            form.filter method="get" action="/dashboard/clusters" role="search" {
                label for="q" { "Filter by name" }
                input #q name="q" type="search" value=(q.q);
                button type="submit" { "Filter" }
            }
            p.count { (if total == 0 { "No clusters".to_owned() } else { format!("Showing {}–{} of {total}", (page - 1) * PAGE_SIZE + 1, (page - 1) * PAGE_SIZE + shown.len()) }) }
            div.scroll {
                table #clusters data-rv=(rv) data-live-adds=[live_adds.then_some("true")] {
                    thead { tr {
                        th scope="col" { "Name" }
                        th scope="col" { "State" }
                        th scope="col" { "Kubernetes version" }
                        th scope="col" { "Nodes" }
                        th scope="col" { "CPU" }
                        th scope="col" { "Memory" }
                    } }
                    tbody {
                        @for r in shown {
                            tr data-id=(r.id) {
                                td data-col="display" { a href={ "/dashboard/clusters/" (r.id) } { (r.display) } }
                                td data-col="state" { (view::badge(r.state)) }
                                td data-col="version" { (r.version) }
                                td data-col="nodes" { (r.nodes) }
                                td data-col="cpu" { (r.cpu) }
                                td data-col="memory" { (r.memory) }
                            }
                        }
                    }
                }
            }
            @if pages > 1 {
                nav.pages aria-label="Pages" {
                    @if page > 1 { a href=(link(page - 1)) rel="prev" { "‹ Previous" } }
                    span { "Page " (page) " of " (pages) }
                    @if page < pages { a href=(link(page + 1)) rel="next" { "Next ›" } }
                }
            }
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    #[serde(default)]
    rv: String,
    /// Only this cluster (its current state first).
    #[serde(default)]
    name: String,
}

/// `GET /dashboard/clusters/events`: the clusters' changes after `rv`, as
/// server-sent events carrying the new row.
pub(crate) async fn events(
    State(ui): State<Arc<Ui>>,
    Bearer(token): Bearer,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, UiError> {
    let rv: String = q.rv.chars().filter(char::is_ascii_digit).collect();
    let mut path = format!("{MGMT}/clusters?watch=true&resourceVersion={rv}");
    if !q.name.is_empty() {
        path.push_str("&fieldSelector=");
        path.push_str(&seg(&format!("metadata.name={}", q.name)));
    }
    let watch = ui.api.watch(&path, &token).await?;
    let events = watch.filter_map(|event| async move {
        let kind = event["type"].as_str()?;
        let object = &event["object"];
        if kind == "ERROR" {
            // Typically a resourceVersion too old: the page reloads.
            return Some(Ok(Event::default().event("reload").data("reload")));
        }
        let mut row = serde_json::to_value(Row::of(object)).ok()?;
        row["type"] = json!(kind);
        row["rv"] = json!(s(object, "/metadata/resourceVersion"));
        Some(Ok(Event::default().event("cluster").data(row.to_string())))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// `GET /dashboard/clusters/new`.
pub(crate) async fn new_page(session: Session) -> Markup {
    view::page(
        "Import cluster",
        &session,
        Section::Clusters,
        html! {
            h1 { "Import a cluster" }
            p { "Drover makes a registration command; run it on the cluster and its agent connects." }
            form method="post" action="/dashboard/clusters" {
                (view::csrf(&session))
                (view::text_field("Cluster name", "displayName", true))
                (view::text_field("Description (optional)", "description", false))
                button type="submit" { "Create and show the import command" }
            }
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct NewCluster {
    #[serde(rename = "displayName")]
    display_name: String,
    #[serde(default)]
    description: String,
}

/// `POST /dashboard/clusters`: create the cluster, then show its commands.
pub(crate) async fn create(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Form(form): Form<NewCluster>,
) -> Result<Response, UiError> {
    let mut spec = json!({"displayName": form.display_name.trim()});
    if !form.description.trim().is_empty() {
        spec["description"] = json!(form.description.trim());
    }
    let body = json!({"apiVersion": "management.drover.io/v1", "kind": "Cluster", "spec": spec});
    let c = ui
        .api
        .call(
            Method::POST,
            &format!("{MGMT}/clusters"),
            &session.token,
            Some(&body),
        )
        .await?;
    let id = s(&c, "/metadata/name");
    Ok(Redirect::to(&format!("/dashboard/clusters/{}/import", seg(id))).into_response())
}

/// `GET /dashboard/clusters/{id}/import`: the registration commands.
pub(crate) async fn import_page(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Markup, UiError> {
    let c = ui
        .api
        .get(&format!("{MGMT}/clusters/{}", seg(&id)), &session.token)
        .await?;
    let crt = ui
        .api
        .get(
            &format!(
                "{MGMT}/namespaces/{}/clusterregistrationtokens/default-token",
                seg(&id)
            ),
            &session.token,
        )
        .await?;
    let row = Row::of(&c);
    Ok(view::page(
        "Import cluster",
        &session,
        Section::Clusters,
        html! {
            h1 { "Import " (row.display) }
            p { "State: " span #import-state data-id=(row.id) { (view::badge(row.state)) } }
            h2 { "Run this on the cluster" }
            p { "With kubectl pointed at the cluster you are importing:" }
            pre #import-command { code { (s(&crt, "/status/command")) } }
            (view::copy_button("import-command", "Copy command"))
            h2 { "If the cluster cannot verify Drover's certificate" }
            p { "This fetches the manifest without checking the server's certificate; use it only on a network you trust." }
            pre #import-insecure { code { (s(&crt, "/status/insecureCommand")) } }
            (view::copy_button("import-insecure", "Copy command"))
            p { a href={ "/dashboard/clusters/" (seg(&id)) } { "Go to the cluster" } " · " a href="/dashboard/clusters" { "Back to the clusters" } }
        },
    ))
}

#[derive(Deserialize, Default)]
pub(crate) struct NoticeQuery {
    #[serde(default)]
    pub(crate) notice: Option<String>,
}

/// `GET /dashboard/clusters/{id}`.
pub(crate) async fn detail(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> Result<Markup, UiError> {
    render_detail(&ui, &session, &id, q.notice.as_deref(), None).await
}

/// A cluster's page, with `refused` beside the member form when adding a
/// member was refused.
pub(crate) async fn render_detail(
    ui: &Ui,
    session: &Session,
    id: &str,
    notice: Option<&str>,
    refused: Option<&members::Refused>,
) -> Result<Markup, UiError> {
    let (ui, session, id) = (ui, session, id.to_owned());
    let token = &session.token;
    let c = ui
        .api
        .get(&format!("{MGMT}/clusters/{}", seg(&id)), token)
        .await?;
    let row = Row::of(&c);
    // A cluster whose agent never connected has nothing to read yet (and
    // the proxy would wait for its link).
    let pending = row.state == "Pending";
    let nodes = if pending {
        Err(UiError::Internal("the agent has not connected".into()))
    } else {
        ui.api
            .items(&format!("/k8s/clusters/{}/api/v1/nodes", seg(&id)), token)
            .await
    };
    let namespaces = if pending {
        Vec::new()
    } else {
        ui.api
            .items(
                &format!("/k8s/clusters/{}/api/v1/namespaces", seg(&id)),
                token,
            )
            .await
            .unwrap_or_default()
    };
    let projects = ui
        .api
        .items(&format!("{MGMT}/namespaces/{}/projects", seg(&id)), token)
        .await
        .unwrap_or_default();
    let members_path = format!("{MGMT}/namespaces/{}/clusterroletemplatebindings", seg(&id));
    let bindings = ui.api.items(&members_path, token).await.unwrap_or_default();
    let rules = &session.rules;
    let may_members = rules.allows(
        "create",
        "management.drover.io",
        "clusterroletemplatebindings",
    );
    let may_remove = rules.allows(
        "delete",
        "management.drover.io",
        "clusterroletemplatebindings",
    );
    let member_form = members::form(
        ui,
        session,
        "cluster",
        &format!("/dashboard/clusters/{}/members", seg(&id)),
        &bindings,
        refused,
    )
    .await;
    let project_ids: Vec<&str> = projects.iter().map(|p| s(p, "/metadata/name")).collect();
    let firing = super::alerts::firing(ui, token, |ns| ns == id || project_ids.contains(&ns)).await;
    let base = format!("/dashboard/clusters/{}", seg(&id));
    let requested = if pending {
        None
    } else {
        requested(ui, token, &id).await
    };
    let role_labels = members::role_labels(ui, token).await;
    let may_import = rules.allows("get", "management.drover.io", "clusterregistrationtokens");
    let may_delete = rules.allows("delete", "management.drover.io", "clusters");
    let may_projects = rules.allows("create", "management.drover.io", "projects");
    Ok(view::page(
        &row.display,
        session,
        Section::Clusters,
        html! {
            div.heading {
                h1 { (row.display) }
                div.actions {
                    a.button href={ (base) "/explore" } { "Explore workloads" }
                    form method="post" action={ (base) "/kubeconfig" } data-native {
                        (view::csrf(session))
                        button.secondary type="submit" { "Download kubeconfig" }
                    }
                    @if may_import {
                        a.button.secondary href={ (base) "/import" } { "Import command" }
                    }
                    @if may_delete {
                        a.button.danger href={ (base) "/delete" } { "Delete cluster" }
                    }
                }
            }
            (view::notice(notice_text(notice)))
            dl.summary {
                dt { "State" } dd { span #cluster-state data-id=(row.id) { (view::badge(row.state)) } }
                dt { "ID" } dd { code { (row.id) } }
                dt { "Kubernetes version" } dd { (row.version) }
                dt { "Nodes" } dd { (row.nodes) }
                dt { "Pods failing" } dd #pods-failing { (c.pointer("/status/podsFailing").and_then(Value::as_u64).map_or("–".to_owned(), |n| n.to_string())) }
                dt { "CPU requested" } dd #cpu-requested { (usage(requested.map(|r| r.0), c.pointer("/status/allocatable/cpu"), view::cpu)) }
                dt { "Memory requested" } dd #memory-requested { (usage(requested.map(|r| r.1), c.pointer("/status/allocatable/memory"), view::memory)) }
                dt { "Last heartbeat" } dd { (view::since(s(&c, "/status/lastHeartbeat"))) }
            }
            (super::alerts::section(&firing))
            section aria-labelledby="nodes-h" {
                h2 #nodes-h { "Nodes" }
                @match &nodes {
                    Err(_) if pending => p.waiting #waiting { "Waiting for the agent: run the import command on the cluster, and its nodes show here once it connects." }
                    Err(e) => p.error { "The nodes cannot be read now: " (e) }
                    Ok(nodes) => div.scroll { table #nodes {
                        thead { tr {
                            th scope="col" { "Name" } th scope="col" { "Conditions" }
                            th scope="col" { "CPU" } th scope="col" { "Memory" } th scope="col" { "Kubelet" }
                        } }
                        tbody { @for n in nodes {
                            tr {
                                td { (s(n, "/metadata/name")) }
                                td { (node_conditions(n)) }
                                td { (view::cpu(n.pointer("/status/capacity/cpu").and_then(Value::as_str))) }
                                td { (view::memory(n.pointer("/status/capacity/memory").and_then(Value::as_str))) }
                                td { (s(n, "/status/nodeInfo/kubeletVersion")) }
                            }
                        } }
                    } }
                }
            }
            section aria-labelledby="projects-h" {
                h2 #projects-h { "Projects" }
                div.scroll { table #projects {
                    thead { tr { th scope="col" { "Project" } th scope="col" { "Namespaces" } } }
                    tbody { @for p in &projects {
                        @let pid = s(p, "/metadata/name");
                        tr {
                            td { a href={ (base) "/projects/" (seg(pid)) } { (project_name(p)) } }
                            td { (project_namespaces(&namespaces, &id, pid).join(", ")) }
                        }
                    } }
                } }
                @if may_projects {
                    form.inline method="post" action={ (base) "/projects" } {
                        (view::csrf(session))
                        (view::text_field("New project name", "displayName", true))
                        button type="submit" { "Create project" }
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

/// CPU (millicores) and memory (milli-bytes) that the pods not yet
/// finished request, as kube's scheduler counts them (the larger of the
/// containers' sum and any init container).
async fn requested(ui: &Ui, token: &str, id: &str) -> Option<(i128, i128)> {
    let pods = ui
        .api
        .items(
            &format!(
                "/k8s/clusters/{}/api/v1/pods?fieldSelector={}",
                seg(id),
                seg("status.phase!=Succeeded,status.phase!=Failed")
            ),
            token,
        )
        .await
        .ok()?;
    let q = |c: &Value, r: &str| {
        c.pointer(&format!("/resources/requests/{r}"))
            .and_then(Value::as_str)
            .and_then(drover_core::quantity::parse)
            .unwrap_or(0)
    };
    let sum = |list: &Value, r: &str| {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|c| q(c, r))
            .sum::<i128>()
    };
    let max = |list: &Value, r: &str| {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|c| q(c, r))
            .max()
            .unwrap_or(0)
    };
    Some(pods.iter().fold((0, 0), |(cpu, mem), p| {
        let spec = &p["spec"];
        (
            cpu + sum(&spec["containers"], "cpu").max(max(&spec["initContainers"], "cpu")),
            mem + sum(&spec["containers"], "memory").max(max(&spec["initContainers"], "memory")),
        )
    }))
}

/// "1.5 of 40 (4%)": requested against allocatable.
fn usage(
    requested: Option<i128>,
    allocatable: Option<&Value>,
    show: fn(Option<&str>) -> String,
) -> Markup {
    let alloc = allocatable.and_then(Value::as_str);
    let Some(req) = requested else {
        return html! { "–" };
    };
    let req_text = format!("{req}m");
    let total = alloc.and_then(drover_core::quantity::parse).unwrap_or(0);
    let share = if total > 0 { req * 100 / total } else { 0 };
    html! {
        (show(Some(&req_text))) " of " (show(alloc)) " allocatable"
        @if total > 0 {
            " " meter min="0" max=(total) value=(req.min(total)) aria-label="share requested" {} " " (share) "%"
        }
    }
}

/// A project's display name, or its id.
pub(crate) fn project_name(p: &Value) -> &str {
    match s(p, "/spec/displayName") {
        "" => s(p, "/metadata/name"),
        d => d,
    }
}

/// The names of the namespaces of project `pid` in `cluster`.
pub(crate) fn project_namespaces<'a>(
    namespaces: &'a [Value],
    cluster: &str,
    pid: &str,
) -> Vec<&'a str> {
    let want = format!("{cluster}:{pid}");
    namespaces
        .iter()
        .filter(|n| {
            n.pointer("/metadata/annotations/drover.io~1project-id")
                .and_then(Value::as_str)
                == Some(want.as_str())
        })
        .map(|n| s(n, "/metadata/name"))
        .collect()
}

fn node_conditions(n: &Value) -> Markup {
    let conditions: Vec<&Value> = n
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    html! {
        @for c in conditions {
            @let t = s(c, "/type");
            @let st = s(c, "/status");
            // Ready should be True; the pressure conditions should be False.
            @let good = (t == "Ready") == (st == "True");
            span class=(if good { "cond ok" } else { "cond bad" }) { (t) "=" (st) } " "
        }
    }
}

/// `POST /dashboard/clusters/{id}/kubeconfig`: a kubeconfig to download.
pub(crate) async fn kubeconfig(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let yaml = ui
        .api
        .bytes(
            Method::POST,
            &format!("{MGMT}/clusters/{}/kubeconfig", seg(&id)),
            &session.token,
        )
        .await?;
    let file: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "application/yaml".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}.kubeconfig.yaml\""),
            ),
        ],
        yaml,
    )
        .into_response())
}

/// `GET /dashboard/clusters/{id}/delete`: ask first.
pub(crate) async fn delete_page(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Markup, UiError> {
    let c = ui
        .api
        .get(&format!("{MGMT}/clusters/{}", seg(&id)), &session.token)
        .await?;
    let row = Row::of(&c);
    Ok(view::page(
        "Delete cluster",
        &session,
        Section::Clusters,
        html! {
            h1 { "Delete " (row.display) "?" }
            p { "Drover removes its agent and everything it made in the cluster, and revokes the cluster's tokens. The cluster itself keeps running." }
            (view::confirm_delete(
                &session,
                &format!("/dashboard/clusters/{}/delete", seg(&id)),
                &row.id,
                "Delete cluster",
                &format!("/dashboard/clusters/{}", seg(&id)),
            ))
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct Confirm {
    confirm: String,
}

/// `POST /dashboard/clusters/{id}/delete`.
pub(crate) async fn delete(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<Confirm>,
) -> Result<Response, UiError> {
    if form.confirm.trim() != id {
        return Err(UiError::BadRequest(format!(
            "type the cluster's id {id:?} to delete it"
        )));
    }
    ui.api
        .call(
            Method::DELETE,
            &format!("{MGMT}/clusters/{}", seg(&id)),
            &session.token,
            None,
        )
        .await?;
    Ok(Redirect::to("/dashboard/clusters?notice=deleted").into_response())
}

#[derive(Deserialize)]
pub(crate) struct NewProject {
    #[serde(rename = "displayName")]
    display_name: String,
}

/// `POST /dashboard/clusters/{id}/projects`.
pub(crate) async fn create_project(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<NewProject>,
) -> Result<Response, UiError> {
    let body = json!({"apiVersion": "management.drover.io/v1", "kind": "Project",
        "spec": {"displayName": form.display_name.trim(), "clusterName": id}});
    ui.api
        .call(
            Method::POST,
            &format!("{MGMT}/namespaces/{}/projects", seg(&id)),
            &session.token,
            Some(&body),
        )
        .await?;
    Ok(Redirect::to(&format!(
        "/dashboard/clusters/{}?notice=project-created",
        seg(&id)
    ))
    .into_response())
}
