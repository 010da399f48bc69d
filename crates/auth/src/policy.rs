//! Authorization of the management API with Kubernetes RBAC semantics.
//!
//! A user's rules are the union of:
//! - the rules of their global roles (GlobalRoleBindings, by user or group),
//!   cluster-wide;
//! - what their role-template bindings imply on the management API: a
//!   cluster-owner manages that cluster, its registration tokens, projects,
//!   bindings, project secrets and alert rules; a cluster-member sees the
//!   cluster and its alert rules and may create projects; a project-owner
//!   manages that project, its bindings, secrets and alert rules; project
//!   members see its bindings and alert rules; a project-member reads the project's secrets and sees
//!   the project; read-only and custom templates see the project and its
//!   cluster;
//! - what every authenticated user may do (reviews about themselves).
//!
//! The bindings are read into a [`Snapshot`] that is rebuilt when marked
//! dirty: by this process's writes to those kinds at once, and by a store
//! watch for other replicas' writes. The same watch keeps a mirror of every
//! policy object in memory, so a rebuild reads no rows and parses no JSON
//! (at ten thousand clusters that is thirty thousand objects per change).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use drover_apiserver::{ApiError, Authorizer};
use drover_core::api::{
    self, ClusterRoleTemplateBinding, GlobalRole, GlobalRoleBinding, Project,
    ProjectRoleTemplateBinding, RoleContext, RoleTemplate,
};
use drover_rbac::{PolicyRule, RuleSet, UserInfo};
use drover_store::{ListOptions, Store};
use futures::future::BoxFuture;
use serde_json::Value;

/// The built-in global roles.
pub fn builtin_global_roles() -> Vec<(&'static str, &'static str, Vec<PolicyRule>, bool)> {
    let g = api::GROUP;
    let own = vec![PolicyRule::resource(&["create"], &[g], &["tokens"])];
    let mut user = own.clone();
    user.push(PolicyRule::resource(&["create"], &[g], &["clusters"]));
    user.push(PolicyRule::resource(
        &["get", "list", "watch"],
        &[g],
        &[
            "roletemplates",
            "globalroles",
            "podsecurityadmissionconfigurationtemplates",
        ],
    ));
    vec![
        (
            "admin",
            "Administrator: everything",
            vec![
                PolicyRule::resource(&["*"], &["*"], &["*"]),
                PolicyRule::non_resource(&["*"], &["*"]),
            ],
            false,
        ),
        (
            "user",
            "Standard user: create clusters, use what they are bound to",
            user,
            true,
        ),
        ("user-base", "User base: own tokens and self", own, false),
    ]
}

