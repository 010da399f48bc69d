//! One cluster's controller, on the replica holding the cluster's lease,
//! reaching the cluster through the [`Dialer`] wherever its link is.
//!
//! - Status (only this controller writes it, fenced by the lease):
//!   `Connected` and `Ready` follow the store's record of the cluster's
//!   link and the liveness of the replica holding it — never one replica's
//!   memory. A link gone (its record deleted) shows as `Connected=False`
//!   after [`LINK_GRACE`], giving a reconnecting agent a moment; a link
//!   whose holder is gone, [`HOLDER_DEADLINE`] after the holder's last
//!   renewal.
//!   While connected: `version`, `nodeCount`, `nodesReady`, summed
//!   `capacity` and `allocatable` from a node watch (whose nodes the
//!   cluster's alert rules read too), and `lastHeartbeat` and
//!   `podsFailing` ([`pods_failing`]) every [`HEARTBEAT`]. The first status is written after the first
//!   projection, so a cluster is Ready only once its members can use it.
//! - Projection: global admins and the cluster's owners as `cluster-admin`
//!   bindings, the templates in use, a binding per subject and namespace,
//!   project quotas and limit ranges ([`projection`]); worked out again on
//!   every change of the policy (pushed, never polled), of the namespaces
//!   (a watch), of Drover's records of them, and reconciled against a
//!   cache the drift watches keep, so an edit or deletion in the cluster is
//!   repaired at once; everything is listed again every [`DRIFT_CHECK`].
//! - Removal: a deleting Cluster is removed ([`super::removal`]).
//!
//! A connected session ends when a watch ends or the link moves; the
//! controller then starts again, with backoff after a failure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drover_core::api::{self, ClusterStatus};
use drover_core::{keys, meta, quantity};
use drover_store::StoreError;
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::lease::{Held, Updated};
use super::membership::{self, Membership};
use super::projection::{self, Observed};
use super::projects;
use super::{set_condition, Backoff, Ctx};
use crate::kinds::management::CLEANUP_FINALIZER;
use crate::kinds::namespaces;
use crate::link::kube::{self, Client, DownstreamError};
use crate::link::{records, Route};

/// How often `lastHeartbeat` is written while nothing else changes.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// How often everything is listed again, besides the watches.
const DRIFT_CHECK: Duration = Duration::from_secs(300);
/// How long a cluster whose link record went away stays Connected, for its
/// agent to reconnect.
pub const LINK_GRACE: Duration = Duration::from_secs(3);
/// How long after the last renewal of a link's holder that is gone (killed,
/// frozen, cut off) the cluster shows as not connected: past the replicas'
/// TTL, and within 10 s of the last sign of life.
pub const HOLDER_DEADLINE: Duration = Duration::from_millis(8500);

/// When replica `id` last renewed its record (`None`: no record left).
fn holder_silent_since(ctx: &Ctx, id: &str) -> Option<std::time::SystemTime> {
    ctx.registry
        .members()
        .records
        .get(id)
        .and_then(|r| meta::parse_rfc3339(&r.renewed))
}

fn cluster_key(name: &str) -> String {
    keys::object(api::GROUP, "clusters", None, name)
}

/// Why a connected session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Downstream(#[from] DownstreamError),
    #[error("the datastore failed: {0}")]
    Store(#[from] StoreError),
    /// The lease changed hands: nothing more may be written.
    #[error("the cluster's lease changed hands")]
    LostLease,
}

/// Writes the cluster's status, fenced by its lease.
struct Status<'a> {
    ctx: &'a Ctx,
    cluster: &'a str,
    held: &'a Held,
}

