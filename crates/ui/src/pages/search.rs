//! The search every page's header carries (`/` focuses it): clusters and
//! projects whose name or id holds the words, and namespaces of that name
//! in the clusters the user reaches (looked up in at most
//! [`NAMESPACE_CLUSTERS`] connected clusters, so a search stays quick in a
//! large fleet).

use std::sync::Arc;

use axum::extract::{Query, State};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use crate::api::{seg, MGMT};
use crate::error::UiError;
use crate::pages::clusters::project_name;
use crate::session::Session;
use crate::view::{self, s, Section};
use crate::Ui;

/// How many clusters a search looks for namespaces in.
const NAMESPACE_CLUSTERS: usize = 25;

/// Results of each kind shown.
const SHOWN: usize = 50;

#[derive(Deserialize, Default)]
pub(crate) struct SearchQuery {
    #[serde(default)]
    q: String,
}

fn display(c: &Value) -> &str {
    match s(c, "/spec/displayName") {
        "" => s(c, "/metadata/name"),
        d => d,
    }
}

/// `GET /dashboard/search?q=`.
pub(crate) async fn search(
    State(ui): State<Arc<Ui>>,
    session: Session,
    Query(q): Query<SearchQuery>,
) -> Result<Markup, UiError> {
    let token = &session.token;
    let needle = q.q.trim().to_lowercase();
    let hit = |text: &str| !needle.is_empty() && text.to_lowercase().contains(&needle);
    let clusters = ui.api.items(&format!("{MGMT}/clusters"), token).await?;
    let found_clusters: Vec<&Value> = clusters
        .iter()
        .filter(|c| hit(display(c)) || hit(s(c, "/metadata/name")))
        .take(SHOWN)
        .collect();
    let projects = ui
        .api
        .items(&format!("{MGMT}/projects"), token)
        .await
        .unwrap_or_default();
    let found_projects: Vec<&Value> = projects
        .iter()
        .filter(|p| hit(project_name(p)) || hit(s(p, "/metadata/name")))
        .take(SHOWN)
        .collect();
    let mut found_namespaces = Vec::new();
    if !needle.is_empty() {
        let connected = clusters
            .iter()
            .filter(|c| drover_core::api::cluster_state(c) == "Active")
            .take(NAMESPACE_CLUSTERS);
        for c in connected {
            let id = s(c, "/metadata/name");
            let names = crate::explorer::list::namespaces(&ui, token, id)
                .await
                .unwrap_or_default();
            for (ns, _) in names.into_iter().filter(|(n, _)| hit(n)) {
                found_namespaces.push((id.to_owned(), display(c).to_owned(), ns));
            }
        }
        found_namespaces.truncate(SHOWN);
    }
    let cluster_of = |id: &str| {
        clusters
            .iter()
            .find(|c| s(c, "/metadata/name") == id)
            .map_or(id.to_owned(), |c| display(c).to_owned())
    };
    let nothing =
        found_clusters.is_empty() && found_projects.is_empty() && found_namespaces.is_empty();
    Ok(view::page(
        "Search",
        &session,
        Section::Clusters,
        html! {
            h1 { "Search" }
            form.filter method="get" action="/dashboard/search" role="search" {
                label for="q" { "Clusters, projects and namespaces named" }
                input #q name="q" type="search" value=(q.q);
                button type="submit" { "Search" }
            }
            @if nothing && !needle.is_empty() {
                p #no-results { "Nothing matches " strong { (q.q) } "." }
            }
            @if !found_clusters.is_empty() {
                h2 { "Clusters" }
                ul #found-clusters { @for c in &found_clusters {
                    li { a href={ "/dashboard/clusters/" (seg(s(c, "/metadata/name"))) } { (display(c)) } }
                } }
            }
            @if !found_projects.is_empty() {
                h2 { "Projects" }
                ul #found-projects { @for p in &found_projects {
                    @let cluster = s(p, "/metadata/namespace");
                    li { a href={ "/dashboard/clusters/" (seg(cluster)) "/projects/" (seg(s(p, "/metadata/name"))) } { (project_name(p)) }
                        " in " (cluster_of(cluster)) }
                } }
            }
            @if !found_namespaces.is_empty() {
                h2 { "Namespaces" }
                ul #found-namespaces { @for (id, name, ns) in &found_namespaces {
                    li { a href={ "/dashboard/clusters/" (seg(id)) "/explore?ns=" (seg(ns)) } { (ns) } " in " (name) }
                } }
            }
        },
    ))
}