/// The built-in role templates: (name, context, display name, downstream rules).
pub fn builtin_role_templates() -> Vec<(&'static str, RoleContext, &'static str, Vec<PolicyRule>)> {
    let workloads: &[&str] = &[
        "",
        "apps",
        "batch",
        "autoscaling",
        "networking.k8s.io",
        "policy",
    ];
    let edit_resources: &[&str] = &[
        "pods",
        "pods/log",
        "pods/exec",
        "pods/attach",
        "pods/portforward",
        "services",
        "endpoints",
        "configmaps",
        "secrets",
        "persistentvolumeclaims",
        "deployments",
        "deployments/scale",
        "replicasets",
        "replicasets/scale",
        "statefulsets",
        "statefulsets/scale",
        "daemonsets",
        "jobs",
        "cronjobs",
        "horizontalpodautoscalers",
        "ingresses",
        "networkpolicies",
        "poddisruptionbudgets",
        "serviceaccounts",
        "events",
    ];
    let view_resources: Vec<&str> = edit_resources
        .iter()
        .copied()
        .filter(|r| *r != "secrets" && !r.contains('/') || *r == "pods/log")
        .collect();
    let read = &["get", "list", "watch"];
    vec![
        (
            "cluster-owner",
            RoleContext::Cluster,
            "Cluster Owner",
            vec![
                PolicyRule::resource(&["*"], &["*"], &["*"]),
                PolicyRule::non_resource(&["*"], &["*"]),
            ],
        ),
        (
            "cluster-member",
            RoleContext::Cluster,
            "Cluster Member",
            vec![
                PolicyRule::resource(read, &[""], &["nodes", "namespaces", "persistentvolumes"]),
                PolicyRule::resource(read, &["storage.k8s.io"], &["storageclasses"]),
                PolicyRule::resource(
                    read,
                    &["apiextensions.k8s.io"],
                    &["customresourcedefinitions"],
                ),
            ],
        ),
        (
            "project-owner",
            RoleContext::Project,
            "Project Owner",
            vec![
                PolicyRule::resource(&["*"], workloads, &["*"]),
                PolicyRule::resource(
                    &["*"],
                    &["rbac.authorization.k8s.io"],
                    &["roles", "rolebindings"],
                ),
                PolicyRule::resource(
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete",
                    ],
                    &[""],
                    &["resourcequotas", "limitranges"],
                ),
            ],
        ),
        (
            "project-member",
            RoleContext::Project,
            "Project Member",
            vec![
                PolicyRule::resource(
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete",
                    ],
                    workloads,
                    edit_resources,
                ),
                // Bound in each namespace of the project, this lets a member
                // `get` those namespaces (and no others).
                PolicyRule::resource(&["get"], &[""], &["namespaces"]),
                // Revision history, as kube's own edit and view roles.
                PolicyRule::resource(read, &["apps"], &["controllerrevisions"]),
            ],
        ),
        (
            "read-only",
            RoleContext::Project,
            "Read-only",
            vec![
                PolicyRule::resource(read, workloads, &view_resources),
                PolicyRule::resource(&["get"], &[""], &["namespaces"]),
                PolicyRule::resource(read, &["apps"], &["controllerrevisions"]),
            ],
        ),
    ]
}

/// Rules every authenticated user holds (kube's `system:basic-user`).
fn basic_user_rules() -> Vec<PolicyRule> {
    vec![
        PolicyRule::resource(
            &["create"],
            &["authorization.k8s.io"],
            &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
        ),
        PolicyRule::resource(
            &["create"],
            &["authentication.k8s.io"],
            &["selfsubjectreviews"],
        ),
    ]
}

/// Who a binding is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// A user, by name.
    User(String),
    /// A group, by name.
    Group(String),
}

impl Subject {
    fn of(user: Option<&String>, group: Option<&String>) -> Option<Self> {
        match (user, group) {
            (Some(u), _) if !u.is_empty() => Some(Subject::User(u.clone())),
            (_, Some(g)) if !g.is_empty() => Some(Subject::Group(g.clone())),
            _ => None,
        }
    }

    fn matches(&self, user: &UserInfo) -> bool {
        match self {
            Subject::User(u) => *u == user.name,
            Subject::Group(g) => user.groups.contains(g),
        }
    }
}

/// Everything authorization reads, at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    global_roles: HashMap<String, Vec<PolicyRule>>,
    new_user_defaults: Vec<String>,
    grbs: Vec<(Subject, String)>,
    templates: HashMap<String, api::RoleTemplateSpec>,
    /// (subject, cluster, template)
    crtbs: Vec<(Subject, String, String)>,
    /// (subject, cluster, project, template)
    prtbs: Vec<(Subject, String, String, String)>,
    /// cluster → its projects
    projects: HashMap<String, Vec<String>>,
    /// (cluster, project) → its spec
    project_specs: HashMap<(String, String), api::ProjectSpec>,
    /// Subjects of global roles that grant everything.
    global_admins: std::collections::BTreeSet<Subject>,
    /// cluster → its cluster bindings (subject, template)
    crtbs_by_cluster: HashMap<String, Vec<(Subject, String)>>,
    /// cluster → its project bindings (subject, project, template)
    prtbs_by_cluster: HashMap<String, Vec<(Subject, String, String)>>,
    /// Rules already worked out per (user, groups), for this snapshot only:
    /// a request then costs a lookup, not a walk over every binding.
    rules_cache: std::sync::Mutex<HashMap<RulesKey, Arc<RuleSet>>>,
}

/// Whose rules: a user name and their groups.
type RulesKey = (String, Vec<String>);

