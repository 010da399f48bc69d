//! Kubernetes RBAC, as kube-apiserver's RBAC authorizer evaluates it.
//!
//! - [`PolicyRule`]: verbs × apiGroups × resources(/subresources) ×
//!   resourceNames, or verbs × nonResourceURLs.
//! - [`Attributes`]: what a request wants to do (like `authorizer.Attributes`).
//! - [`RuleSet`]: the rules a user holds, cluster-wide (from ClusterRoleBindings
//!   or global roles) and per namespace (from RoleBindings).
//! - [`covers`]: whether one set of rules includes another, the check that
//!   stops privilege escalation when granting roles.

use std::collections::{BTreeMap, HashMap};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Wildcard in verbs, apiGroups, resources and nonResourceURLs.
pub const ALL: &str = "*";

/// One RBAC rule (`rbac.authorization.k8s.io/v1` `PolicyRule`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRule {
    /// Verbs such as `get`, `list`, `create`, or `*`.
    pub verbs: Vec<String>,
    /// API groups (`""` is the core group), or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources, `resource/subresource`, `*/subresource`, or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Names the rule is limited to; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Non-resource paths such as `/healthz` or `/api/*`.
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

impl PolicyRule {
    /// A resource rule.
    pub fn resource(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Self {
        Self {
            verbs: strings(verbs),
            api_groups: strings(groups),
            resources: strings(resources),
            ..Default::default()
        }
    }

    /// The same rule limited to some names.
    pub fn named(mut self, names: &[&str]) -> Self {
        self.resource_names = strings(names);
        self
    }

    /// A non-resource rule.
    pub fn non_resource(verbs: &[&str], urls: &[&str]) -> Self {
        Self {
            verbs: strings(verbs),
            non_resource_urls: strings(urls),
            ..Default::default()
        }
    }

    /// Whether this rule allows the request.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !matches(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == ALL
                    || *u == a.path
                    || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        matches(&self.api_groups, &a.api_group)
            && self.resource_matches(a)
            && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
    }

    fn resource_matches(&self, a: &Attributes) -> bool {
        let combined = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        self.resources.iter().any(|r| {
            r == ALL
                || *r == combined
                || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
        })
    }
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| (*x).to_owned()).collect()
}

fn matches(list: &[String], value: &str) -> bool {
    list.iter().any(|x| x == ALL || x == value)
}

/// Who is asking (`user.Info`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The user's name (for Drover users, the User object's name).
    pub name: String,
    /// A unique id.
    pub uid: String,
    /// Groups, always including `system:authenticated` for a known user.
    pub groups: Vec<String>,
    /// Extra attributes.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What a request wants to do (`authorizer.Attributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `impersonate`, `bind`, `escalate`, …
    pub verb: String,
    /// False for non-resource paths such as `/healthz`.
    pub resource_request: bool,
    /// API group (`""` for core).
    pub api_group: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource (`status`, `log`, …) or empty.
    pub subresource: String,
    /// Namespace or empty for cluster scope.
    pub namespace: String,
    /// Object name or empty.
    pub name: String,
    /// The path, for non-resource requests.
    pub path: String,
}

impl Attributes {
    /// A resource request.
    pub fn resource(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Self {
        Self {
            verb: verb.to_owned(),
            resource_request: true,
            api_group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            ..Default::default()
        }
    }

    /// The same request on a subresource.
    pub fn on_subresource(mut self, subresource: &str) -> Self {
        self.subresource = subresource.to_owned();
        self
    }
}

/// The rules a user holds: cluster-wide and per namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// Rules that apply in every namespace and at cluster scope.
    pub cluster: Vec<PolicyRule>,
    /// Rules that apply only to resources in one namespace.
    pub namespaced: HashMap<String, Vec<PolicyRule>>,
}

impl RuleSet {
    /// Whether any rule allows the request. Namespaced rules never allow
    /// cluster-scoped or non-resource requests, as with RoleBindings.
    pub fn allows(&self, a: &Attributes) -> bool {
        if self.cluster.iter().any(|r| r.allows(a)) {
            return true;
        }
        a.resource_request
            && !a.namespace.is_empty()
            && self
                .namespaced
                .get(&a.namespace)
                .is_some_and(|rules| rules.iter().any(|r| r.allows(a)))
    }

    /// Add rules for one namespace.
    pub fn add_namespaced(&mut self, namespace: &str, rules: impl IntoIterator<Item = PolicyRule>) {
        self.namespaced
            .entry(namespace.to_owned())
            .or_default()
            .extend(rules);
    }

    /// Whether these rules hold every rule of `wanted` in `namespace` (or
    /// cluster-wide when `namespace` is `None`). Returns the rules, broken
    /// into single permissions, that are missing.
    pub fn covers(&self, namespace: Option<&str>, wanted: &[PolicyRule]) -> Vec<PolicyRule> {
        let mut owner = self.cluster.clone();
        if let Some(ns) = namespace {
            owner.extend(self.namespaced.get(ns).cloned().unwrap_or_default());
        }
        covers(&owner, wanted)
    }
}

/// The permissions of `servant` that `owner` lacks, each as a rule with one
/// verb, one group, one resource and at most one name (Kubernetes'
/// `validation.Covers`). Empty means `owner` covers `servant`.
pub fn covers(owner: &[PolicyRule], servant: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut missing = Vec::new();
    for rule in servant {
        for atom in breakdown(rule) {
            if !owner.iter().any(|o| rule_covers(o, &atom)) {
                missing.push(atom);
            }
        }
    }
    missing
}