impl Status<'_> {
    /// Change the status (and the object, for the finalizer) with `change`;
    /// written only if it says something changed.
    async fn write(
        &self,
        change: impl Fn(&mut Value, &mut ClusterStatus) -> bool,
    ) -> Result<(), SessionError> {
        if !self.ctx.registry.may_act() {
            return Err(SessionError::LostLease);
        }
        let updated = self
            .held
            .update(&self.ctx.store, &cluster_key(self.cluster), |obj| {
                let mut status: ClusterStatus =
                    serde_json::from_value(obj["status"].clone()).unwrap_or_default();
                if !change(obj, &mut status) {
                    return false;
                }
                obj["status"] = serde_json::to_value(&status).expect("plain data");
                true
            })
            .await?;
        match updated {
            Updated::LostLease => Err(SessionError::LostLease),
            Updated::Done | Updated::Gone | Updated::Contended => Ok(()),
        }
    }

    async fn connected(
        &self,
        version: &str,
        sums: &NodeSums,
        failing: Option<u32>,
    ) -> Result<(), SessionError> {
        let now = meta::now_rfc3339();
        self.write(|obj, status| {
            if !drover_apiserver::object::is_deleting(obj) {
                // Once an agent connected, removal waits for downstream
                // cleanup (a cluster never connected goes at once).
                let meta = obj["metadata"].as_object_mut().expect("a stored object");
                let list = meta.entry("finalizers").or_insert_with(|| json!([]));
                if let Some(list) = list.as_array_mut() {
                    if !list.iter().any(|f| f == CLEANUP_FINALIZER) {
                        list.push(json!(CLEANUP_FINALIZER));
                    }
                }
            }
            status.version = Some(version.to_owned());
            status.node_count = Some(sums.count as u32);
            status.nodes_ready = Some(sums.ready as u32);
            if failing.is_some() {
                status.pods_failing = failing;
            }
            status.capacity = sums.capacity.clone();
            status.allocatable = sums.allocatable.clone();
            status.last_heartbeat = Some(now.clone());
            set_condition(
                &mut status.conditions,
                "Connected",
                "True",
                "AgentConnected",
                "the cluster agent is connected",
            );
            set_condition(
                &mut status.conditions,
                "Ready",
                "True",
                "ClusterReady",
                "the cluster's API server answers through the agent",
            );
            true
        })
        .await
    }

    async fn disconnected(&self, why: &str) -> Result<(), SessionError> {
        self.write(|_, status| {
            let conditions = &mut status.conditions;
            let connected =
                set_condition(conditions, "Connected", "False", "AgentDisconnected", why);
            let ready = set_condition(conditions, "Ready", "False", "AgentDisconnected", why);
            connected || ready
        })
        .await
    }

    async fn projected(&self, desired: &projection::Desired) -> Result<(), SessionError> {
        let counts: BTreeMap<String, u64> = [
            ("clusterRoles", projection::Kind::ClusterRole),
            ("clusterRoleBindings", projection::Kind::ClusterRoleBinding),
            ("roleBindings", projection::Kind::RoleBinding),
            ("resourceQuotas", projection::Kind::ResourceQuota),
            ("limitRanges", projection::Kind::LimitRange),
            ("secrets", projection::Kind::Secret),
            ("networkPolicies", projection::Kind::NetworkPolicy),
        ]
        .into_iter()
        .map(|(k, kind)| (k.to_owned(), desired.count(kind) as u64))
        .collect();
        self.write(|_, status| {
            if status.projected == counts || status.conditions.is_empty() {
                return false;
            }
            status.projected = counts.clone();
            true
        })
        .await
    }
}

/// How long counting failing pods may hold up a heartbeat.
const COUNT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a pod may stay Pending before it counts as failing.
const PENDING_TOO_LONG: Duration = Duration::from_secs(300);

/// The cluster's failing pods: Failed or Unknown, or Pending for more than
/// [`PENDING_TOO_LONG`]. Only pods not Running or Succeeded are listed (a
/// field selector), so a healthy cluster answers with an empty list.
/// `None` when the cluster cannot tell (the count is then left as it was).
async fn pods_failing(client: &Client) -> Option<u32> {
    let list = tokio::time::timeout(
        COUNT_TIMEOUT,
        client.get(
            "/api/v1/pods?fieldSelector=status.phase%21%3DRunning%2Cstatus.phase%21%3DSucceeded",
        ),
    )
    .await
    .map_err(|_| {
        tracing::debug!(
            cluster = client.cluster(),
            "counting failing pods timed out"
        )
    })
    .ok()?
    .map_err(
        |e| tracing::debug!(cluster = client.cluster(), error = %e, "cannot count failing pods"),
    )
    .ok()?;
    let now = std::time::SystemTime::now();
    let count = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(
            |p| match p.pointer("/status/phase").and_then(Value::as_str) {
                Some("Failed" | "Unknown") => true,
                _ => p
                    .pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .and_then(meta::parse_rfc3339)
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age > PENDING_TOO_LONG),
            },
        )
        .count();
    Some(u32::try_from(count).unwrap_or(u32::MAX))
}

