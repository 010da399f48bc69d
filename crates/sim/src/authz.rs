//! Authorization in the simulator, as kube-apiserver's RBAC authorizer does
//! it: ClusterRoleBindings grant their role's rules everywhere, RoleBindings
//! only in their namespace; subjects are users, groups or service accounts;
//! a ClusterRole with an `aggregationRule` holds the rules of the
//! ClusterRoles its selectors match; `system:masters` may do anything.
//!
//! [`spawn_aggregation`] is kube's ClusterRole aggregation controller: it
//! writes the rules an aggregated ClusterRole holds into its `rules`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use drover_apiserver::{ApiError, Authorizer};
use drover_rbac::{PolicyRule, RuleSet, UserInfo};
use drover_store::{ListOptions, Store};
use futures::future::BoxFuture;
use serde_json::Value;

/// Keep every aggregated ClusterRole's `rules` the union of the rules of
/// the ClusterRoles its selectors match (in name order, without repeats),
/// after each change to ClusterRoles, until the task is aborted.
pub(crate) fn spawn_aggregation(store: Store) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt;
    tokio::spawn(async move {
        let prefix = drover_core::keys::prefix(RBAC, "clusterroles", None);
        loop {
            let from = match store.revisions().await {
                Ok(r) => r.current,
                Err(drover_store::StoreError::Closed) => return,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            match aggregate(&store, &prefix).await {
                Err(drover_store::StoreError::Closed) => return,
                Err(e) => tracing::warn!(error = %e, "ClusterRole aggregation failed"),
                Ok(()) => {}
            }
            let mut changes = store.watch(&prefix, from);
            tokio::select! {
                _ = changes.next() => {}
                () = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            }
        }
    })
}

/// One aggregation pass now (at start, so the roles read whole from the
/// first request on).
pub(crate) async fn aggregate_now(store: &Store) -> Result<(), drover_store::StoreError> {
    aggregate(
        store,
        &drover_core::keys::prefix(RBAC, "clusterroles", None),
    )
    .await
}

