//! What a cluster's controller does for its projects beyond RBAC: reads
//! what the projection needs from the management API ([`Extras`]: the
//! cluster's Pod Security template and isolation setting, the projects'
//! secrets), puts the template's levels on the namespaces
//! ([`apply_pod_security`]), and reports back — where each project
//! secret's copies are and which namespaces hold a Secret of their own
//! under its name (the Secret's `status`), and each project's quota use
//! (the Project's `status`). Every write is fenced by the cluster's lease
//! and made only when it changes something.
//!
//! [`InputChanges`] is one watch of the store for project secrets and
//! templates, shared by every cluster's controller in the process: a store
//! watcher wakes for every write in the fleet, so one per controller would
//! cost a thousand wake-ups per heartbeat at a thousand clusters.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use drover_core::{api, keys};
use drover_store::StoreError;
use serde_json::{json, Value};

use super::lease::{Held, Updated};
use super::projection::{self, Kind, ObjectKey, Observed};
use super::Ctx;
use crate::kinds::{pod_security, project_secrets};
use crate::link::kube::{Client, DownstreamError};

/// A change the projection must see: a project's secret, or any Pod
/// Security template (or, after a broken watch, possibly anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// A secret of this project was written or deleted.
    Secret(String),
    /// A template was written or deleted.
    Template,
    /// The watch broke: anything may have changed.
    Anything,
}

/// The shared watch of project secrets and Pod Security templates.
#[derive(Debug)]
pub struct InputChanges {
    tx: tokio::sync::broadcast::Sender<Changed>,
}

impl InputChanges {
    /// Start following the store until `stop`.
    pub fn start(
        store: drover_store::Store,
        stop: tokio_util::sync::CancellationToken,
    ) -> std::sync::Arc<Self> {
        let (tx, _) = tokio::sync::broadcast::channel(1024);
        let hub = std::sync::Arc::new(Self { tx: tx.clone() });
        tokio::spawn(async move {
            use futures::StreamExt;
            let secrets_prefix = keys::prefix("", "secrets", None);
            let templates_prefix = keys::prefix(api::GROUP, pod_security::PLURAL, None);
            let mut backoff = super::Backoff::default();
            loop {
                let from = match store.revisions().await {
                    Ok(r) => r.current,
                    Err(_) => {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(backoff.next_wait()) => continue,
                        }
                    }
                };
                let mut secrets = store.watch(&secrets_prefix, from);
                let mut templates = store.watch(&templates_prefix, from);
                loop {
                    let event = tokio::select! {
                        () = stop.cancelled() => return,
                        e = secrets.next() => e,
                        e = templates.next() => e,
                    };
                    let Some(Ok(event)) = event else { break };
                    backoff.reset();
                    let changed = match event
                        .kv
                        .key
                        .strip_prefix(&secrets_prefix)
                        .and_then(|rest| rest.split('/').next())
                    {
                        Some(project) => Changed::Secret(project.to_owned()),
                        None => Changed::Template,
                    };
                    let _ = tx.send(changed);
                }
                // Whatever was missed while it was down.
                let _ = tx.send(Changed::Anything);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff.next_wait()) => {}
                }
            }
        });
        hub
    }

    /// The changes from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Changed> {
        self.tx.subscribe()
    }
}

/// What the projection reads from the management API besides the policy.
#[derive(Debug, Default, PartialEq)]
pub struct Extras {
    /// The cluster's Pod Security template: (name, spec).
    pub template: Option<(String, api::PodSecurityAdmissionConfigurationTemplateSpec)>,
    /// The cluster names a template that is not there: its namespaces'
    /// levels are left as they are.
    pub template_missing: bool,
    /// Whether the cluster asks for project network isolation.
    pub isolation: bool,
    /// Each project's secrets.
    pub secrets: BTreeMap<String, Vec<Value>>,
}

fn failed(e: StoreError) -> DownstreamError {
    DownstreamError::Body(format!("the datastore is unavailable: {e}"))
}