/// What the nodes add up to.
#[derive(Debug, Default, PartialEq)]
struct NodeSums {
    count: usize,
    ready: usize,
    capacity: BTreeMap<String, String>,
    allocatable: BTreeMap<String, String>,
}

fn binary_unit(resource: &str) -> bool {
    resource == "memory" || resource.contains("storage") || resource.starts_with("hugepages-")
}

fn sum(nodes: &BTreeMap<String, Value>) -> NodeSums {
    let mut capacity: BTreeMap<String, i128> = BTreeMap::new();
    let mut allocatable: BTreeMap<String, i128> = BTreeMap::new();
    for node in nodes.values() {
        for (field, out) in [
            ("capacity", &mut capacity),
            ("allocatable", &mut allocatable),
        ] {
            if let Some(Value::Object(m)) = node.pointer(&format!("/status/{field}")) {
                for (k, v) in m {
                    if let Some(q) = v.as_str().and_then(quantity::parse) {
                        let total = out.entry(k.clone()).or_default();
                        *total = total.saturating_add(q);
                    }
                }
            }
        }
    }
    let fmt = |m: BTreeMap<String, i128>| {
        m.into_iter()
            .map(|(k, v)| {
                let s = quantity::format(v, binary_unit(&k));
                (k, s)
            })
            .collect()
    };
    NodeSums {
        count: nodes.len(),
        ready: nodes.values().filter(|n| n["ready"] == true).count(),
        capacity: fmt(capacity),
        allocatable: fmt(allocatable),
    }
}

/// Only what the status and the alert rules need of a node: whether it
/// is Ready, since when it is not Ready or under pressure (not its
/// conditions' heartbeats, so a kubelet's status renewal changes nothing
/// here), its capacity and allocatable.
fn slim_node(node: &Value) -> Value {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True");
    let bad_since = super::alerts::facts::bad_since(node).map(meta::rfc3339);
    json!({"ready": ready, "badSince": bad_since, "status": {
        "capacity": node.pointer("/status/capacity").cloned().unwrap_or(Value::Null),
        "allocatable": node.pointer("/status/allocatable").cloned().unwrap_or(Value::Null),
    }})
}

/// List a collection, keeping a slim form of each item by name (only names
/// a path can carry); returns the items and the list's resourceVersion.
async fn list_slim(
    client: &Client,
    path: &str,
    slim: fn(&Value) -> Value,
) -> Result<(BTreeMap<String, Value>, String), DownstreamError> {
    let list = client.get(path).await?;
    let mut items = BTreeMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        if let Some(name) = item.pointer("/metadata/name").and_then(Value::as_str) {
            if drover_apiserver::object::is_dns_subdomain(name) {
                items.insert(name.to_owned(), slim(item));
            }
        }
    }
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("0")
        .to_owned();
    Ok((items, rv))
}

/// Apply a watch event; `Ok(true)` if the items changed. An `ERROR` event
/// (e.g. 410 Gone) ends the watch so that it lists again.
fn apply(
    items: &mut BTreeMap<String, Value>,
    event: &Value,
    slim: fn(&Value) -> Value,
) -> Result<bool, DownstreamError> {
    let obj = &event["object"];
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !drover_apiserver::object::is_dns_subdomain(name) && event["type"] != "ERROR" {
        return Ok(false);
    }
    match event["type"].as_str() {
        Some("ADDED" | "MODIFIED") => {
            let slim = slim(obj);
            Ok(items.insert(name.to_owned(), slim.clone()).as_ref() != Some(&slim))
        }
        Some("DELETED") => Ok(items.remove(name).is_some()),
        Some("ERROR") => Err(DownstreamError::Status {
            status: axum::http::StatusCode::GONE,
            message: obj["message"].as_str().unwrap_or("watch error").to_owned(),
        }),
        _ => Ok(false),
    }
}

