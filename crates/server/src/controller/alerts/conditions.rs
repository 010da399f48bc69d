//! An alert rule's condition evaluated over what Drover already holds: the
//! Cluster's status, the projects' quota use, Drover's certificates and
//! backups, and the downstream facts the cluster's watches keep
//! ([`super::facts`]). Pure: the same inputs give the same findings.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use drover_core::api::{self, AlertCondition};
use drover_core::{meta, quantity};

use super::facts::Facts;
use super::view::{ClusterBrief, ProjectBrief};

/// How long a matching event keeps an `event` rule firing.
pub const EVENT_WINDOW: Duration = Duration::from_secs(300);

/// One affected object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// `cluster/c-x`, `node/n1`, `pod/ns/name`, `deployment/ns/name`, …
    pub object: String,
}

/// What a rule is evaluated against.
pub struct Inputs<'a> {
    /// Now.
    pub now: SystemTime,
    /// The cluster's id.
    pub cluster_id: &'a str,
    /// The cluster, as its status says.
    pub cluster: Option<&'a ClusterBrief>,
    /// The namespaces a project rule covers (`None`: the whole cluster).
    pub namespaces: Option<&'a BTreeSet<String>>,
    /// The projects in scope.
    pub projects: &'a [(String, std::sync::Arc<ProjectBrief>)],
    /// Downstream facts (empty until the watches have listed).
    pub facts: &'a Facts,
    /// The cluster's nodes, as its controller's watch has them.
    pub nodes: &'a std::collections::BTreeMap<String, super::facts::Node>,
    /// Since when the pods have been watched.
    pub watched_since: Option<SystemTime>,
    /// What the rule names while it fires: these have held long enough.
    pub affected: &'a BTreeSet<String>,
    /// Drover's certificates: name and expiry (Unix seconds).
    pub certificates: &'a [(String, i64)],
    /// Backups whose last run failed, with why.
    pub failed_backups: &'a [(String, String)],
}

impl Inputs<'_> {
    fn in_scope(&self, namespace: &str, only: Option<&String>) -> bool {
        only.is_none_or(|n| n == namespace)
            && self.namespaces.is_none_or(|set| set.contains(namespace))
    }

    /// Whether `object` has been wrong for `seconds` (or was already named
    /// by the firing rule: a clock started again changes nothing).
    fn held_for(&self, object: &str, since: Option<SystemTime>, seconds: u64) -> bool {
        if self.affected.contains(object) {
            return true;
        }
        let since = since.unwrap_or(self.now);
        self.now.duration_since(since).unwrap_or_default().as_secs() >= seconds
    }
}

/// A rule's label selector, parsed once per evaluation (`None`: every
/// pod; one that does not parse, which the API refuses, matches none).
type Selector = Option<Option<drover_apiserver::selector::LabelSelector>>;

fn selector(s: Option<&String>) -> Selector {
    s.map(|s| drover_apiserver::selector::LabelSelector::parse(s).ok())
}

fn matches(selector: &Selector, labels: &std::collections::BTreeMap<String, String>) -> bool {
    match selector {
        None => true,
        Some(sel) => sel.as_ref().is_some_and(|sel| sel.matches(labels)),
    }
}