impl Extras {
    /// Read them for `cluster` (whose `spec` the controller's watch keeps)
    /// and its `projects`.
    pub async fn read(
        ctx: &Ctx,
        cluster: &str,
        spec: &api::ClusterSpec,
        projects: impl Iterator<Item = &String>,
    ) -> Result<Self, DownstreamError> {
        let store = &ctx.store;
        let mut extras = Extras {
            isolation: spec.project_network_isolation,
            ..Default::default()
        };
        if let Some(name) = &spec.pod_security_admission_configuration_template_name {
            match pod_security::get(store, name).await.map_err(failed)? {
                Some(t) => extras.template = Some((name.clone(), t)),
                None => {
                    tracing::warn!(%cluster, template = %name, "the cluster names a Pod Security template that does not exist; its namespaces' levels are left as they are");
                    extras.template_missing = true;
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
    if extras.template_missing {
        // Named but not found: the levels stay as they are.
        return Ok(0);
    }
    let template = extras.template.as_ref().map(|(n, s)| (n.as_str(), s));
    let patches = projection::pod_security_patches(template, &seen);
    for (ns, patch) in &patches {
        let done = client
            .call(
                Method::PATCH,
                &format!("/api/v1/namespaces/{ns}"),
                Some(patch),
                &[StatusCode::NOT_FOUND],
            )
            .await;
        match done {
            Ok(_) => {}
            // Refused (an admission webhook, a namespace going away): the
            // rest go on, and this one is tried again at the next pass.
            Err(DownstreamError::Status { status, message }) if status.is_client_error() => {
                tracing::warn!(cluster = client.cluster(), namespace = %ns, %status, %message, "cannot set the namespace's Pod Security levels");
            }
            Err(e) => return Err(e),
        }
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
/// unless it already is (an empty status is no status); whether the object
/// now has it.
async fn write_status(
    ctx: &Ctx,
    held: &Held,
    key: &str,
    status: &Value,
) -> Result<bool, DownstreamError> {
    let empty = |v: &Value| v.is_null() || v.as_object().is_some_and(|m| m.is_empty());
    let updated = held
        .update(&ctx.store, key, |obj| {
            if &obj["status"] == status || (empty(&obj["status"]) && empty(status)) {
                return false;
            }
            obj["status"] = status.clone();
            true
        })
        .await
        .map_err(failed)?;
    match updated {
        Updated::Done => Ok(true),
        Updated::Gone | Updated::Contended => Ok(false),
        Updated::LostLease => Err(DownstreamError::Fenced),
    }
}

/// What Drover last reported, so that an unchanged report writes nothing.
#[derive(Debug, Default)]
pub struct Reported {
    secrets: BTreeMap<(String, String), Value>,
    usage: BTreeMap<String, Value>,
    /// When each project's use was last written: use moves with every pod,
    /// and is written at most every [`USAGE_EVERY`].
    usage_written: BTreeMap<String, std::time::Instant>,
    /// A change of use is waiting for its turn.
    usage_pending: bool,
}

/// How often a project's use is written at most.
pub const USAGE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

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
                // By UID: a secret made again under the same name is
                // reported afresh.
                let uid = secret["metadata"]["uid"].as_str().unwrap_or_default();
                let id = (project.clone(), format!("{name}/{uid}"));
                if self.secrets.get(&id) == Some(&status) {
                    continue;
                }
                let key = keys::object("", "secrets", Some(project), name);
                if write_status(ctx, held, &key, &status).await? {
                    self.secrets.insert(id, status);
                }
            }
        }
        Ok(())
    }

    /// Whether a change of use waits to be written.
    pub fn usage_pending(&self) -> bool {
        self.usage_pending
    }

    /// Each project's quota use (a project written less than
    /// [`USAGE_EVERY`] ago waits: see [`Reported::usage_pending`]).
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
        self.usage_pending = false;
        for project in projects.keys() {
            let status = usage
                .get(project)
                .map(|s| serde_json::to_value(s).expect("plain data"))
                .unwrap_or_else(|| json!({}));
            if self.usage.get(project) == Some(&status) {
                continue;
            }
            let recently = self
                .usage_written
                .get(project)
                .is_some_and(|at| at.elapsed() < USAGE_EVERY);
            if recently {
                self.usage_pending = true;
                continue;
            }
            self.usage_written
                .insert(project.clone(), std::time::Instant::now());
            let key = keys::object(api::GROUP, "projects", Some(cluster), project);
            if write_status(ctx, held, &key, &status).await? {
                self.usage.insert(project.clone(), status);
            }
        }
        Ok(())
    }
}