/// Users whose rules one snapshot remembers; past it, the cache restarts.
const RULES_CACHE_USERS: usize = 4096;

impl Snapshot {
    /// A template's rules with the templates it names, flattened.
    pub fn template_rules(&self, name: &str) -> Vec<PolicyRule> {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let mut stack = vec![name.to_owned()];
        while let Some(n) = stack.pop() {
            if seen.contains(&n) {
                continue;
            }
            if let Some(t) = self.templates.get(&n) {
                out.extend(t.rules.iter().cloned());
                stack.extend(t.role_template_names.iter().cloned());
            }
            seen.push(n);
        }
        out
    }

    /// Whether a template exists, and its context.
    pub fn template_context(&self, name: &str) -> Option<RoleContext> {
        self.templates.get(name).map(|t| t.context)
    }

    /// The global roles every new user gets.
    pub fn default_global_roles(&self) -> Vec<String> {
        self.new_user_defaults.clone()
    }

    /// A global role's rules.
    pub fn global_role(&self, name: &str) -> Option<&Vec<PolicyRule>> {
        self.global_roles.get(name)
    }

    /// The user's rules on the management API.
    pub fn rules(&self, user: &UserInfo) -> Arc<RuleSet> {
        let key = (user.name.clone(), user.groups.clone());
        let lock = || self.rules_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = lock().get(&key) {
            return set.clone();
        }
        let set = Arc::new(self.compute_rules(user));
        let mut cache = lock();
        if cache.len() >= RULES_CACHE_USERS {
            cache.clear();
        }
        cache.insert(key, set.clone());
        set
    }

    fn compute_rules(&self, user: &UserInfo) -> RuleSet {
        let g = api::GROUP;
        let mut set = RuleSet {
            cluster: basic_user_rules(),
            ..Default::default()
        };
        for (subject, role) in &self.grbs {
            if subject.matches(user) {
                set.cluster
                    .extend(self.global_roles.get(role).cloned().unwrap_or_default());
            }
        }
        for (subject, cluster, template) in &self.crtbs {
            if !subject.matches(user) {
                continue;
            }
            match template.as_str() {
                "cluster-owner" => {
                    set.cluster.push(
                        PolicyRule::resource(&["*"], &[g], &["clusters", "clusters/status"])
                            .named(&[cluster]),
                    );
                    set.cluster.push(
                        PolicyRule::resource(&["create"], &[g], &["clusters/kubeconfig"])
                            .named(&[cluster]),
                    );
                    set.add_namespaced(
                        cluster,
                        [PolicyRule::resource(
                            &["*"],
                            &[g],
                            &[
                                "clusterregistrationtokens",
                                "projects",
                                "clusterroletemplatebindings",
                                "alertrules",
                            ],
                        )],
                    );
                    for project in self.projects.get(cluster).into_iter().flatten() {
                        set.add_namespaced(
                            project,
                            [
                                PolicyRule::resource(
                                    &["*"],
                                    &[g],
                                    &["projectroletemplatebindings", "alertrules"],
                                ),
                                PolicyRule::resource(&["*"], &[""], &["secrets"]),
                            ],
                        );
                    }
                }
                "cluster-member" => {
                    set.cluster.push(
                        PolicyRule::resource(&["get"], &[g], &["clusters"]).named(&[cluster]),
                    );
                    set.cluster.push(
                        PolicyRule::resource(&["create"], &[g], &["clusters/kubeconfig"])
                            .named(&[cluster]),
                    );
                    set.add_namespaced(
                        cluster,
                        [
                            PolicyRule::resource(&["create"], &[g], &["projects"]),
                            PolicyRule::resource(&["get", "list", "watch"], &[g], &["alertrules"]),
                        ],
                    );
                }
                _ => {
                    set.cluster.push(
                        PolicyRule::resource(&["get"], &[g], &["clusters"]).named(&[cluster]),
                    );
                    set.cluster.push(
                        PolicyRule::resource(&["create"], &[g], &["clusters/kubeconfig"])
                            .named(&[cluster]),
                    );
                }
            }
        }
        for (subject, cluster, project, template) in &self.prtbs {
            if !subject.matches(user) {
                continue;
            }
            set.cluster
                .push(PolicyRule::resource(&["get"], &[g], &["clusters"]).named(&[cluster]));
            set.cluster.push(
                PolicyRule::resource(&["create"], &[g], &["clusters/kubeconfig"]).named(&[cluster]),
            );
            if template == "project-owner" {
                set.add_namespaced(
                    cluster,
                    [PolicyRule::resource(
                        &["get", "update", "patch", "delete"],
                        &[g],
                        &["projects"],
                    )
                    .named(&[project])],
                );
                set.add_namespaced(
                    project,
                    [
                        PolicyRule::resource(
                            &["*"],
                            &[g],
                            &["projectroletemplatebindings", "alertrules"],
                        ),
                        PolicyRule::resource(&["*"], &[""], &["secrets"]),
                    ],
                );
            } else {
                if template == "project-member" {
                    set.add_namespaced(
                        project,
                        [PolicyRule::resource(
                            &["get", "list", "watch"],
                            &[""],
                            &["secrets"],
                        )],
                    );
                }
                set.add_namespaced(
                    cluster,
                    [PolicyRule::resource(&["get"], &[g], &["projects"]).named(&[project])],
                );
                set.add_namespaced(
                    project,
                    [PolicyRule::resource(
                        &["get", "list", "watch"],
                        &[g],
                        &["projectroletemplatebindings", "alertrules"],
                    )],
                );
            }
        }
        set
    }