/// The objects a condition finds wrong now.
pub fn evaluate(condition: &AlertCondition, i: &Inputs<'_>) -> Vec<Finding> {
    let mut out = BTreeSet::new();
    let mut add = |object: String| {
        out.insert(Finding { object });
    };
    if let Some(c) = &condition.cluster_disconnected {
        if let Some(cluster) = i.cluster {
            if let Some(since) = cluster.down_since() {
                let object = format!("cluster/{}", i.cluster_id);
                if i.held_for(&object, Some(since), c.for_seconds) {
                    add(object);
                }
            }
        }
    }
    if let Some(c) = &condition.node_not_ready {
        for (name, node) in i.nodes {
            if let Some(since) = node.bad_since {
                let object = format!("node/{name}");
                if i.held_for(&object, Some(since), c.for_seconds) {
                    add(object);
                }
            }
        }
    }
    if let Some(c) = &condition.node_resource_usage {
        // Each node's requests, summed over its pods once.
        let mut requested: std::collections::HashMap<&str, i128> = std::collections::HashMap::new();
        for p in i.facts.pods.values().filter(|p| !p.terminal) {
            if let Some(node) = p.node.as_deref() {
                let q = if c.resource == "pods" {
                    1000 // a pod, in thousandths
                } else {
                    p.requests.get(&c.resource).copied().unwrap_or(0)
                };
                *requested.entry(node).or_default() += q;
            }
        }
        for (name, node) in i.nodes {
            let Some(allocatable) = node.allocatable.get(&c.resource).copied() else {
                continue;
            };
            let used = requested.get(name.as_str()).copied().unwrap_or(0);
            if allocatable > 0
                && used.saturating_mul(100) >= allocatable.saturating_mul(c.percent as i128)
            {
                add(format!("node/{name}"));
            }
        }
    }
    if let Some(c) = &condition.pod_not_running {
        let sel = selector(c.selector.as_ref());
        for ((ns, name), pod) in &i.facts.pods {
            if !i.in_scope(ns, c.namespace.as_ref()) || !matches(&sel, &pod.labels) {
                continue;
            }
            if let Some(since) = pod.bad_since {
                let object = format!("pod/{ns}/{name}");
                if i.held_for(&object, Some(since), c.for_seconds) {
                    add(object);
                }
            }
        }
    }
    if let Some(c) = &condition.pod_restarts {
        let window = Duration::from_secs(c.window_seconds);
        let sel = selector(c.selector.as_ref());
        for ((ns, name), pod) in &i.facts.pods {
            if !i.in_scope(ns, c.namespace.as_ref()) || !matches(&sel, &pod.labels) {
                continue;
            }
            let recent: u32 = pod
                .restarts
                .iter()
                .filter(|(at, _)| i.now.duration_since(*at).unwrap_or_default() <= window)
                .fold(0u32, |sum, (_, n)| sum.saturating_add(*n));
            let object = format!("pod/{ns}/{name}");
            // Restarts are counted while watched: a pod the firing rule
            // names stays named until a whole window has been watched.
            let young = i
                .watched_since
                .is_none_or(|at| i.now.duration_since(at).unwrap_or_default() < window);
            if recent > c.count || (young && i.affected.contains(&object)) {
                add(object);
            }
        }
    }
    if let Some(c) = &condition.workload_unavailable {
        for ((kind, ns, name), w) in &i.facts.workloads {
            if !i.in_scope(ns, c.namespace.as_ref()) || c.name.as_ref().is_some_and(|n| n != name) {
                continue;
            }
            if let Some(since) = w.short_since {
                let object = format!("{kind}/{ns}/{name}");
                if i.held_for(&object, Some(since), c.for_seconds) {
                    add(object);
                }
            }
        }
    }
    if let Some(c) = &condition.quota_usage {
        for (id, project) in i.projects {
            let Some(status) = &project.status else {
                continue;
            };
            if let Some(total) = &status.resource_quota {
                if over(total, c.percent) {
                    add(format!("project/{id}"));
                }
            }
            for (ns, usage) in &status.namespaces {
                if over(usage, c.percent) {
                    add(format!("namespace/{ns}"));
                }
            }
        }
    }
    if let Some(c) = &condition.event {
        let type_ = c.type_.as_deref().unwrap_or("Warning");
        for e in i.facts.events.values() {
            if e.reason == c.reason
                && e.type_ == type_
                && i.in_scope(&e.namespace, None)
                && i.now.duration_since(e.last_seen).unwrap_or_default() <= EVENT_WINDOW
            {
                add(format!(
                    "{}/{}/{}",
                    e.kind.to_lowercase(),
                    e.namespace,
                    e.name
                ));
            }
        }
    }
    if let Some(c) = &condition.certificate_expiry {
        let now = i
            .now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        for (name, not_after) in i.certificates {
            if *not_after - now < i64::from(c.days) * 86_400 {
                add(format!("certificate/{name}"));
            }
        }
    }
    if condition.backup_failed.is_some() {
        for (name, _) in i.failed_backups {
            add(format!("backup/{name}"));
        }
    }
    out.into_iter().collect()
}

