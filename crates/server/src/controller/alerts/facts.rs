//! What a cluster's alert rules need to know from inside the cluster, kept
//! by list-and-watch through the Dialer: pods, workloads, events and
//! namespaces — each watched only while a rule of the cluster needs it, and
//! kept slim (no specs, no managed fields), with the times things went
//! wrong. Nodes come from the cluster controller's own watch
//! ([`super::Alerts::share_nodes`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use drover_core::quantity;
use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::conditions::{time, EVENT_WINDOW};
use crate::controller::Backoff;
use crate::link::kube::{Client, DownstreamError};

/// A node, as rules see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    /// Since when it is NotReady or under pressure (`None`: healthy).
    pub bad_since: Option<SystemTime>,
    /// Allocatable resources, in thousandths ([`quantity::parse`]).
    pub allocatable: BTreeMap<String, i128>,
}

/// A pod, as rules see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pod {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The node it runs on.
    pub node: Option<String>,
    /// Succeeded or Failed: it holds no resources.
    pub terminal: bool,
    /// Summed container requests, in thousandths.
    pub requests: BTreeMap<String, i128>,
    /// Since when it is not running, or running but not ready.
    pub bad_since: Option<SystemTime>,
    /// Its containers' restarts, summed.
    pub restart_count: u32,
    /// Restarts seen while watched: when, and how many.
    pub restarts: Vec<(SystemTime, u32)>,
}

/// A Deployment, StatefulSet or DaemonSet, as rules see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Workload {
    /// Since when it has fewer available replicas than desired.
    pub short_since: Option<SystemTime>,
}

/// An event, as rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its namespace.
    pub namespace: String,
    /// The kind of the object it is about.
    pub kind: String,
    /// The name of the object it is about.
    pub name: String,
    /// Its reason.
    pub reason: String,
    /// `Warning` or `Normal`.
    pub type_: String,
    /// When it was last seen.
    pub last_seen: SystemTime,
}

/// What the watches hold.
#[derive(Debug, Default)]
pub struct Facts {
    /// Pods by namespace and name.
    pub pods: BTreeMap<(String, String), Pod>,
    /// Workloads by kind (`deployment`, `statefulset`, `daemonset`),
    /// namespace and name.
    pub workloads: BTreeMap<(String, String, String), Workload>,
    /// The events of the last [`EVENT_WINDOW`], by namespace and name.
    pub events: BTreeMap<(String, String), Event>,
    /// Namespaces' UIDs, by name (their projects are Drover's records').
    pub namespaces: BTreeMap<String, String>,
    /// The collections listed, by path: until then a rule reading one
    /// knows nothing (rather than that nothing is wrong).
    pub synced: std::collections::BTreeSet<&'static str>,
    /// Why a collection cannot be watched now, by its path.
    pub errors: BTreeMap<&'static str, String>,
    /// When each collection was first listed (what is counted while
    /// watched, restarts, counts from then).
    pub listed_at: BTreeMap<&'static str, SystemTime>,
}

/// Which downstream kinds the rules need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Nodes (node rules): the cluster controller's, not a watch here.
    pub nodes: bool,
    /// Pods (pod rules, node requests).
    pub pods: bool,
    /// Deployments, StatefulSets, DaemonSets.
    pub workloads: bool,
    /// Events.
    pub events: bool,
    /// Namespaces (project rules about downstream objects).
    pub namespaces: bool,
}

impl Needs {
    /// Whether nothing is needed.
    pub fn none(&self) -> bool {
        *self == Self::default()
    }
}

/// A downstream collection the facts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Pods,
    Deployments,
    StatefulSets,
    DaemonSets,
    Events,
    Namespaces,
}

impl Needs {
    /// The collections these needs read.
    pub fn paths(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.pods {
            out.push(Source::Pods);
        }
        if self.workloads {
            out.extend([
                Source::Deployments,
                Source::StatefulSets,
                Source::DaemonSets,
            ]);
        }
        if self.events {
            out.push(Source::Events);
        }
        if self.namespaces {
            out.push(Source::Namespaces);
        }
        out.into_iter().map(Source::path).collect()
    }
}