    /// Whether the user holds every right on the management API (a global
    /// role granting `*` on `*`).
    pub fn is_admin(&self, user: &UserInfo) -> bool {
        all_powerful(&self.rules(user).cluster)
    }

    /// Whether the user may reach a cluster through the proxy: an admin, or
    /// someone bound to a role in the cluster or one of its projects.
    pub fn reaches_cluster(&self, user: &UserInfo, cluster: &str) -> bool {
        let bound = |s: &Subject| s.matches(user);
        self.crtbs_by_cluster
            .get(cluster)
            .is_some_and(|b| b.iter().any(|(s, _)| bound(s)))
            || self
                .prtbs_by_cluster
                .get(cluster)
                .is_some_and(|b| b.iter().any(|(s, _, _)| bound(s)))
            || self.is_admin(user)
    }

    /// Whether the user owns the cluster (or is an admin).
    pub fn owns_cluster(&self, user: &UserInfo, cluster: &str) -> bool {
        self.crtbs_by_cluster.get(cluster).is_some_and(|b| {
            b.iter()
                .any(|(s, t)| t == "cluster-owner" && s.matches(user))
        }) || self.is_admin(user)
    }

    /// Whether the user may put namespaces into a project: its owners and
    /// members (not read-only members), the cluster's owners, admins.
    pub fn may_use_project(&self, user: &UserInfo, cluster: &str, project: &str) -> bool {
        self.prtbs_by_cluster.get(cluster).is_some_and(|b| {
            b.iter().any(|(s, p, t)| {
                p == project
                    && matches!(t.as_str(), "project-owner" | "project-member")
                    && s.matches(user)
            })
        }) || self.owns_cluster(user, cluster)
    }

    /// The projects of a cluster the user is bound to, in any role.
    pub fn projects_bound(&self, user: &UserInfo, cluster: &str) -> BTreeSet<String> {
        self.prtbs_by_cluster
            .get(cluster)
            .into_iter()
            .flatten()
            .filter(|(s, _, _)| s.matches(user))
            .map(|(_, p, _)| p.clone())
            .collect()
    }

    /// The cluster-context bindings in a cluster: (subject, template).
    pub fn cluster_bindings(&self, cluster: &str) -> Vec<(Subject, String)> {
        self.crtbs_by_cluster
            .get(cluster)
            .cloned()
            .unwrap_or_default()
    }

    /// The project bindings in a cluster: (subject, project, template).
    pub fn project_bindings(&self, cluster: &str) -> Vec<(Subject, String, String)> {
        self.prtbs_by_cluster
            .get(cluster)
            .cloned()
            .unwrap_or_default()
    }

