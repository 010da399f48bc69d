//! What a cluster's controller does for its projects beyond RBAC: reads
//! what the projection needs from the management API ([`Extras`]: the
//! cluster's Pod Security template and isolation setting, the projects'
//! secrets), puts the template's levels on the namespaces
//! ([`apply_pod_security`]), and reports back — where each project
//! secret's copies are and which namespaces hold a Secret of their own
//! under its name (the Secret's `status`), and each project's quota use
//! (the Project's `status`). Every write is fenced by the cluster's lease
//! and made only when it changes something.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use drover_core::{api, keys};
use drover_store::{Op, StoreError};
use serde_json::{json, Value};

use super::lease::Held;
use super::projection::{self, Kind, ObjectKey, Observed};
use super::Ctx;
use crate::kinds::{pod_security, project_secrets};
use crate::link::kube::{Client, DownstreamError};

/// What the projection reads from the management API besides the policy.
#[derive(Debug, Default, PartialEq)]
pub struct Extras {
    /// The cluster's Pod Security template: (name, spec).
    pub template: Option<(String, api::PodSecurityAdmissionConfigurationTemplateSpec)>,
    /// Whether the cluster asks for project network isolation.
    pub isolation: bool,
    /// Each project's secrets.
    pub secrets: BTreeMap<String, Vec<Value>>,
}

fn failed(e: StoreError) -> DownstreamError {
    DownstreamError::Body(format!("the datastore is unavailable: {e}"))
}

impl Extras {
    /// Read them for `cluster` and its `projects`.
    pub async fn read(
        ctx: &Ctx,
        cluster: &str,
        projects: impl Iterator<Item = &String>,
    ) -> Result<Self, DownstreamError> {
        let store = &ctx.store;
        let mut extras = Extras::default();
        let key = keys::object(api::GROUP, "clusters", None, cluster);
        if let Some(kv) = store.get(&key).await.map_err(failed)? {
            let obj: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            let spec: api::ClusterSpec =
                serde_json::from_value(obj["spec"].clone()).unwrap_or_default();
            extras.isolation = spec.project_network_isolation;
            if let Some(name) = spec.pod_security_admission_configuration_template_name {
                if let Some(t) = pod_security::get(store, &name).await.map_err(failed)? {
                    extras.template = Some((name, t));
                }
            }
        }
        for project in projects {
            let page = store
                .list(&drover_store::ListOptions {
                    prefix: project_secrets::prefix(project),
                    ..Default::default()
                })
                .await
                .map_err(failed)?;
            let secrets: Vec<Value> = page
                .items
                .iter()
                .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
                .filter(|s| !drover_apiserver::object::is_deleting(s))
                .collect();
            if !secrets.is_empty() {
                extras.secrets.insert(project.clone(), secrets);
            }
        }
        Ok(extras)
    }
}

/// Put the template's levels on the namespaces (or take Drover's off):
/// `namespaces` are the controller's slim namespaces.
pub async fn apply_pod_security(
    client: &Client,
    extras: &Extras,
    namespaces: &BTreeMap<String, Value>,
) -> Result<usize, DownstreamError> {
    let seen: BTreeMap<String, (BTreeMap<String, String>, Option<String>)> = namespaces
        .iter()
        .map(|(ns, slim)| {
            let labels = slim["podSecurity"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect();
            let by = slim["podSecurityTemplate"].as_str().map(str::to_owned);
            (ns.clone(), (labels, by))
        })
        .collect();
    let template = extras.template.as_ref().map(|(n, s)| (n.as_str(), s));
    let patches = projection::pod_security_patches(template, &seen);
    for (ns, patch) in &patches {
        client
            .call(
                Method::PATCH,
                &format!("/api/v1/namespaces/{ns}"),
                Some(patch),
                &[StatusCode::NOT_FOUND],
            )
            .await?;
    }
    Ok(patches.len())
}

/// The namespaces opted out of network isolation.
pub fn opted_out(namespaces: &BTreeMap<String, Value>) -> BTreeSet<String> {
    namespaces
        .iter()
        .filter(|(_, slim)| slim["isolated"] == json!(false))
        .map(|(ns, _)| ns.clone())
        .collect()
}

/// Set `status` of the object at `key` to `status`, fenced by the lease,
/// unless it already is.
async fn write_status(
    ctx: &Ctx,
    held: &Held,
    key: &str,
    status: &Value,
) -> Result<(), DownstreamError> {
    for _ in 0..10 {
        let Some(kv) = ctx.store.get(key).await.map_err(failed)? else {
            return Ok(());
        };
        let Ok(mut obj) = serde_json::from_slice::<Value>(&kv.value) else {
            return Ok(());
        };
        if &obj["status"] == status {
            return Ok(());
        }
        obj["status"] = status.clone();
        let write = Op::update(key.to_owned(), obj.to_string(), kv.mod_revision);
        match ctx.store.txn(&[held.fence(), write]).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { key: k, .. }) if k == key => continue,
            Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {
                return Err(DownstreamError::Fenced)
            }
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(())
}

/// What Drover last reported, so that an unchanged report writes nothing.
#[derive(Debug, Default)]
pub struct Reported {
    secrets: BTreeMap<(String, String), Value>,
    usage: BTreeMap<String, Value>,
}

impl Reported {
    /// Each project secret's copies and conflicts, from the projection's
    /// cache and the refusals its last reconcile met.
    pub async fn secrets(
        &mut self,
        ctx: &Ctx,
        held: &Held,
        extras: &Extras,
        members: &BTreeMap<String, String>,
        observed: &Observed,
        refused: &[(ObjectKey, String)],
    ) -> Result<(), DownstreamError> {
        for (project, secrets) in &extras.secrets {
            for secret in secrets {
                let name = secret["metadata"]["name"].as_str().unwrap_or_default();
                let mut copies = Vec::new();
                let mut clashes = Vec::new();
                for ns in members
                    .iter()
                    .filter(|(_, p)| *p == project)
                    .map(|(ns, _)| ns)
                {
                    let id = (Kind::Secret, ns.clone(), name.to_owned());
                    if let Some((_, why)) = refused.iter().find(|(r, _)| *r == id) {
                        clashes.push(json!({"namespace": ns, "message": why}));
                    } else if observed.objects.contains_key(&id) {
                        copies.push(json!(ns));
                    }
                }
                let mut status = json!({"copies": copies});
                if !clashes.is_empty() {
                    status["conflicts"] = json!(clashes);
                }
                let id = (project.clone(), name.to_owned());
                if self.secrets.get(&id) == Some(&status) {
                    continue;
                }
                let key = keys::object("", "secrets", Some(project), name);
                write_status(ctx, held, &key, &status).await?;
                self.secrets.insert(id, status);
            }
        }
        Ok(())
    }

    /// Each project's quota use.
    pub async fn usage(
        &mut self,
        ctx: &Ctx,
        held: &Held,
        cluster: &str,
        observed: &Observed,
        members: &BTreeMap<String, String>,
        projects: &BTreeMap<String, api::ProjectSpec>,
    ) -> Result<(), DownstreamError> {
        let usage = projection::quota_usage(observed, members, projects);
        for project in projects.keys() {
            let status = usage
                .get(project)
                .map(|s| serde_json::to_value(s).expect("plain data"))
                .unwrap_or_else(|| json!({}));
            if self.usage.get(project) == Some(&status) {
                continue;
            }
            let key = keys::object(api::GROUP, "projects", Some(cluster), project);
            write_status(ctx, held, &key, &status).await?;
            self.usage.insert(project.clone(), status);
        }
        Ok(())
    }
}