impl Source {
    fn of_path(path: &str) -> Option<Self> {
        [
            Self::Pods,
            Self::Deployments,
            Self::StatefulSets,
            Self::DaemonSets,
            Self::Events,
            Self::Namespaces,
        ]
        .into_iter()
        .find(|s| s.path() == path)
    }

    fn path(self) -> &'static str {
        match self {
            Self::Pods => "/api/v1/pods",
            Self::Deployments => "/apis/apps/v1/deployments",
            Self::StatefulSets => "/apis/apps/v1/statefulsets",
            Self::DaemonSets => "/apis/apps/v1/daemonsets",
            Self::Events => "/api/v1/events",
            Self::Namespaces => "/api/v1/namespaces",
        }
    }

    fn workload_kind(self) -> &'static str {
        match self {
            Self::StatefulSets => "statefulset",
            Self::DaemonSets => "daemonset",
            _ => "deployment",
        }
    }

    /// After a list: drop what the list no longer holds (what it holds
    /// was taken in over the old state, keeping when things went wrong).
    fn retain_listed(self, f: &mut Facts, listed: &std::collections::BTreeSet<(String, String)>) {
        let has = |ns: &str, name: &str| listed.contains(&(ns.to_owned(), name.to_owned()));
        match self {
            Self::Pods => f.pods.retain(|(ns, name), _| has(ns, name)),
            Self::Deployments | Self::StatefulSets | Self::DaemonSets => {
                let kind = self.workload_kind();
                f.workloads
                    .retain(|(k, ns, name), _| k != kind || has(ns, name));
            }
            Self::Events => f.events.retain(|(ns, name), _| has(ns, name)),
            Self::Namespaces => f.namespaces.retain(|name, _| has("", name)),
        }
    }

    /// Take in one object (`deleted`: it is gone).
    fn apply(self, f: &mut Facts, obj: &Value, deleted: bool, now: SystemTime) {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let namespace = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match self {
            Self::Pods => {
                let key = (namespace, name);
                if deleted {
                    f.pods.remove(&key);
                } else {
                    let old = f.pods.remove(&key);
                    f.pods.insert(key, pod(obj, old, now));
                }
            }
            Self::Deployments | Self::StatefulSets | Self::DaemonSets => {
                let key = (self.workload_kind().to_owned(), namespace, name);
                if deleted {
                    f.workloads.remove(&key);
                } else {
                    let short = workload_short(self, obj);
                    let old = f.workloads.get(&key).and_then(|w| w.short_since);
                    // First seen short (a re-list keeps the old time): since
                    // its Available condition turned False, if it says.
                    let short_since = short.then(|| {
                        old.or_else(|| {
                            conditions(obj)
                                .find(|c| c["type"] == "Available" && c["status"] == "False")
                                .and_then(|c| time(c["lastTransitionTime"].as_str()))
                        })
                        .unwrap_or(now)
                        .min(now)
                    });
                    f.workloads.insert(key, Workload { short_since });
                }
            }
            Self::Events => {
                let key = (namespace.clone(), name);
                if deleted {
                    f.events.remove(&key);
                } else {
                    let s = |p: &str| {
                        obj.pointer(p)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    // A recurring event's latest sighting is in its series.
                    let last_seen = [
                        "/series/lastObservedTime",
                        "/lastTimestamp",
                        "/eventTime",
                        "/metadata/creationTimestamp",
                    ]
                    .iter()
                    .find_map(|p| time(obj.pointer(p).and_then(Value::as_str)))
                    .unwrap_or(now)
                    .min(now);
                    if now.duration_since(last_seen).unwrap_or_default() <= EVENT_WINDOW {
                        f.events.insert(
                            key,
                            Event {
                                namespace,
                                kind: s("/involvedObject/kind"),
                                name: s("/involvedObject/name"),
                                reason: s("/reason"),
                                type_: s("/type"),
                                last_seen,
                            },
                        );
                    }
                }
            }
            Self::Namespaces => {
                if deleted {
                    f.namespaces.remove(&name);
                } else {
                    let uid = obj
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    f.namespaces.insert(name, uid);
                }
            }
        }
    }
}