    /// The projects of a cluster with their specs.
    pub fn projects_of(&self, cluster: &str) -> BTreeMap<String, api::ProjectSpec> {
        self.projects
            .get(cluster)
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let spec = self.project_specs.get(&(cluster.to_owned(), p.clone()))?;
                Some((p.clone(), spec.clone()))
            })
            .collect()
    }

    /// Who gets `cluster-admin` in a cluster: global admins' users and groups,
    /// and the cluster's owners.
    pub fn cluster_admins(&self, cluster: &str) -> std::collections::BTreeSet<Subject> {
        let mut out = self.global_admins.clone();
        for (subject, template) in self.crtbs_by_cluster.get(cluster).into_iter().flatten() {
            if template == "cluster-owner" {
                out.insert(subject.clone());
            }
        }
        out
    }

    /// The downstream rules the user holds in a cluster (and project): what
    /// they may grant to others there. A global admin holds everything.
    pub fn downstream_rules(
        &self,
        user: &UserInfo,
        cluster: &str,
        project: Option<&str>,
    ) -> Vec<PolicyRule> {
        let everything = PolicyRule::resource(&["*"], &["*"], &["*"]);
        if self.is_admin(user) {
            return vec![everything, PolicyRule::non_resource(&["*"], &["*"])];
        }
        let mut out = Vec::new();
        for (subject, c, t) in &self.crtbs {
            if subject.matches(user) && c == cluster {
                out.extend(self.template_rules(t));
            }
        }
        if let Some(p) = project {
            for (subject, c, pr, t) in &self.prtbs {
                if subject.matches(user) && c == cluster && pr == p {
                    out.extend(self.template_rules(t));
                }
            }
        }
        out
    }
}

impl Snapshot {
    /// The downstream rules the user holds in every cluster, present and
    /// future: what a role template they write may grant. Only a global
    /// admin holds any.
    pub fn downstream_everywhere(&self, user: &UserInfo) -> Vec<PolicyRule> {
        if self.is_admin(user) {
            vec![
                PolicyRule::resource(&["*"], &["*"], &["*"]),
                PolicyRule::non_resource(&["*"], &["*"]),
            ]
        } else {
            Vec::new()
        }
    }

    /// The bindings that give the user rights, each named by what it binds
    /// (`global:ROLE`, `cluster:CLUSTER:TEMPLATE`,
    /// `project:CLUSTER:PROJECT:TEMPLATE`); with `cluster`, only the global
    /// ones and those in that cluster. A connection opened with these
    /// rights ends when one of them goes.
    pub fn grants_of(
        &self,
        user: &UserInfo,
        cluster: Option<&str>,
    ) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for (subject, role) in &self.grbs {
            if subject.matches(user) && self.global_roles.contains_key(role) {
                out.insert(format!("global:{role}"));
            }
        }
        let here = |c: &str| cluster.is_none_or(|want| want == c);
        for (subject, c, template) in &self.crtbs {
            if subject.matches(user) && here(c) {
                out.insert(format!("cluster:{c}:{template}"));
            }
        }
        for (subject, c, project, template) in &self.prtbs {
            if subject.matches(user) && here(c) {
                out.insert(format!("project:{c}:{project}:{template}"));
            }
        }
        out
    }

    /// The templates that name `template` among theirs.
    pub fn inheritors(&self, template: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .templates
            .iter()
            .filter(|(_, t)| t.role_template_names.iter().any(|n| n == template))
            .map(|(n, _)| n.clone())
            .collect();
        out.sort();
        out
    }

    /// What `target` holds that `caller` does not: on the management API
    /// (cluster-wide and per namespace) and in each cluster and project the
    /// target is bound in. Acting as someone (their password, their
    /// account) is holding their rights, so it needs all of them.
    pub fn rights_missing(&self, caller: &UserInfo, target: &UserInfo) -> Vec<PolicyRule> {
        let mine = self.rules(caller);
        let theirs = self.rules(target);
        let mut missing = mine.covers(None, &theirs.cluster);
        for (ns, rules) in &theirs.namespaced {
            missing.extend(mine.covers(Some(ns), rules));
        }
        for (subject, cluster, template) in &self.crtbs {
            if subject.matches(target) {
                let held = self.downstream_rules(caller, cluster, None);
                missing.extend(drover_rbac::covers(&held, &self.template_rules(template)));
            }
        }
        for (subject, cluster, project, template) in &self.prtbs {
            if subject.matches(target) {
                let held = self.downstream_rules(caller, cluster, Some(project));
                missing.extend(drover_rbac::covers(&held, &self.template_rules(template)));
            }
        }
        missing
    }
}