async fn aggregate(store: &Store, prefix: &str) -> Result<(), drover_store::StoreError> {
    let items = store
        .list(&ListOptions {
            prefix: prefix.into(),
            ..Default::default()
        })
        .await?
        .items;
    let roles: Vec<(String, i64, Value)> = items
        .into_iter()
        .filter_map(|kv| {
            Some((
                kv.key,
                kv.mod_revision,
                serde_json::from_slice(&kv.value).ok()?,
            ))
        })
        .collect();
    let by_name: std::collections::HashMap<&str, &Value> = roles
        .iter()
        .map(|(_, _, r)| (drover_apiserver::object::name(r), r))
        .collect();
    for (key, rev, role) in &roles {
        if role
            .pointer("/aggregationRule/clusterRoleSelectors")
            .is_none()
        {
            continue;
        }
        let name = drover_apiserver::object::name(role);
        let mut visited = std::collections::HashSet::from([name]);
        let mut wanted: Vec<Value> = Vec::new();
        aggregated_rules(role, &by_name, &mut visited, &mut wanted);
        if role.get("rules").and_then(Value::as_array) == Some(&wanted) {
            continue;
        }
        let mut new = role.clone();
        new["rules"] = Value::Array(wanted);
        match store.update(key, new.to_string(), *rev).await {
            // A conflict or a deletion: the next pass sees it.
            Ok(_)
            | Err(
                drover_store::StoreError::Conflict { .. } | drover_store::StoreError::NotFound(_),
            ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The rules an aggregated role holds: those of the roles its selectors
/// match (in name order, without repeats), through aggregated roles it
/// matches in turn. Computed from the roles that are not aggregated only,
/// so roles that select each other settle instead of trading rules.
fn aggregated_rules<'a>(
    role: &Value,
    roles: &std::collections::HashMap<&'a str, &'a Value>,
    visited: &mut std::collections::HashSet<&'a str>,
    out: &mut Vec<Value>,
) {
    let Some(selectors) = role
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
    else {
        return;
    };
    let mut sources: Vec<(&&str, &&Value)> = roles
        .iter()
        .filter(|(n, r)| {
            !visited.contains(**n)
                && selectors
                    .iter()
                    .any(|sel| selector_matches(sel, &labels(r)))
        })
        .collect();
    sources.sort_by_key(|(n, _)| **n);
    for (name, source) in sources {
        if source.get("aggregationRule").is_some() {
            if visited.insert(*name) {
                aggregated_rules(source, roles, visited, out);
            }
            continue;
        }
        for rule in source
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !out.contains(rule) {
                out.push(rule.clone());
            }
        }
    }
}

/// The group whose members bypass authorization.
pub const MASTERS: &str = "system:masters";
const RBAC: &str = "rbac.authorization.k8s.io";

#[derive(Debug, Default)]
struct Snapshot {
    cluster_roles: HashMap<String, Value>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_bindings: Vec<Value>,
    bindings: Vec<Value>,
}

fn rules(v: &Value) -> Vec<PolicyRule> {
    v.get("rules")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .filter_map(|r| serde_json::from_value(r.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    drover_apiserver::object::labels(v)
}

/// Whether a `metav1.LabelSelector` (matchLabels and matchExpressions)
/// matches `labels`.
pub(crate) fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let labels_ok = match_labels.is_none_or(|m| {
        m.iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
    });
    let exprs = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let exprs_ok = exprs.iter().all(|e| {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match e["operator"].as_str().unwrap_or_default() {
            "In" => labels
                .get(key)
                .is_some_and(|v| values.contains(&v.as_str())),
            "NotIn" => labels
                .get(key)
                .is_none_or(|v| !values.contains(&v.as_str())),
            "Exists" => labels.contains_key(key),
            "DoesNotExist" => !labels.contains_key(key),
            _ => false,
        }
    });
    labels_ok && exprs_ok && (match_labels.is_some() || !exprs.is_empty())
}

impl Snapshot {
    /// A ClusterRole's rules, including aggregated ones.
    fn cluster_role_rules(&self, name: &str, depth: usize) -> Vec<PolicyRule> {
        let Some(role) = self.cluster_roles.get(name) else {
            return Vec::new();
        };
        let mut out = rules(role);
        if depth < 5 {
            if let Some(selectors) = role
                .pointer("/aggregationRule/clusterRoleSelectors")
                .and_then(Value::as_array)
            {
                for (other, value) in &self.cluster_roles {
                    if other != name
                        && selectors
                            .iter()
                            .any(|s| selector_matches(s, &labels(value)))
                    {
                        out.extend(self.cluster_role_rules(other, depth + 1));
                    }
                }
            }
        }
        out
    }

    fn subject_matches(subject: &Value, user: &UserInfo, binding_ns: &str) -> bool {
        let name = subject["name"].as_str().unwrap_or_default();
        match subject["kind"].as_str().unwrap_or_default() {
            "User" => name == user.name,
            "Group" => user.groups.iter().any(|g| g == name),
            "ServiceAccount" => {
                let ns = subject["namespace"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(binding_ns);
                user.name == format!("system:serviceaccount:{ns}:{name}")
            }
            _ => false,
        }
    }

    fn rules_for(&self, user: &UserInfo) -> RuleSet {
        if user.groups.iter().any(|g| g == MASTERS) {
            return RuleSet {
                cluster: vec![
                    PolicyRule::resource(&["*"], &["*"], &["*"]),
                    PolicyRule::non_resource(&["*"], &["*"]),
                ],
                ..Default::default()
            };
        }
        let mut set = RuleSet::default();
        for b in &self.cluster_bindings {
            let subjects = b["subjects"].as_array().cloned().unwrap_or_default();
            if subjects.iter().any(|s| Self::subject_matches(s, user, ""))
                && b["roleRef"]["kind"] == "ClusterRole"
            {
                set.cluster.extend(
                    self.cluster_role_rules(b["roleRef"]["name"].as_str().unwrap_or_default(), 0),
                );
            }
        }
        for b in &self.bindings {
            let ns = b
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let subjects = b["subjects"].as_array().cloned().unwrap_or_default();
            if !subjects.iter().any(|s| Self::subject_matches(s, user, ns)) {
                continue;
            }
            let role = b["roleRef"]["name"].as_str().unwrap_or_default();
            let granted = match b["roleRef"]["kind"].as_str() {
                Some("ClusterRole") => self.cluster_role_rules(role, 0),
                Some("Role") => self
                    .roles
                    .get(&(ns.to_owned(), role.to_owned()))
                    .cloned()
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            set.add_namespaced(ns, granted);
        }
        set
    }
}

/// The simulator's RBAC authorizer.
#[derive(Debug)]
pub struct SimAuthorizer {
    store: Store,
    snapshot: drover_apiserver::versioned::Versioned<Snapshot>,
}

impl SimAuthorizer {
    /// An authorizer over `store`'s RBAC objects.
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self {
            store,
            snapshot: drover_apiserver::versioned::Versioned::new(),
        })
    }

    /// Mark the RBAC snapshot stale.
    pub fn invalidate(&self) {
        self.snapshot.invalidate();
    }

    /// Invalidate whenever an RBAC object changes in the store, also when
    /// a controller writes it directly (namespace deletion), until aborted.
    pub fn follow(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        self.store
            .follow(&format!("/registry/{RBAC}/"), self.clone())
    }

    async fn list(&self, plural: &str) -> Result<Vec<Value>, ApiError> {
        let page = self
            .store
            .list(&ListOptions {
                prefix: drover_core::keys::prefix(RBAC, plural, None),
                ..Default::default()
            })
            .await
            .map_err(|_| ApiError::unavailable("the datastore is unavailable"))?;
        Ok(page
            .items
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect())
    }

    async fn snapshot(&self) -> Result<Arc<Snapshot>, ApiError> {
        self.snapshot.get(|| self.build()).await
    }

    async fn build(&self) -> Result<Snapshot, ApiError> {
        let mut s = Snapshot::default();
        for r in self.list("clusterroles").await? {
            s.cluster_roles
                .insert(drover_apiserver::object::name(&r).to_owned(), r);
        }
        for r in self.list("roles").await? {
            let ns = drover_apiserver::object::meta_str(&r, "namespace").to_owned();
            s.roles.insert(
                (ns, drover_apiserver::object::name(&r).to_owned()),
                rules(&r),
            );
        }
        s.cluster_bindings = self.list("clusterrolebindings").await?;
        s.bindings = self.list("rolebindings").await?;
        Ok(s)
    }
}

/// Any change to an RBAC object, or a restarted watch, makes the snapshot
/// stale.
impl drover_store::Follower for SimAuthorizer {
    fn reset(&self, _revision: drover_store::Revision) -> futures::future::BoxFuture<'_, bool> {
        self.invalidate();
        Box::pin(async { true })
    }

    fn apply(&self, _event: &drover_store::Event) {
        self.invalidate();
    }

    fn lost(&self) {}
}

impl SimAuthorizer {
    /// The rules a binding's `roleRef` grants (in `namespace` for a Role).
    pub async fn referenced_rules(
        &self,
        role_ref: &Value,
        namespace: &str,
    ) -> Result<Vec<PolicyRule>, ApiError> {
        let snapshot = self.snapshot().await?;
        let name = role_ref["name"].as_str().unwrap_or_default();
        Ok(match role_ref["kind"].as_str() {
            Some("ClusterRole") => snapshot.cluster_role_rules(name, 0),
            Some("Role") => snapshot
                .roles
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
                .unwrap_or_default(),
            _ => Vec::new(),
        })
    }
}

/// The rules a Role or ClusterRole object states (aggregated ones are the
/// rules of other roles, which their own creation already checked).
pub(crate) fn stated_rules(role: &Value) -> Vec<PolicyRule> {
    rules(role)
}

impl Authorizer for SimAuthorizer {
    fn rules<'a>(
        &'a self,
        user: &'a UserInfo,
    ) -> BoxFuture<'a, Result<std::sync::Arc<RuleSet>, ApiError>> {
        Box::pin(async move { Ok(std::sync::Arc::new(self.snapshot().await?.rules_for(user))) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors() {
        let l: BTreeMap<String, String> = [(
            "rbac.authorization.k8s.io/aggregate-to-view".to_owned(),
            "true".to_owned(),
        )]
        .into();
        assert!(selector_matches(
            &json!({"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}),
            &l
        ));
        assert!(!selector_matches(
            &json!({"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}}),
            &l
        ));
        assert!(
            !selector_matches(&json!({}), &l),
            "an empty selector matches nothing here"
        );
    }
}
