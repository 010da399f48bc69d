//! Which project each of a cluster's namespaces is in, from the namespaces'
//! annotations and Drover's records of them ([`crate::kinds::namespaces`]),
//! worked out by the cluster's owner:
//!
//! - `default` joins the Default project, and the system namespaces the
//!   System project, when Drover first sees them;
//! - a record of a namespace that is gone, or was made again (its UID
//!   differs), is dropped; a record kept from before UIDs gets its UID;
//! - an annotation Drover's record disagrees with is set to the record
//!   (a project deleted with its namespaces moved to Default), unless it
//!   names another existing project — a change made around Drover, which
//!   is not adopted and is logged once.
//!
//! Records are written under the cluster's lease.

use std::collections::{BTreeMap, HashSet};

use axum::http::{Method, StatusCode};
use drover_store::Op;
use serde_json::{json, Value};

use super::projection;
use super::Ctx;
use crate::kinds::namespaces::{self, Record};
use crate::kinds::pod_security;
use crate::kinds::registration::AGENT_NAMESPACE;
use crate::link::kube::{Client, DownstreamError};

/// The namespaces the System project holds from the start.
const SYSTEM_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    AGENT_NAMESPACE,
];

/// A namespace as the cluster's controller needs it: its project
/// annotation (null when unset) and its UID, for membership; its Pod
/// Security labels and the template Drover labelled it for; whether it
/// opted out of project network isolation.
pub fn slim(ns: &Value) -> Value {
    let annotations = &ns["metadata"]["annotations"];
    let pod_security: serde_json::Map<String, Value> = ns["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("pod-security.kubernetes.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    json!({
        "project": annotations.get(namespaces::PROJECT_ANNOTATION).cloned().unwrap_or(Value::Null),
        "uid": ns.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
        "podSecurity": pod_security,
        "podSecurityTemplate": annotations.get(pod_security::TEMPLATE_ANNOTATION).cloned().unwrap_or(Value::Null),
        "isolated": annotations.get(projection::ISOLATION_ANNOTATION).and_then(Value::as_str) != Some("false"),
    })
}

/// What one cluster's owner remembers between runs.
#[derive(Debug, Default)]
pub struct Membership {
    /// (namespace, annotation) pairs already reported as not adopted.
    refused: HashSet<(String, String)>,
    /// Namespaces seen to exist: a record is dropped only when its
    /// namespace was seen and is gone (a namespace just made through the
    /// proxy may be recorded before its watch event arrives here).
    seen: HashSet<String>,
}

fn failed(e: drover_apiserver::ApiError) -> DownstreamError {
    DownstreamError::Body(e.to_string())
}

impl Membership {
    /// Namespace → project, for the namespaces the cluster has now
    /// (`namespaces`: name → [`slim`]), and the cluster's System project.
    /// `fence` keeps each record write to the lease it is made under.
    pub async fn work_out(
        &mut self,
        ctx: &Ctx,
        client: &Client,
        fence: &Op,
        namespaces: &BTreeMap<String, Value>,
    ) -> Result<(BTreeMap<String, String>, Option<String>), DownstreamError> {
        let cluster = client.cluster();
        let store = &ctx.store;
        let mut records = namespaces::records(store, cluster).await.map_err(failed)?;
        let projects = namespaces::project_objects(store, cluster).await;
        let exists = |p: &str| projects.iter().any(|(n, _)| n == p);
        let (default_project, system_project) = namespaces::system_projects(&projects);
        let uid_of = |ns: &str| {
            namespaces
                .get(ns)
                .and_then(|v| v["uid"].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let write = |ns: &str, before: Option<&drover_store::KeyValue>, record: Option<&Record>| {
            let ns = ns.to_owned();
            let before = before.cloned();
            let record = record.cloned();
            async move {
                namespaces::set_record(
                    store,
                    cluster,
                    &ns,
                    before.as_ref(),
                    record.as_ref(),
                    Some(fence),
                )
                .await
                .map_err(failed)
            }
        };
        let stale: Vec<String> = records
            .iter()
            .filter(|(ns, (record, _))| match namespaces.get(*ns) {
                None => self.seen.contains(*ns),
                Some(_) => !record.is_for(&uid_of(ns)),
            })
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in stale {
            let (_, kv) = records.remove(&ns).expect("listed");
            write(&ns, Some(&kv), None).await?;
            self.seen.remove(&ns);
        }
        self.seen.extend(namespaces.keys().cloned());
        let mut members = BTreeMap::new();
        for (ns, seen) in namespaces {
            let annotation = seen["project"].as_str();
            let uid = uid_of(ns);
            let project = match (records.get(ns), annotation) {
                (None, None) => {
                    let home = if ns == "default" {
                        default_project.clone()
                    } else if SYSTEM_NAMESPACES.contains(&ns.as_str()) {
                        system_project.clone()
                    } else {
                        None
                    };
                    let Some(home) = home else { continue };
                    let record = Record {
                        project: home.clone(),
                        uid: Some(uid.clone()),
                    };
                    write(ns, None, Some(&record)).await?;
                    Some(home)
                }
                (Some((record, kv)), _) if record.uid.is_none() && !uid.is_empty() => {
                    let stamped = Record {
                        project: record.project.clone(),
                        uid: Some(uid.clone()),
                    };
                    write(ns, Some(kv), Some(&stamped)).await?;
                    Some(record.project.clone())
                }
                (r, _) => r.map(|(record, _)| record.project.clone()),
            };
            let Some(project) = project else {
                if let Some(a) = annotation {
                    if self.refused.insert((ns.clone(), a.to_owned())) {
                        tracing::warn!(%cluster, namespace = %ns, annotation = a, "namespace not adopted: its project annotation was not set through Drover by someone allowed to use the project");
                    }
                }
                continue;
            };
            let wanted = format!("{cluster}:{project}");
            match annotation {
                Some(a) if a == wanted => {}
                Some(a)
                    if a.split_once(':')
                        .is_some_and(|(c, p)| c == cluster && exists(p)) =>
                {
                    if self.refused.insert((ns.clone(), a.to_owned())) {
                        tracing::warn!(%cluster, namespace = %ns, annotation = a, "namespace not adopted by the project its annotation names: the change did not go through Drover");
                    }
                    continue;
                }
                _ => {
                    // Drover's record stands: set the annotation to match.
                    let patch = json!({"metadata": {"annotations": {namespaces::PROJECT_ANNOTATION: wanted}}});
                    client
                        .call(
                            Method::PATCH,
                            &format!("/api/v1/namespaces/{ns}"),
                            Some(&patch),
                            &[StatusCode::NOT_FOUND],
                        )
                        .await?;
                }
            }
            if exists(&project) {
                members.insert(ns.clone(), project);
            }
        }
        Ok((members, system_project))
    }
}