/// Start the controller of the cluster whose lease is `held`, until `stop`.
pub fn start(ctx: Ctx, held: Held, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let cluster = held.cluster().to_owned();
    let span = tracing::info_span!("cluster", %cluster);
    tokio::spawn(tracing::Instrument::instrument(
        async move { run(ctx, cluster, held, stop).await },
        span,
    ))
}

async fn run(ctx: Ctx, cluster: String, held: Held, stop: CancellationToken) {
    let status = Status {
        ctx: &ctx,
        cluster: &cluster,
        held: &held,
    };
    let mut backoff = Backoff::default();
    let mut missing_since: Option<tokio::time::Instant> = None;
    // The nodes this controller last listed stay known to the cluster's
    // alert rules between sessions, until the cluster is not connected or
    // this controller stops.
    let _nodes = ctx.alerts.share_nodes(&cluster);
    let mut membership = Membership::default();
    // Writes to the cluster stop as soon as the lease is lost (the
    // ownership loop cancels `stop`) or this replica may no longer act.
    let fence: kube::Fence = {
        let registry = ctx.registry.clone();
        let stop = stop.clone();
        Arc::new(move || registry.may_act() && !stop.is_cancelled())
    };
    // A missing link is this controller's to report, not to wait for.
    let client = Client::new(ctx.dialer.clone(), &cluster)
        .under_lease(held.generation, fence)
        .without_waiting();
    // Subscribed before the route is read each time round, so that no
    // change between the read and the wait is missed.
    let mut route_changes = ctx.dialer.subscribe();
    loop {
        if stop.is_cancelled() || !ctx.registry.may_act() {
            return;
        }
        let obj = match ctx.store.get(&cluster_key(&cluster)).await {
            Ok(Some(kv)) => serde_json::from_slice::<Value>(&kv.value).unwrap_or_default(),
            Ok(None) => return, // gone: the lease goes with it
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster");
                wait(&stop, backoff.next_wait()).await;
                continue;
            }
        };
        if drover_apiserver::object::is_deleting(&obj) {
            super::removal::run(&ctx, &client, &held, &stop).await;
            return;
        }
        if matches!(ctx.dialer.route(&cluster), Route::Nowhere) {
            // A link's holder gone: not connected from HOLDER_DEADLINE
            // after the holder's last renewal (its agent has had time to
            // reconnect elsewhere). A link released: LINK_GRACE after the
            // agent was last heard from (at once if it fell silent). No
            // record at all: LINK_GRACE from now.
            let record = ctx.dialer.links().table().get(&records::key(&cluster));
            let since = *missing_since.get_or_insert_with(tokio::time::Instant::now);
            let past = |t: Option<std::time::SystemTime>, d: Duration| {
                t.is_none_or(|t| t.elapsed().unwrap_or_default() >= d)
            };
            let due = match &record {
                Some((r, _)) if r.is_held() => {
                    past(holder_silent_since(&ctx, &r.replica), HOLDER_DEADLINE)
                }
                Some((r, _)) => past(
                    r.last_seen.as_deref().and_then(meta::parse_rfc3339),
                    LINK_GRACE,
                ),
                None => since.elapsed() >= LINK_GRACE,
            };
            if due {
                ctx.alerts.forget_nodes(&cluster);
                if let Err(SessionError::LostLease) = status
                    .disconnected("the cluster agent is not connected")
                    .await
                {
                    return;
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = route_changes.next(Duration::from_millis(500)) => {}
            }
            continue;
        }
        missing_since = None;
        match session(&ctx, &client, &held, &status, &mut membership, &stop).await {
            Ok(()) => backoff.reset(),
            Err(SessionError::LostLease) => return,
            Err(e) => {
                let d = backoff.next_wait();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "cluster sync failed");
                // A link gone meanwhile is reported at once, not after
                // the backoff.
                wait_unless_gone(&ctx, &cluster, &stop, d).await;
            }
        }
    }
}

