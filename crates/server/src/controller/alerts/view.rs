//! The process's one view of what alerting reads from the datastore, kept
//! current by store watches shared by every cluster's evaluator (one
//! watcher per kind, not one per cluster): clusters' states, projects
//! with their quota use by cluster, alert rules by namespace, notifiers
//! and backups. `/metrics` reads its fleet gauges from the same view.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use drover_core::api::{self, Condition};
use drover_core::keys;
use drover_store::{Event, EventType, Follower, Mirror, Revision, Store};
use futures::future::BoxFuture;
use serde_json::Value;

use super::conditions::time;

/// A cluster, as alerting and the fleet gauges see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterBrief {
    /// The name people see.
    pub display_name: String,
    /// `Active`, `Unavailable` or `Pending`.
    pub state: &'static str,
    /// The `Connected` condition.
    pub connected: Option<Condition>,
    /// The `Ready` condition.
    pub ready: Option<Condition>,
    /// Nodes, and how many are Ready.
    pub nodes: (u32, u32),
    /// Summed capacity.
    pub capacity: BTreeMap<String, String>,
    /// Summed allocatable.
    pub allocatable: BTreeMap<String, String>,
}

impl ClusterBrief {
    fn parse(raw: &[u8]) -> Option<Self> {
        let v: Value = serde_json::from_slice(raw).ok()?;
        let c: api::Cluster = serde_json::from_value(v.clone()).ok()?;
        let status = c.status.unwrap_or_default();
        let find = |t: &str| status.conditions.iter().find(|c| c.type_ == t).cloned();
        Some(Self {
            display_name: if c.spec.display_name.is_empty() {
                c.metadata.name.clone().unwrap_or_default()
            } else {
                c.spec.display_name.clone()
            },
            state: api::cluster_state(&v),
            connected: find("Connected"),
            ready: find("Ready"),
            nodes: (
                status.node_count.unwrap_or(0),
                status.nodes_ready.unwrap_or(0),
            ),
            capacity: status.capacity,
            allocatable: status.allocatable,
        })
    }

    /// Since when the cluster is not connected or not Ready (`None`: it
    /// is both, or not yet known).
    pub fn down_since(&self) -> Option<SystemTime> {
        [&self.connected, &self.ready]
            .into_iter()
            .flatten()
            .filter(|c| c.status == "False")
            .map(|c| time(c.last_transition_time.as_deref()).unwrap_or_else(SystemTime::now))
            .min()
    }
}

/// A project, as alerting sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectBrief {
    /// Its cluster.
    pub cluster: String,
    /// The name people see.
    pub display_name: String,
    /// Its quota use.
    pub status: Option<api::ProjectStatus>,
}

/// Objects under a prefix, grouped (rules by namespace, projects by
/// cluster) so that an evaluator finds its own without walking the fleet.
pub struct Grouped<T> {
    index: RwLock<Index<T>>,
    parse: fn(&[u8]) -> Option<(String, T)>,
    prefix: String,
    store: Store,
    applied: tokio::sync::watch::Sender<Revision>,
}

/// The groups, and each key's group (to move or drop it), changed together.
struct Index<T> {
    groups: HashMap<String, BTreeMap<String, Arc<T>>>,
    group_of: HashMap<String, String>,
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Self {
            groups: HashMap::new(),
            group_of: HashMap::new(),
        }
    }
}

impl<T> Index<T> {
    fn remove(&mut self, key: &str) {
        if let Some(g) = self.group_of.remove(key) {
            if let Some(m) = self.groups.get_mut(&g) {
                m.remove(key);
                if m.is_empty() {
                    self.groups.remove(&g);
                }
            }
        }
    }

    fn insert(&mut self, key: &str, group: String, value: T) {
        if self.group_of.get(key) != Some(&group) {
            self.remove(key);
            self.group_of.insert(key.to_owned(), group.clone());
        }
        self.groups
            .entry(group)
            .or_default()
            .insert(key.to_owned(), Arc::new(value));
    }
}