/// Whether rules grant every verb on every resource of every group.
fn all_powerful(rules: &[PolicyRule]) -> bool {
    rules.iter().any(|r| {
        r.verbs.contains(&"*".into())
            && r.api_groups.contains(&"*".into())
            && r.resources.contains(&"*".into())
            && r.resource_names.is_empty()
    })
}

/// A policy object as a snapshot needs it, parsed once.
#[derive(Debug, Clone)]
enum PolicyObject {
    GlobalRole(GlobalRole),
    GlobalRoleBinding(GlobalRoleBinding),
    RoleTemplate(RoleTemplate),
    Project(Box<Project>),
    ClusterBinding(ClusterRoleTemplateBinding),
    ProjectBinding(ProjectRoleTemplateBinding),
}

impl PolicyObject {
    /// The object stored under `key`, if it is a policy kind.
    fn parse(key: &str, value: &[u8]) -> Option<Self> {
        Some(match policy_kind(key)? {
            "globalroles" => Self::GlobalRole(serde_json::from_slice(value).ok()?),
            "globalrolebindings" => Self::GlobalRoleBinding(serde_json::from_slice(value).ok()?),
            "roletemplates" => Self::RoleTemplate(serde_json::from_slice(value).ok()?),
            "projects" => Self::Project(Box::new(serde_json::from_slice(value).ok()?)),
            "clusterroletemplatebindings" => {
                Self::ClusterBinding(serde_json::from_slice(value).ok()?)
            }
            "projectroletemplatebindings" => {
                Self::ProjectBinding(serde_json::from_slice(value).ok()?)
            }
            _ => return None,
        })
    }
}

/// The policy kind a store key belongs to.
fn policy_kind(key: &str) -> Option<&'static str> {
    let rest = key
        .strip_prefix("/registry/")?
        .strip_prefix(api::GROUP)?
        .strip_prefix('/')?;
    let plural = rest.split('/').next()?;
    POLICY_KINDS.iter().copied().find(|k| *k == plural)
}

/// Every policy object by store key, kept current by [`RbacAuthorizer::follow`]
/// from the store's watch, so a rebuild reads memory instead of the store.
#[derive(Debug, Default)]
struct Mirror {
    objects: BTreeMap<String, PolicyObject>,
    /// Whether `follow` keeps it current (otherwise builds read the store).
    live: bool,
}

/// Authorizes requests to the management API from the store's bindings.
#[derive(Debug)]
pub struct RbacAuthorizer {
    store: Store,
    snapshot: drover_apiserver::versioned::Versioned<Snapshot>,
    mirror: std::sync::Mutex<Mirror>,
    /// The last store revision the mirror has seen.
    applied: tokio::sync::watch::Sender<drover_store::Revision>,
    /// Bumped on every change of the policy: what controllers wait on.
    changed: tokio::sync::watch::Sender<u64>,
}

/// The kinds a snapshot is built from.
const POLICY_KINDS: &[&str] = &[
    "globalroles",
    "globalrolebindings",
    "roletemplates",
    "clusterroletemplatebindings",
    "projectroletemplatebindings",
    "projects",
];