async fn wait(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(d) => {}
    }
}

/// Wait `d`, or less: until `stop`, or until no live replica holds the
/// cluster's link.
async fn wait_unless_gone(ctx: &Ctx, cluster: &str, stop: &CancellationToken, d: Duration) {
    let until = tokio::time::Instant::now() + d;
    let mut changes = ctx.dialer.subscribe();
    loop {
        let now = tokio::time::Instant::now();
        if now >= until
            || stop.is_cancelled()
            || matches!(ctx.dialer.route(cluster), Route::Nowhere)
        {
            return;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = changes.next(until - now) => {}
        }
    }
}

/// Keeps the projection current: works out what is wanted, and reconciles
/// when it changed or a drift was seen.
struct Projector {
    /// The policy as it concerns this cluster, when last projected.
    inputs: Option<ClusterPolicy>,
    namespaces: Option<BTreeMap<String, Value>>,
    members: BTreeMap<String, String>,
    desired: Option<projection::Desired>,
    /// The template, isolation setting and project secrets, when last
    /// projected.
    extras: projects::Extras,
    /// What was last reported into the management API.
    reported: projects::Reported,
    /// The Cluster's spec, as its watch last said.
    cluster_spec: drover_core::api::ClusterSpec,
}

/// What of the policy bears on one cluster's projection.
#[derive(Debug, PartialEq)]
struct ClusterPolicy {
    admins: std::collections::BTreeSet<drover_auth::policy::Subject>,
    cluster_bindings: Vec<(drover_auth::policy::Subject, String)>,
    project_bindings: Vec<(drover_auth::policy::Subject, String, String)>,
    projects: BTreeMap<String, drover_core::api::ProjectSpec>,
    /// The rules of the templates bound in the cluster.
    rules: BTreeMap<String, Vec<drover_rbac::PolicyRule>>,
}

impl ClusterPolicy {
    fn of(snapshot: &drover_auth::policy::Snapshot, cluster: &str) -> Self {
        let cluster_bindings = snapshot.cluster_bindings(cluster);
        let project_bindings = snapshot.project_bindings(cluster);
        let rules = cluster_bindings
            .iter()
            .map(|(_, t)| t)
            .chain(project_bindings.iter().map(|(_, _, t)| t))
            .map(|t| (t.clone(), snapshot.template_rules(t)))
            .collect();
        Self {
            admins: snapshot.cluster_admins(cluster),
            cluster_bindings,
            project_bindings,
            projects: snapshot.projects_of(cluster),
            rules,
        }
    }
}

/// What a projection run works with.
#[derive(Clone, Copy)]
struct Scope<'a> {
    ctx: &'a Ctx,
    client: &'a Client,
    held: &'a Held,
    status: &'a Status<'a>,
}

/// What started a projection run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// The namespaces, Drover's records of them, the cluster's spec, a
    /// template or a project secret changed: work the plan out again.
    Inputs,
    /// The policy changed somewhere in the fleet: work the plan out again
    /// only if what bears on this cluster changed (an import elsewhere
    /// costs every other cluster a comparison in memory, no reads).
    Policy,
    /// The cluster's objects changed: reconcile against the cached plan.
    Drift,
}