fn conditions(obj: &Value) -> impl Iterator<Item = &Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Since when a node (its `status.conditions`) is NotReady or under
/// memory, disk or PID pressure; `None`: healthy.
pub fn bad_since(node: &Value) -> Option<SystemTime> {
    let mut since: Option<SystemTime> = None;
    for c in conditions(node) {
        let bad = match c["type"].as_str() {
            Some("Ready") => c["status"] != "True",
            Some("MemoryPressure" | "DiskPressure" | "PIDPressure") => c["status"] == "True",
            _ => false,
        };
        if bad {
            let at = time(c["lastTransitionTime"].as_str()).unwrap_or_else(SystemTime::now);
            since = Some(since.map_or(at, |b| b.min(at)));
        }
    }
    since
}

/// A node as rules see it, from the cluster controller's slim form of it
/// (`badSince`, `status.allocatable`).
pub fn node(slim: &Value) -> Node {
    let allocatable = slim
        .pointer("/status/allocatable")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| matches!(k.as_str(), "cpu" | "memory" | "pods"))
        .filter_map(|(k, v)| Some((k.clone(), quantity_of(k, v.as_str()?)?)))
        .collect();
    Node {
        bad_since: time(slim["badSince"].as_str()),
        allocatable,
    }
}

/// A quantity in thousandths (of a core, a byte, a pod).
fn quantity_of(_resource: &str, q: &str) -> Option<i128> {
    quantity::parse(q)
}

fn pod(obj: &Value, old: Option<Pod>, now: SystemTime) -> Pod {
    let phase = obj
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let ready = conditions(obj).find(|c| c["type"] == "Ready");
    let bad = match phase {
        "Succeeded" => false,
        "Running" => ready.is_none_or(|c| c["status"] != "True"),
        _ => true,
    };
    let bad_since = bad.then(|| {
        old.as_ref().and_then(|o| o.bad_since).unwrap_or_else(|| {
            ready
                .and_then(|c| time(c["lastTransitionTime"].as_str()))
                .or_else(|| {
                    time(
                        obj.pointer("/metadata/creationTimestamp")
                            .and_then(Value::as_str),
                    )
                })
                .unwrap_or(now)
                .min(now)
        })
    });
    let mut requests: BTreeMap<String, i128> = BTreeMap::new();
    for c in obj
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for (k, v) in c
            .pointer("/resources/requests")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if let Some(q) = v.as_str().and_then(|v| quantity_of(k, v)) {
                let total = requests.entry(k.clone()).or_default();
                *total = total.saturating_add(q);
            }
        }
    }
    let restart_count: u32 = obj
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["restartCount"].as_u64())
        .fold(0u32, |sum, n| {
            sum.saturating_add(u32::try_from(n).unwrap_or(u32::MAX))
        });
    let mut restarts = old.as_ref().map(|o| o.restarts.clone()).unwrap_or_default();
    if let Some(old) = &old {
        if restart_count > old.restart_count {
            restarts.push((now, restart_count - old.restart_count));
        }
    }
    // Kept for a day at most.
    restarts.retain(|(at, _)| now.duration_since(*at).unwrap_or_default().as_secs() < 86_400);
    Pod {
        labels: obj
            .pointer("/metadata/labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default(),
        node: obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .map(str::to_owned),
        terminal,
        requests,
        bad_since,
        restart_count,
        restarts,
    }
}

fn workload_short(source: Source, obj: &Value) -> bool {
    let n = |p: &str| obj.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    match source {
        Source::DaemonSets => n("/status/numberAvailable") < n("/status/desiredNumberScheduled"),
        _ => {
            let desired = obj
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            n("/status/availableReplicas") < desired
        }
    }
}