/// How long a rebuild waits for the mirror to catch up with the store
/// before it reads the store instead.
const MIRROR_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl RbacAuthorizer {
    /// An authorizer over `store`; call [`Self::follow`] to keep its mirror
    /// of the policy current (without it, every rebuild reads the store).
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self {
            store,
            snapshot: drover_apiserver::versioned::Versioned::new(),
            mirror: std::sync::Mutex::new(Mirror::default()),
            applied: tokio::sync::watch::channel(0).0,
            changed: tokio::sync::watch::channel(0).0,
        })
    }

    /// Mark the snapshot stale (after a write to a policy kind).
    pub fn invalidate(&self) {
        self.snapshot.invalidate();
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every change of the policy (pushed, not
    /// polled): controllers take a new snapshot when it changes.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn mirror(&self) -> std::sync::MutexGuard<'_, Mirror> {
        self.mirror.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keep the mirror current from the store's watch of every write (so it
    /// also knows how far it has read), invalidating the snapshot on each
    /// change to a policy kind, until the store closes. After a watch error
    /// (such as a compacted revision) it loads everything again.
    pub fn follow(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        self.store.follow("", self.clone())
    }

    /// Wait (up to a few seconds) until the mirror has applied every write
    /// up to `revision`, so that the next snapshot reflects them: a change
    /// seen by another watch of the store may not have reached it yet.
    pub async fn caught_up(&self, revision: drover_store::Revision) {
        if !self.mirror().live {
            return;
        }
        let mut applied = self.applied.subscribe();
        let _ = tokio::time::timeout(MIRROR_WAIT, applied.wait_for(|r| *r >= revision)).await;
    }

    /// The current snapshot, rebuilt first if stale.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, ApiError> {
        self.snapshot.get(|| self.build()).await
    }

    /// Every policy object, read from the store (at `revision`, if given).
    async fn load(
        &self,
        revision: Option<drover_store::Revision>,
    ) -> Result<BTreeMap<String, PolicyObject>, ApiError> {
        let mut objects = BTreeMap::new();
        for plural in POLICY_KINDS {
            let prefix = drover_core::keys::prefix(api::GROUP, plural, None);
            let page = self
                .store
                .list(&ListOptions {
                    prefix,
                    revision,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    ApiError::from_store(
                        e,
                        drover_apiserver::error::Subject {
                            group: api::GROUP,
                            resource: plural,
                            name: "",
                        },
                    )
                })?;
            for kv in page.items {
                if let Some(obj) = PolicyObject::parse(&kv.key, &kv.value) {
                    objects.insert(kv.key, obj);
                }
            }
        }
        Ok(objects)
    }

    /// A snapshot of the policy as of now: from the mirror once it has seen
    /// every write up to the store's current revision (this process's own
    /// writes arrive within milliseconds), else from the store.
    async fn build(&self) -> Result<Snapshot, ApiError> {
        if self.mirror().live {
            let target = self
                .store
                .revisions()
                .await
                .map_err(|_| ApiError::unavailable("the datastore is unavailable"))?
                .current;
            let mut applied = self.applied.subscribe();
            let caught_up = tokio::time::timeout(MIRROR_WAIT, applied.wait_for(|r| *r >= target))
                .await
                .is_ok_and(|r| r.is_ok());
            let m = self.mirror();
            if caught_up && m.live {
                return Ok(Snapshot::assemble(m.objects.values()));
            }
            drop(m);
            tracing::warn!(
                revision = target,
                "policy mirror is behind the store; reading the store"
            );
        }
        let objects = self.load(None).await?;
        Ok(Snapshot::assemble(objects.values()))
    }
}

/// The mirror follows every write, policy or not, so that `applied` tells
/// how far it has read.
impl drover_store::Follower for RbacAuthorizer {
    fn reset(&self, revision: drover_store::Revision) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(async move {
            let Ok(objects) = self.load(Some(revision)).await else {
                return false;
            };
            let mut m = self.mirror();
            m.objects = objects;
            m.live = true;
            drop(m);
            self.invalidate();
            self.applied.send_replace(revision);
            true
        })
    }

    fn apply(&self, e: &drover_store::Event) {
        if policy_kind(&e.kv.key).is_some() {
            let parsed = match e.kind {
                drover_store::EventType::Deleted => None,
                _ => PolicyObject::parse(&e.kv.key, &e.kv.value),
            };
            let mut m = self.mirror();
            let before = match parsed {
                Some(obj) => m.objects.insert(e.kv.key.clone(), obj),
                None => m.objects.remove(&e.kv.key),
            };
            // A project's status (its quota use, written as pods come and
            // go) is no part of the policy: only a change of its spec is.
            let same_project = match (&before, m.objects.get(&e.kv.key)) {
                (Some(PolicyObject::Project(a)), Some(PolicyObject::Project(b))) => {
                    a.spec == b.spec && a.metadata.labels == b.metadata.labels
                }
                _ => false,
            };
            drop(m);
            if !same_project {
                self.invalidate();
            }
        }
        self.applied.send_replace(e.revision());
    }

    fn lost(&self) {
        self.mirror().live = false;
    }
}