impl Projector {
    async fn run(
        &mut self,
        scope: &Scope<'_>,
        membership: &mut Membership,
        namespaces: &BTreeMap<String, Value>,
        observed: &mut Observed,
        why: Why,
    ) -> Result<(), SessionError> {
        let snapshot = scope
            .ctx
            .authz
            .snapshot()
            .await
            .map_err(|e| DownstreamError::Body(e.to_string()))?;
        let Scope {
            ctx,
            client,
            held,
            status,
        } = *scope;
        let cluster = client.cluster();
        let inputs = ClusterPolicy::of(&snapshot, cluster);
        let replan = why == Why::Inputs
            || self.desired.is_none()
            || self.inputs.as_ref() != Some(&inputs)
            || self.namespaces.as_ref() != Some(namespaces);
        if why == Why::Policy && !replan {
            return Ok(()); // nothing of this cluster's changed
        }
        if replan {
            let (members, system_project) = membership
                .work_out(ctx, client, &held.fence(), namespaces)
                .await?;
            self.members = members;
            self.extras =
                projects::Extras::read(ctx, cluster, &self.cluster_spec, inputs.projects.keys())
                    .await?;
            let rules = |t: &str| snapshot.template_rules(t);
            let desired = projection::plan(&projection::Inputs {
                admins: inputs.admins.clone(),
                cluster_bindings: inputs.cluster_bindings.clone(),
                project_bindings: inputs.project_bindings.clone(),
                rules: &rules,
                projects: inputs.projects.clone(),
                namespaces: self.members.clone(),
                secrets: self.extras.secrets.clone(),
                isolation: self.extras.isolation.then(|| projection::Isolation {
                    system_project,
                    opted_out: projects::opted_out(namespaces),
                }),
            });
            let labelled = projects::apply_pod_security(client, &self.extras, namespaces).await?;
            if labelled > 0 {
                tracing::info!(namespaces = labelled, "set Pod Security levels");
            }
            self.desired = Some(desired);
            self.inputs = Some(inputs);
            self.namespaces = Some(namespaces.clone());
        }
        let desired = self.desired.as_ref().expect("planned");
        let changes = projection::reconcile(client, desired, observed).await?;
        if changes.created + changes.updated + changes.deleted > 0 {
            tracing::info!(
                created = changes.created,
                updated = changes.updated,
                deleted = changes.deleted,
                "projected RBAC, quotas, secrets and policies"
            );
        }
        self.reported
            .secrets(
                ctx,
                held,
                &self.extras,
                &self.members,
                observed,
                &changes.refused,
            )
            .await?;
        status.projected(desired).await?;
        self.report_usage(scope, observed).await
    }

    /// The kinds to watch: every kind but those the agent may not manage,
    /// and Secrets and NetworkPolicies only where Drover has or wants some.
    fn kinds_to_watch(&self, observed: &Observed) -> std::collections::BTreeSet<projection::Kind> {
        projection::Kind::ALL
            .into_iter()
            .filter(|k| !observed.forbidden.contains(k))
            .filter(|k| {
                !k.optional()
                    || self
                        .desired
                        .as_ref()
                        .is_some_and(|d| projection::of_kind(&d.objects, *k).next().is_some())
                    || projection::of_kind(&observed.objects, *k).next().is_some()
            })
            .collect()
    }

    /// Whether a project is one of this cluster's.
    fn owns_project(&self, project: &str) -> bool {
        self.inputs
            .as_ref()
            .is_none_or(|inputs| inputs.projects.contains_key(project))
    }

    /// Report each project's quota use, as the cluster's quotas say now.
    async fn report_usage(
        &mut self,
        scope: &Scope<'_>,
        observed: &Observed,
    ) -> Result<(), SessionError> {
        let Some(inputs) = &self.inputs else {
            return Ok(());
        };
        self.reported
            .usage(
                scope.ctx,
                scope.held,
                scope.client.cluster(),
                observed,
                &self.members,
                &inputs.projects,
            )
            .await?;
        Ok(())
    }
}