/// The watches of one cluster's downstream facts: one task per collection
/// the rules need, started and stopped as the needs change, into one
/// [`Facts`] (so a collection still needed keeps what it holds).
pub struct Watches {
    /// What they hold.
    pub facts: Arc<Mutex<Facts>>,
    client: Client,
    parent: CancellationToken,
    running: BTreeMap<&'static str, CancellationToken>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for stop in self.running.values() {
            stop.cancel();
        }
    }
}

impl Watches {
    /// No watches yet; those started later stop with `parent` at the
    /// latest.
    pub fn new(client: &Client, parent: &CancellationToken) -> Self {
        Self {
            facts: Arc::default(),
            client: client.clone(),
            parent: parent.clone(),
            running: BTreeMap::new(),
        }
    }

    /// Watch what `needs` says: start what is new, stop (and forget) what
    /// is no longer needed.
    pub fn set(&mut self, needs: Needs) {
        let wanted = needs.paths();
        let gone: Vec<&'static str> = self
            .running
            .keys()
            .filter(|p| !wanted.contains(p))
            .copied()
            .collect();
        for path in gone {
            if let Some(stop) = self.running.remove(path) {
                stop.cancel();
            }
            if let Some(source) = Source::of_path(path) {
                let mut f = self.facts.lock().unwrap_or_else(|e| e.into_inner());
                source.retain_listed(&mut f, &std::collections::BTreeSet::new());
                f.synced.remove(path);
                f.errors.remove(path);
                f.listed_at.remove(path);
            }
        }
        for path in wanted {
            if self.running.contains_key(path) {
                continue;
            }
            let Some(source) = Source::of_path(path) else {
                continue;
            };
            let stop = self.parent.child_token();
            tokio::spawn(follow(
                self.client.clone(),
                source,
                self.facts.clone(),
                stop.clone(),
            ));
            self.running.insert(path, stop);
        }
    }
}

/// List and watch one source into the facts until `stop`, listing again
/// after a watch ends or fails.
async fn follow(client: Client, source: Source, facts: Arc<Mutex<Facts>>, stop: CancellationToken) {
    let mut backoff = Backoff::default();
    loop {
        let run = async {
            let list = client.get(source.path()).await?;
            let now = SystemTime::now();
            {
                let mut f = facts.lock().unwrap_or_else(|e| e.into_inner());
                f.errors.remove(source.path());
                let mut listed = std::collections::BTreeSet::new();
                for item in list["items"].as_array().into_iter().flatten() {
                    let name = |p: &str| {
                        item.pointer(p)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    listed.insert((name("/metadata/namespace"), name("/metadata/name")));
                    source.apply(&mut f, item, false, now);
                }
                source.retain_listed(&mut f, &listed);
                f.synced.insert(source.path());
                f.listed_at.entry(source.path()).or_insert(now);
            }
            let rv = list
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("0")
                .to_owned();
            let mut events = client
                .watch(&format!(
                    "{}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true",
                    source.path()
                ))
                .await?;
            while let Some(event) = events.next().await {
                let deleted = match event["type"].as_str() {
                    Some("ADDED" | "MODIFIED") => false,
                    Some("DELETED") => true,
                    Some("ERROR") => break,
                    _ => continue,
                };
                let now = SystemTime::now();
                let mut f = facts.lock().unwrap_or_else(|e| e.into_inner());
                source.apply(&mut f, &event["object"], deleted, now);
                if source == Source::Events {
                    f.events.retain(|_, e| {
                        now.duration_since(e.last_seen).unwrap_or_default() <= EVENT_WINDOW
                    });
                }
            }
            Ok::<(), DownstreamError>(())
        };
        let wait = tokio::select! {
            () = stop.cancelled() => return,
            r = run => match r {
                Ok(()) => {
                    backoff.reset();
                    std::time::Duration::from_millis(200)
                }
                Err(e) => {
                    let d = backoff.next_wait();
                    tracing::debug!(error = %e, source = source.path(), "alert facts watch failed");
                    facts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .errors
                        .insert(source.path(), format!("cannot watch {}: {e}", source.path()));
                    d
                }
            },
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