/// Whether any limited resource is used at `percent` or more of its limit.
fn over(usage: &api::QuotaUsage, percent: u32) -> bool {
    usage.limit.iter().any(|(key, limit)| {
        let (Some(limit), Some(used)) = (
            quantity::parse(limit),
            usage.used.get(key).and_then(|u| quantity::parse(u)),
        ) else {
            return false;
        };
        limit > 0 && used.saturating_mul(100) >= limit.saturating_mul(percent as i128)
    })
}

/// Words for what a rule found.
pub fn summary(condition: &str, cluster: &str, affected: &[String]) -> String {
    let what = match condition {
        "clusterDisconnected" => "cluster not connected or not ready",
        "nodeNotReady" => "nodes not ready or under pressure",
        "nodeResourceUsage" => "nodes requested over the threshold",
        "podNotRunning" => "pods not running",
        "podRestarts" => "pods restarting",
        "workloadUnavailable" => "workloads short of available replicas",
        "quotaUsage" => "quota use over the threshold",
        "event" => "warning events",
        "certificateExpiry" => "certificates expiring",
        "backupFailed" => "backups failed",
        other => other,
    };
    let shown: Vec<&str> = affected.iter().take(5).map(String::as_str).collect();
    let more = affected.len().saturating_sub(shown.len());
    let mut s = format!("{what} in {cluster}");
    if !shown.is_empty() {
        s.push_str(": ");
        s.push_str(&shown.join(", "));
    }
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}

/// Parse an RFC 3339 time.
pub fn time(s: Option<&str>) -> Option<SystemTime> {
    s.and_then(meta::parse_rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn inputs<'a>(
        facts: &'a Facts,
        projects: &'a [(String, std::sync::Arc<ProjectBrief>)],
    ) -> Inputs<'a> {
        Inputs {
            now: SystemTime::now(),
            cluster_id: "c-abcde",
            cluster: None,
            namespaces: None,
            projects,
            facts,
            nodes: &NO_NODES,
            affected: &NO_AFFECTED,
            watched_since: None,
            certificates: &[],
            failed_backups: &[],
        }
    }

    static NO_NODES: BTreeMap<String, super::super::facts::Node> = BTreeMap::new();
    static NO_AFFECTED: BTreeSet<String> = BTreeSet::new();

    #[test]
    fn quota_over_a_share_fires() {
        let status = api::ProjectStatus {
            resource_quota: Some(api::QuotaUsage {
                limit: BTreeMap::from([("pods".into(), "10".into())]),
                used: BTreeMap::from([("pods".into(), "9".into())]),
            }),
            ..Default::default()
        };
        let projects = vec![(
            "p-x".to_owned(),
            std::sync::Arc::new(ProjectBrief {
                cluster: "c-abcde".into(),
                display_name: "x".into(),
                status: Some(status),
            }),
        )];
        let facts = Facts::default();
        let c = |percent| AlertCondition {
            quota_usage: Some(api::QuotaUsageCondition { percent }),
            ..Default::default()
        };
        assert_eq!(evaluate(&c(90), &inputs(&facts, &projects)).len(), 1);
        assert!(evaluate(&c(91), &inputs(&facts, &projects)).is_empty());
    }

    #[test]
    fn workloads_short_for_long_enough() {
        let mut facts = Facts::default();
        facts.workloads.insert(
            ("deployment".into(), "web".into(), "api".into()),
            super::super::facts::Workload {
                short_since: Some(SystemTime::now() - Duration::from_secs(20)),
            },
        );
        let c = |for_seconds| AlertCondition {
            workload_unavailable: Some(api::WorkloadUnavailable {
                for_seconds,
                ..Default::default()
            }),
            ..Default::default()
        };
        let found = evaluate(&c(10), &inputs(&facts, &[]));
        assert_eq!(found[0].object, "deployment/web/api");
        assert!(evaluate(&c(60), &inputs(&facts, &[])).is_empty());
    }
}