impl<T> std::fmt::Debug for Grouped<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grouped")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Grouped<T> {
    /// Follow `prefix`, grouping by what `parse` says.
    pub fn spawn(
        store: &Store,
        prefix: &str,
        parse: fn(&[u8]) -> Option<(String, T)>,
    ) -> Arc<Self> {
        let grouped = Arc::new(Self {
            index: RwLock::default(),
            parse,
            prefix: prefix.to_owned(),
            store: store.clone(),
            applied: tokio::sync::watch::channel(0).0,
        });
        store.follow(prefix, grouped.clone());
        grouped
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index<T>> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index<T>> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The objects of a group, by key.
    pub fn group(&self, group: &str) -> Vec<(String, Arc<T>)> {
        self.read()
            .groups
            .get(group)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Every object.
    pub fn all(&self) -> Vec<Arc<T>> {
        self.read()
            .groups
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Changes: a new revision after each.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.applied.subscribe()
    }

    /// Whether it has loaded once.
    pub fn loaded(&self) -> bool {
        *self.applied.borrow() > 0
    }
}

impl<T: Send + Sync + 'static> Follower for Grouped<T> {
    fn reset(&self, revision: Revision) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let Ok(page) = self
                .store
                .list(&drover_store::ListOptions {
                    prefix: self.prefix.clone(),
                    revision: Some(revision),
                    ..Default::default()
                })
                .await
            else {
                return false;
            };
            // Built whole, then swapped in: a reader never sees it half done.
            let mut index = Index::default();
            for kv in page.items {
                if let Some((group, v)) = (self.parse)(&kv.value) {
                    index.insert(&kv.key, group, v);
                }
            }
            *self.write() = index;
            self.applied.send_replace(revision.max(1));
            true
        })
    }

    fn apply(&self, event: &Event) {
        {
            let mut index = self.write();
            match event.kind {
                EventType::Deleted => index.remove(&event.kv.key),
                _ => match (self.parse)(&event.kv.value) {
                    Some((group, v)) => index.insert(&event.kv.key, group, v),
                    None => index.remove(&event.kv.key),
                },
            }
        }
        self.applied.send_replace(event.revision());
    }

    fn lost(&self) {}
}

fn parse_rule(raw: &[u8]) -> Option<(String, api::AlertRule)> {
    let rule: api::AlertRule = serde_json::from_slice(raw).ok()?;
    Some((rule.metadata.namespace.clone()?, rule))
}

fn parse_project(raw: &[u8]) -> Option<(String, ProjectBrief)> {
    let p: api::Project = serde_json::from_slice(raw).ok()?;
    let cluster = p.metadata.namespace.clone()?;
    Some((
        cluster.clone(),
        ProjectBrief {
            cluster,
            display_name: p.spec.display_name,
            status: p.status,
        },
    ))
}

fn parse_notifier(raw: &[u8]) -> Option<api::NotifierSpec> {
    serde_json::from_slice::<api::Notifier>(raw)
        .ok()
        .map(|n| n.spec)
}

/// A backup's last run failed, with why (`None`: it did not).
fn parse_backup(raw: &[u8]) -> Option<Option<String>> {
    let v: Value = serde_json::from_slice(raw).ok()?;
    let ready = v
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned();
    Some(match ready {
        Some(c) if c["status"] == "False" => {
            Some(c["message"].as_str().unwrap_or("failed").to_owned())
        }
        _ => None,
    })
}

/// What alerting reads from the datastore.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Clusters, by store key.
    pub clusters: Arc<Mirror<ClusterBrief>>,
    /// Projects, by cluster.
    pub projects: Arc<Grouped<ProjectBrief>>,
    /// Alert rules, by namespace.
    pub rules: Arc<Grouped<api::AlertRule>>,
    /// Notifiers, by store key.
    pub notifiers: Arc<Mirror<api::NotifierSpec>>,
    /// Backups, by store key: why the last run failed, if it did.
    pub backups: Arc<Mirror<Option<String>>>,
}

impl Fleet {
    /// Start following the store.
    pub fn spawn(store: &Store) -> Self {
        let g = api::GROUP;
        Self {
            clusters: Mirror::spawn(
                store,
                &keys::prefix(g, "clusters", None),
                ClusterBrief::parse,
            )
            .0,
            projects: Grouped::spawn(store, &keys::prefix(g, "projects", None), parse_project),
            rules: Grouped::spawn(store, &keys::prefix(g, "alertrules", None), parse_rule),
            notifiers: Mirror::spawn(store, &keys::prefix(g, "notifiers", None), parse_notifier).0,
            backups: Mirror::spawn(store, &keys::prefix(g, "backups", None), parse_backup).0,
        }
    }

    /// Whether every part has loaded once (until then, nothing read from
    /// it means anything is absent).
    pub fn loaded(&self) -> bool {
        self.clusters.revision() > 0
            && self.projects.loaded()
            && self.rules.loaded()
            && self.notifiers.revision() > 0
            && self.backups.revision() > 0
    }

    /// A cluster, by id.
    pub fn cluster(&self, id: &str) -> Option<ClusterBrief> {
        self.clusters
            .get(&keys::object(api::GROUP, "clusters", None, id))
            .map(|(c, _)| c)
    }

    /// A notifier, by name.
    pub fn notifier(&self, name: &str) -> Option<api::NotifierSpec> {
        self.notifiers
            .get(&keys::object(api::GROUP, "notifiers", None, name))
            .map(|(n, _)| n)
    }

    /// Backups whose last run failed, with why.
    pub fn failed_backups(&self) -> Vec<(String, String)> {
        self.backups
            .items()
            .into_iter()
            .filter_map(|(k, why, _)| {
                Some((k.rsplit('/').next().unwrap_or_default().to_owned(), why?))
            })
            .collect()
    }
}