impl Snapshot {
    /// A snapshot of these policy objects, with its indexes.
    fn assemble<'a>(objects: impl Iterator<Item = &'a PolicyObject>) -> Snapshot {
        let mut s = Snapshot::default();
        for obj in objects {
            match obj {
                PolicyObject::GlobalRole(r) => {
                    let name = r.metadata.name.clone().unwrap_or_default();
                    if r.spec.new_user_default {
                        s.new_user_defaults.push(name.clone());
                    }
                    s.global_roles.insert(name, r.spec.rules.clone());
                }
                PolicyObject::GlobalRoleBinding(b) => {
                    if let Some(subject) =
                        Subject::of(b.spec.user_name.as_ref(), b.spec.group_name.as_ref())
                    {
                        s.grbs.push((subject, b.spec.global_role_name.clone()));
                    }
                }
                PolicyObject::RoleTemplate(t) => {
                    s.templates
                        .insert(t.metadata.name.clone().unwrap_or_default(), t.spec.clone());
                }
                PolicyObject::Project(p) => {
                    let cluster = p.metadata.namespace.clone().unwrap_or_default();
                    let name = p.metadata.name.clone().unwrap_or_default();
                    s.projects
                        .entry(cluster.clone())
                        .or_default()
                        .push(name.clone());
                    s.project_specs.insert((cluster, name), p.spec.clone());
                }
                PolicyObject::ClusterBinding(b) => {
                    if let Some(subject) =
                        Subject::of(b.spec.user_name.as_ref(), b.spec.group_name.as_ref())
                    {
                        s.crtbs.push((
                            subject,
                            b.metadata.namespace.clone().unwrap_or_default(),
                            b.spec.role_template_name.clone(),
                        ));
                    }
                }
                PolicyObject::ProjectBinding(b) => {
                    if let Some(subject) =
                        Subject::of(b.spec.user_name.as_ref(), b.spec.group_name.as_ref())
                    {
                        if let Some((cluster, project)) = b.spec.project_name.split_once(':') {
                            s.prtbs.push((
                                subject,
                                cluster.to_owned(),
                                project.to_owned(),
                                b.spec.role_template_name.clone(),
                            ));
                        }
                    }
                }
            }
        }
        // Indexes for the per-cluster questions the controllers ask often.
        for (subject, role) in &s.grbs {
            if s.global_roles.get(role).is_some_and(|r| all_powerful(r)) {
                s.global_admins.insert(subject.clone());
            }
        }
        for (subject, cluster, template) in &s.crtbs {
            s.crtbs_by_cluster
                .entry(cluster.clone())
                .or_default()
                .push((subject.clone(), template.clone()));
        }
        for (subject, cluster, project, template) in &s.prtbs {
            s.prtbs_by_cluster
                .entry(cluster.clone())
                .or_default()
                .push((subject.clone(), project.clone(), template.clone()));
        }
        s
    }
}

impl Authorizer for RbacAuthorizer {
    fn rules<'a>(&'a self, user: &'a UserInfo) -> BoxFuture<'a, Result<Arc<RuleSet>, ApiError>> {
        Box::pin(async move { Ok(self.snapshot().await?.rules(user)) })
    }

    fn owns(&self, user: &UserInfo, resource: &str, verb: &str, obj: &Value) -> bool {
        match resource {
            // A user's own tokens: see and revoke them.
            "tokens" => {
                matches!(verb, "get" | "delete")
                    && obj.pointer("/spec/userName").and_then(Value::as_str)
                        == Some(user.name.as_str())
            }
            // A user's own User object: see it.
            "users" => {
                verb == "get"
                    && obj.pointer("/metadata/name").and_then(Value::as_str)
                        == Some(user.name.as_str())
            }
            _ => false,
        }
    }
}