/// Split a rule into rules of one verb × one group × one resource × one name.
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for url in &rule.non_resource_urls {
            out.push(PolicyRule::non_resource(&[verb], &[url]));
        }
        for group in &rule.api_groups {
            for resource in &rule.resources {
                let base = PolicyRule::resource(&[verb], &[group], &[resource]);
                if rule.resource_names.is_empty() {
                    out.push(base);
                } else {
                    for name in &rule.resource_names {
                        out.push(base.clone().named(&[name]));
                    }
                }
            }
        }
    }
    out
}

/// Whether `owner` includes the single-permission rule `atom`.
fn rule_covers(owner: &PolicyRule, atom: &PolicyRule) -> bool {
    let has = |list: &[String], v: &str| list.iter().any(|x| x == ALL || x == v);
    let verb = &atom.verbs[0];
    if !has(&owner.verbs, verb) {
        return false;
    }
    if let Some(url) = atom.non_resource_urls.first() {
        // Kubernetes' nonResourceURLCovers.
        return owner.non_resource_urls.iter().any(|o| {
            o == url
                || o.strip_suffix('*')
                    .is_some_and(|prefix| url.starts_with(prefix))
        });
    }
    let (group, resource) = (&atom.api_groups[0], &atom.resources[0]);
    let resource_ok = owner.resources.iter().any(|o| {
        o == ALL
            || o == resource
            || o.strip_prefix("*/")
                .is_some_and(|sub| resource.split_once('/').is_some_and(|(_, s)| s == sub))
    });
    let names_ok = owner.resource_names.is_empty()
        || atom
            .resource_names
            .first()
            .is_some_and(|n| owner.resource_names.contains(n));
    has(&owner.api_groups, group) && resource_ok && names_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
        Attributes::resource("get", group, resource, ns, name)
    }

    #[test]
    fn verbs_groups_resources_names() {
        let r = PolicyRule::resource(&["get", "list"], &[""], &["pods"]);
        assert!(r.allows(&get("", "pods", "ns", "p")));
        assert!(!r.allows(&get("apps", "pods", "ns", "p")));
        assert!(!r.allows(&Attributes::resource("delete", "", "pods", "ns", "p")));
        assert!(
            !r.allows(&get("", "pods", "ns", "p").on_subresource("log")),
            "subresources need their own rule"
        );
        let named = r.clone().named(&["p"]);
        assert!(named.allows(&get("", "pods", "ns", "p")));
        assert!(!named.allows(&get("", "pods", "ns", "q")));
        let wild = PolicyRule::resource(&["*"], &["*"], &["*"]);
        assert!(wild.allows(&get("x", "y", "", "z").on_subresource("status")));
        let sub = PolicyRule::resource(&["get"], &[""], &["*/log"]);
        assert!(sub.allows(&get("", "pods", "ns", "p").on_subresource("log")));
        assert!(!sub.allows(&get("", "pods", "ns", "p")));
    }

    #[test]
    fn non_resource_urls() {
        let r = PolicyRule::non_resource(&["get"], &["/healthz", "/api/*"]);
        let path = |p: &str| Attributes {
            verb: "get".into(),
            path: p.into(),
            ..Default::default()
        };
        assert!(r.allows(&path("/healthz")));
        assert!(r.allows(&path("/api/v1")));
        assert!(!r.allows(&path("/apis")));
        assert!(
            !r.allows(&get("", "healthz", "", "")),
            "non-resource rules never allow resources"
        );
    }

    #[test]
    fn namespaced_rules_stay_in_their_namespace() {
        let mut set = RuleSet::default();
        set.add_namespaced("a", [PolicyRule::resource(&["get"], &[""], &["pods"])]);
        assert!(set.allows(&get("", "pods", "a", "p")));
        assert!(!set.allows(&get("", "pods", "b", "p")));
        assert!(
            !set.allows(&get("", "pods", "", "")),
            "not at cluster scope"
        );
    }

    #[test]
    fn covers_finds_missing_permissions() {
        let owner = [PolicyRule::resource(
            &["get", "list"],
            &[""],
            &["pods", "services"],
        )];
        assert!(covers(&owner, &[PolicyRule::resource(&["get"], &[""], &["pods"])]).is_empty());
        let missing = covers(
            &owner,
            &[PolicyRule::resource(&["get", "delete"], &[""], &["pods"])],
        );
        assert_eq!(
            missing,
            vec![PolicyRule::resource(&["delete"], &[""], &["pods"])]
        );
        let all = [PolicyRule::resource(&["*"], &["*"], &["*"])];
        assert!(covers(
            &all,
            &[PolicyRule::resource(&["delete"], &["x"], &["y"]).named(&["n"])]
        )
        .is_empty());
        let named_owner = [PolicyRule::resource(&["get"], &[""], &["pods"]).named(&["a"])];
        assert!(!covers(
            &named_owner,
            &[PolicyRule::resource(&["get"], &[""], &["pods"])]
        )
        .is_empty());
        assert!(covers(
            &named_owner,
            &[PolicyRule::resource(&["get"], &[""], &["pods"]).named(&["a"])]
        )
        .is_empty());
    }
}