/// One connected session: list, project, report, then follow the watches
/// until one ends, the link moves, or `stop`.
async fn session(
    ctx: &Ctx,
    client: &Client,
    held: &Held,
    status: &Status<'_>,
    membership: &mut Membership,
    stop: &CancellationToken,
) -> Result<(), SessionError> {
    let scope = Scope {
        ctx,
        client,
        held,
        status,
    };
    let cluster = client.cluster();
    let version = client.get("/version").await?;
    let version = version["gitVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (mut nodes, node_rv) = list_slim(client, "/api/v1/nodes", slim_node).await?;
    // The cluster's alert rules read the nodes from here.
    ctx.alerts.update_nodes(cluster, &nodes);
    let mut sums = sum(&nodes);
    let (mut namespaces, ns_rv) = list_slim(client, "/api/v1/namespaces", membership::slim).await?;
    namespaces.retain(|name, _| drover_apiserver::object::is_dns_label(name));
    let mut observed = Observed::list(client).await?;
    // Drover's records of the namespaces: a namespace made through the
    // proxy is recorded once the cluster made it, maybe after its watch
    // event arrived here.
    let from = ctx.store.revisions().await?.current;
    let mut records = ctx.store.watch(&namespaces::record_prefix(cluster), from);
    let mut cluster_events = ctx.store.watch(&cluster_key(cluster), from);
    // Project secrets and Pod Security templates, from the process's one
    // watch of them: a change is worked out again (the plan writes only
    // differences). Subscribed before the first plan reads them.
    let mut inputs = ctx.project_inputs.subscribe();
    // The spec as it is now (it names the Pod Security template and
    // isolation): a change from here on is planned again.
    let spec_of = |v: &Value| serde_json::from_value(v["spec"].clone()).unwrap_or_default();
    let cluster_spec = ctx
        .store
        .get(&cluster_key(cluster))
        .await?
        .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .map(|v| spec_of(&v))
        .unwrap_or_default();
    let mut policy = ctx.authz.changes();
    let mut projector = Projector {
        inputs: None,
        namespaces: None,
        members: BTreeMap::new(),
        desired: None,
        extras: projects::Extras::default(),
        reported: projects::Reported::default(),
        cluster_spec,
    };
    projector
        .run(&scope, membership, &namespaces, &mut observed, Why::Inputs)
        .await?;
    // Ready only once Drover's RBAC is in the cluster, so that a cluster
    // shown Active is one its members can use.
    let mut failing = pods_failing(client).await;
    status.connected(&version, &sums, failing).await?;

    let mut node_events = client
        .watch(&format!(
            "/api/v1/nodes?watch=true&resourceVersion={node_rv}&allowWatchBookmarks=true"
        ))
        .await?;
    let mut ns_events = client
        .watch(&format!(
            "/api/v1/namespaces?watch=true&resourceVersion={ns_rv}&allowWatchBookmarks=true"
        ))
        .await?;
    // Drift: every labelled object Drover projects is watched into the
    // cache, so an edit or deletion in the cluster is repaired at once
    // (Drover's own writes echo back and find nothing to do).
    // Secrets and NetworkPolicies are watched only where Drover has some
    // there or wants some (each watch costs memory and bookmarks); when it
    // comes to want them, the session starts again and watches them.
    let watched = projector.kinds_to_watch(&observed);
    let mut managed = Vec::new();
    for kind in watched.iter().copied() {
        let rv = observed
            .listed_at
            .get(&kind)
            .cloned()
            .unwrap_or_else(|| "0".into());
        let events = client.watch(&kind.watch_path(&rv)).await?;
        managed.push(events.map(move |e| (kind, e)).boxed());
    }
    let mut managed = futures::stream::select_all(managed);
    let mut links = ctx.dialer.links().table().changes();
    let mut members = ctx.registry.watch();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let mut usage_flush = tokio::time::interval(projects::USAGE_EVERY);
    usage_flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let drift = tokio::time::sleep(DRIFT_CHECK);
    tokio::pin!(drift);
    loop {
        if !projector.kinds_to_watch(&observed).is_subset(&watched) {
            return Ok(()); // list and watch again, the new kinds too
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = &mut drift => return Ok(()), // list everything again
            event = node_events.next() => {
                let Some(event) = event else { return Ok(()) };
                let mut changed = apply(&mut nodes, &event, slim_node)?;
                // Take whatever else is already here before writing once.
                while let Some(Some(more)) = node_events.next().now_or_never() {
                    changed |= apply(&mut nodes, &more, slim_node)?;
                }
                if changed {
                    ctx.alerts.update_nodes(cluster, &nodes);
                    let now = sum(&nodes);
                    if now != sums {
                        sums = now;
                        status.connected(&version, &sums, failing).await?;
                    }
                }
            }
            event = ns_events.next() => {
                let Some(event) = event else { return Ok(()) };
                let mut changed = apply(&mut namespaces, &event, membership::slim)?;
                while let Some(Some(more)) = ns_events.next().now_or_never() {
                    changed |= apply(&mut namespaces, &more, membership::slim)?;
                }
                namespaces.retain(|name, _| drover_apiserver::object::is_dns_label(name));
                if changed {
                    projector.run(&scope, membership, &namespaces, &mut observed, Why::Inputs).await?;
                }
            }
            event = managed.next() => {
                let Some((kind, event)) = event else { return Ok(()) };
                let mut changed = observed.apply(kind, &event)?;
                let mut quotas = kind == projection::Kind::ResourceQuota;
                while let Some(Some((kind, more))) = managed.next().now_or_never() {
                    changed |= observed.apply(kind, &more)?;
                    quotas |= kind == projection::Kind::ResourceQuota;
                }
                if changed {
                    projector.run(&scope, membership, &namespaces, &mut observed, Why::Drift).await?;
                } else if quotas {
                    // A quota's use may have moved.
                    projector.report_usage(&scope, &observed).await?;
                }
            }
            changed = inputs.recv() => {
                use tokio::sync::broadcast::error::{RecvError, TryRecvError};
                let concerns = |c: Result<projects::Changed, RecvError>| match c {
                    Ok(projects::Changed::Secret(p)) => projector.owns_project(&p),
                    Ok(_) | Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => false,
                };
                if matches!(changed, Err(RecvError::Closed)) {
                    return Ok(());
                }
                let mut ours = concerns(changed);
                loop {
                    match inputs.try_recv() {
                        Ok(c) => ours |= concerns(Ok(c)),
                        Err(TryRecvError::Lagged(_)) => ours = true,
                        Err(_) => break,
                    }
                }
                if ours {
                    projector.run(&scope, membership, &namespaces, &mut observed, Why::Inputs).await?;
                }
            }
            event = records.next() => {
                if event.is_none_or(|e| e.is_err()) {
                    return Ok(());
                }
                while let Some(Some(_)) = records.next().now_or_never() {}
                projector.run(&scope, membership, &namespaces, &mut observed, Why::Inputs).await?;
            }
            changed = policy.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                projector.run(&scope, membership, &namespaces, &mut observed, Why::Policy).await?;
            }
            event = cluster_events.next() => {
                let obj = match event {
                    Some(Ok(e)) if e.kind != drover_store::EventType::Deleted => {
                        serde_json::from_slice::<Value>(&e.kv.value).ok()
                    }
                    _ => None,
                };
                let Some(obj) = obj.filter(|v| !drover_apiserver::object::is_deleting(v)) else {
                    return Ok(()); // removal, or a new watch
                };
                let spec = spec_of(&obj);
                if spec != projector.cluster_spec {
                    projector.cluster_spec = spec;
                    projector.run(&scope, membership, &namespaces, &mut observed, Why::Inputs).await?;
                }
            }
            _ = links.changed() => {
                if !matches!(ctx.dialer.route(cluster), Route::Local(_) | Route::Peer { .. }) {
                    return Ok(());
                }
            }
            _ = members.changed() => {
                if matches!(ctx.dialer.route(cluster), Route::Nowhere) {
                    return Ok(());
                }
            }
            _ = heartbeat.tick() => {
                failing = pods_failing(client).await.or(failing);
                status.connected(&version, &sums, failing).await?;
            }
            _ = usage_flush.tick(), if projector.reported.usage_pending() => {
                projector.report_usage(&scope, &observed).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_node_resources() {
        let mut nodes = BTreeMap::new();
        for i in 0..3 {
            nodes.insert(
                format!("n{i}"),
                json!({"status": {"capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                                  "allocatable": {"cpu": "3800m", "memory": "15Gi", "pods": "110"}}}),
            );
        }
        let s = sum(&nodes);
        assert_eq!(s.count, 3);
        assert_eq!(s.capacity["cpu"], "12");
        assert_eq!(s.capacity["memory"], "48Gi");
        assert_eq!(s.capacity["pods"], "330");
        assert_eq!(s.allocatable["cpu"], "11400m");
    }

    #[test]
    fn a_hostile_name_changes_nothing() {
        let mut items = BTreeMap::new();
        let event = json!({"type": "ADDED", "object": {"metadata": {"name": "../../x"}}});
        assert!(!apply(&mut items, &event, slim_node).unwrap());
        assert!(items.is_empty());
    }
}
