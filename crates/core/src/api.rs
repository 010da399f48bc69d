//! The management kinds of `management.drover.io/v1` as typed Rust structs.
//! Their OpenAPI schemas are derived from these types ([`schema_for`]), so
//! the API validates exactly what the code reads.

use std::collections::BTreeMap;

use drover_rbac::PolicyRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The management API group.
pub const GROUP: &str = "management.drover.io";
/// Its version.
pub const VERSION: &str = "v1";
/// `group/version`.
pub const API_VERSION: &str = "management.drover.io/v1";

/// The OpenAPI v3 schema of a type, with every subschema inlined (a
/// structural schema, as Kubernetes wants for custom resources).
pub fn schema_for<T: JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut v = generator.into_root_schema_for::<T>().to_value();
    if let Some(m) = v.as_object_mut() {
        m.remove("$schema");
        m.remove("title");
        m.remove("definitions");
        m.remove("$defs");
    }
    v
}

macro_rules! kind {
    ($(#[$doc:meta])* $name:ident, $spec:ty, $status:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            /// `management.drover.io/v1`.
            #[serde(default)]
            pub api_version: String,
            /// The kind's name.
            #[serde(default)]
            pub kind: String,
            /// Standard object metadata.
            #[serde(default)]
            pub metadata: ObjectMeta,
            /// What the user wants.
            #[serde(default)]
            pub spec: $spec,
            /// What the server observed.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<$status>,
        }
    };
}

/// A condition, as in `metav1.Condition`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// e.g. `Connected`, `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One word saying why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Words for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// A downstream cluster's wishes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// The name people see.
    #[serde(default)]
    pub display_name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The PodSecurityAdmissionConfigurationTemplate whose levels Drover
    /// puts on the cluster's namespaces (none: namespaces are left alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_admission_configuration_template_name: Option<String>,
    /// Write a NetworkPolicy into each project namespace that admits
    /// traffic only from the same project and the System project.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub project_network_isolation: bool,
}

/// What Drover observed of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// `Connected`, `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Kubernetes version (`v1.31.4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Number of nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_count: Option<u32>,
    /// How many nodes are Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_ready: Option<u32>,
    /// Pods failing: phase Failed or Unknown, or Pending for more than
    /// five minutes (counted at each heartbeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_failing: Option<u32>,
    /// Summed node capacity (`cpu`, `memory`, `pods`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, String>,
    /// Summed allocatable resources.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: BTreeMap<String, String>,
    /// When the agent last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<String>,
    /// How many objects Drover projects into the cluster, by kind
    /// (`clusterRoles`, `clusterRoleBindings`, `roleBindings`,
    /// `resourceQuotas`, `limitRanges`, `secrets`, `networkPolicies`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub projected: BTreeMap<String, u64>,
}

kind!(
    /// A managed Kubernetes cluster (cluster-scoped; named `c-xxxxx`).
    Cluster, ClusterSpec, ClusterStatus
);

/// A backup of the management server's datastore: one-shot, or on a
/// schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupSpec {
    /// Where the files go: `file:///DIR` (on the server) or
    /// `s3://BUCKET/PREFIX` (credentials and endpoint from the server's
    /// AWS environment variables).
    #[serde(default)]
    pub location: String,
    /// A cron schedule (`minute hour day month weekday`, UTC); one backup
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How many files of this Backup to keep (default 10); older ones are
    /// deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_count: Option<u32>,
    /// Encrypt with the server's `--backup-encryption-key-file`.
    #[serde(default)]
    pub encrypt: bool,
}

/// One backup file a Backup made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupFile {
    /// The file's name at the location.
    pub name: String,
    /// When the snapshot was taken (RFC 3339).
    pub time: String,
    /// Its size in bytes.
    pub size: u64,
    /// The datastore revision it holds.
    pub revision: i64,
    /// Objects in it.
    #[serde(default)]
    pub objects: u64,
}

/// What Drover observed of a Backup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// `Ready` (the last backup succeeded) with the reason of a failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The files kept, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<BackupFile>,
    /// When the last backup succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<String>,
    /// When the last attempt ran, successful or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<String>,
    /// When the next scheduled backup runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_backup_time: Option<String>,
}

kind!(
    /// A backup of the management server (cluster-scoped).
    Backup, BackupSpec, BackupStatus
);

/// The cluster a registration token is for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRegistrationTokenSpec {
    /// The cluster (also the token's namespace).
    #[serde(default)]
    pub cluster_name: String,
}

/// How to import a cluster with a registration token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRegistrationTokenStatus {
    /// The token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// `…/v1-public/import/{token}.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_url: Option<String>,
    /// `kubectl apply -f …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// `curl --insecure -sfL … | kubectl apply -f -`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_command: Option<String>,
}

kind!(
    /// A token that lets a cluster's agent register (namespace = cluster).
    ClusterRegistrationToken, ClusterRegistrationTokenSpec, ClusterRegistrationTokenStatus
);

/// The quota keys a project may limit (what Kubernetes' ResourceQuota
/// takes, as Drover projects it).
pub const QUOTA_KEYS: &[&str] = &[
    "pods",
    "services",
    "configmaps",
    "secrets",
    "persistentvolumeclaims",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// Resource limits as quantity strings (`limitsCpu: "2"`, `pods: "10"`).
pub type ResourceList = BTreeMap<String, String>;

/// A quota (`limit` keys like `pods`, `requestsCpu`, `limitsMemory`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceQuotaLimit {
    /// The limits.
    #[serde(default)]
    pub limit: ResourceList,
}

/// Default container resources in a project's namespaces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResourceLimit {
    /// Default CPU request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_cpu: Option<String>,
    /// Default memory request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_memory: Option<String>,
    /// Default CPU limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_cpu: Option<String>,
    /// Default memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_memory: Option<String>,
}

/// A group of namespaces in one cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSpec {
    /// The name people see.
    #[serde(default)]
    pub display_name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The cluster (also the project's namespace).
    #[serde(default)]
    pub cluster_name: String,
    /// Quota over all the project's namespaces together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quota: Option<ResourceQuotaLimit>,
    /// Quota given to each namespace of the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_default_resource_quota: Option<ResourceQuotaLimit>,
    /// Default container requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_default_resource_limit: Option<ContainerResourceLimit>,
    /// Per-namespace quotas that replace the namespace default for the
    /// namespaces named (their sum stays within `resourceQuota`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_resource_quotas: BTreeMap<String, ResourceQuotaLimit>,
}

/// Used against limit, per quota resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUsage {
    /// The limits.
    #[serde(default)]
    pub limit: ResourceList,
    /// What is used, as the cluster counts it.
    #[serde(default)]
    pub used: ResourceList,
}

/// What Drover observed of a project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectStatus {
    /// The project quota: its limit, and what its namespaces use together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quota: Option<QuotaUsage>,
    /// Each namespace's share of the quota and its use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, QuotaUsage>,
}

/// Nothing yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NoStatus {}

kind!(
    /// A project (namespace = cluster name; named `p-xxxxx`).
    Project, ProjectSpec, ProjectStatus
);

/// A Pod Security Standards level with the version it is evaluated at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSecurityDefaults {
    /// `privileged`, `baseline` or `restricted`: pods that violate it are
    /// refused.
    #[serde(default)]
    pub enforce: String,
    /// `latest` or `v1.N` (default `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce_version: Option<String>,
    /// Violations are recorded in the audit log.
    #[serde(default)]
    pub audit: String,
    /// `latest` or `v1.N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_version: Option<String>,
    /// Violations are returned to the client as warnings.
    #[serde(default)]
    pub warn: String,
    /// `latest` or `v1.N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_version: Option<String>,
}

/// What a template leaves alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSecurityExemptions {
    /// Namespaces that get no Pod Security labels from Drover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// Pod Security Admission levels for a cluster's namespaces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSecurityAdmissionConfigurationTemplateSpec {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The levels.
    #[serde(default)]
    pub defaults: PodSecurityDefaults,
    /// What is exempt.
    #[serde(default)]
    pub exemptions: PodSecurityExemptions,
    /// Shipped with Drover (read-only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub builtin: bool,
}

kind!(
    /// Pod Security Admission levels a Cluster can name (cluster-scoped).
    PodSecurityAdmissionConfigurationTemplate, PodSecurityAdmissionConfigurationTemplateSpec, NoStatus
);

/// A local user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserSpec {
    /// Login name, unique.
    #[serde(default)]
    pub username: String,
    /// The name people see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// A disabled user cannot log in, and their tokens stop working.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The user must set a new password before doing anything else.
    #[serde(default)]
    pub must_change_password: bool,
    /// The provider principals this user is (`ldap_user://<dn>`,
    /// `oidc_user://<sub>`); set by the server when a provider's user first
    /// logs in, never by a client. Empty for local users.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principal_ids: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for UserSpec {
    fn default() -> Self {
        Self {
            username: String::new(),
            display_name: None,
            enabled: true,
            must_change_password: false,
            principal_ids: Vec::new(),
        }
    }
}

kind!(
    /// A local user (cluster-scoped; named `u-xxxxx`).
    User, UserSpec, NoStatus
);

/// An authentication provider's configuration (cluster-scoped; named
/// `ldap`, `activedirectory` or `oidc`). Field names are Rancher's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfigSpec {
    /// Whether its users may log in (and their tokens work).
    #[serde(default)]
    pub enabled: bool,
    /// For `ldap` and `activedirectory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapConfig>,
    /// For `oidc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcConfig>,
}

/// An LDAP or Active Directory directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LdapConfig {
    /// Host names or addresses, tried in order.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Port (default 389, or 636 with `tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// LDAPS: TLS from the first byte.
    #[serde(default)]
    pub tls: bool,
    /// StartTLS on the plain port.
    #[serde(default)]
    pub starttls: bool,
    /// PEM CA certificate(s) that sign the directory's certificate (default:
    /// the system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Connection and operation timeout in milliseconds (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_timeout: Option<u64>,
    /// The service account that searches the directory.
    #[serde(default)]
    pub service_account_distinguished_name: String,
    /// Its password: write-only, kept as a server record, never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_password: Option<String>,
    /// Where users are searched.
    #[serde(default)]
    pub user_search_base: String,
    /// Users' object class (default `inetOrgPerson`; `person` for AD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_object_class: Option<String>,
    /// The attribute people log in with (default `uid`;
    /// `sAMAccountName` for AD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_login_attribute: Option<String>,
    /// The attribute shown as the user's name (default `cn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name_attribute: Option<String>,
    /// An extra LDAP filter users must match, e.g. `(!(employeeType=disabled))`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_search_filter: Option<String>,
    /// An integer attribute holding account flags (AD: `userAccountControl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_enabled_attribute: Option<String>,
    /// The bits of `userEnabledAttribute` that mean disabled (AD: 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_disabled_bit_mask: Option<u64>,
    /// Where groups are searched (default: `userSearchBase`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_search_base: Option<String>,
    /// Groups' object class (default `groupOfNames`; `group` for AD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_object_class: Option<String>,
    /// The attribute shown as a group's name (default `cn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name_attribute: Option<String>,
    /// The group attribute listing members (default `member`); `memberOf`
    /// reads the user's `memberOf` instead (AD's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_member_mapping_attribute: Option<String>,
    /// The user attribute the members' values are (default: the DN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_member_user_attribute: Option<String>,
    /// Follow groups that are members of groups.
    #[serde(default)]
    pub nested_group_membership_enabled: bool,
    /// How many levels of nesting to follow (default 5, at most 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nested_group_max_depth: Option<u32>,
}

/// An OpenID Connect provider (authorization code with PKCE).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; its discovery document is read from
    /// `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub issuer: String,
    /// The client id registered with the provider.
    #[serde(default)]
    pub client_id: String,
    /// The client secret: write-only, kept as a server record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Scopes asked for besides `openid` (default `profile email groups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The ID token claim that names the user (default
    /// `preferred_username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_claim: Option<String>,
    /// The ID token claim listing the user's groups (default `groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    /// PEM CA certificate(s) for a provider with a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

kind!(
    /// An authentication provider (cluster-scoped).
    AuthConfig, AuthConfigSpec, NoStatus
);

/// An API token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenSpec {
    /// The user the token acts as.
    #[serde(default)]
    pub user_name: String,
    /// What the token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// If set, the token works only for this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// Lifetime in seconds (0 or absent: the server's maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds: Option<u64>,
}

/// A token's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenStatus {
    /// When the token stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `token-xxxxx:SECRET`: only in the response to the create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

kind!(
    /// An API token (cluster-scoped; named `token-xxxxx`).
    Token, TokenSpec, TokenStatus
);

/// A global role's rules over the management API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlobalRoleSpec {
    /// The name people see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// What it allows.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
    /// Given to every new user.
    #[serde(default)]
    pub new_user_default: bool,
    /// Shipped with Drover; cannot be changed or deleted.
    #[serde(default)]
    pub builtin: bool,
}

kind!(
    /// A global role (`admin`, `user`, `user-base`, or custom).
    GlobalRole, GlobalRoleSpec, NoStatus
);

/// Who gets a global role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlobalRoleBindingSpec {
    /// A user (or `groupName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// A group (or `userName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// The role.
    #[serde(default)]
    pub global_role_name: String,
}

kind!(
    /// Binds a user or group to a global role.
    GlobalRoleBinding, GlobalRoleBindingSpec, NoStatus
);

/// Where a role template applies: `cluster` (a whole cluster) or `project`
/// (a project's namespaces). Variants carry no doc comments so that the
/// schema is a plain string enum.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleContext {
    #[default]
    Cluster,
    Project,
}

/// Rules projected onto downstream clusters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleTemplateSpec {
    /// The name people see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `cluster` or `project`.
    #[serde(default)]
    pub context: RoleContext,
    /// Kubernetes rules for the downstream cluster.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
    /// Templates whose rules this one includes.
    #[serde(default)]
    pub role_template_names: Vec<String>,
    /// Shipped with Drover; cannot be changed or deleted.
    #[serde(default)]
    pub builtin: bool,
}

kind!(
    /// A role template (`cluster-owner`, `project-member`, … or custom).
    RoleTemplate, RoleTemplateSpec, NoStatus
);

/// Who gets a role template in a cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRoleTemplateBindingSpec {
    /// A user (or `groupName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// A group (or `userName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// A cluster-context role template.
    #[serde(default)]
    pub role_template_name: String,
    /// The cluster (also the binding's namespace).
    #[serde(default)]
    pub cluster_name: String,
}

kind!(
    /// Binds a user or group to a role template in a cluster (namespace = cluster).
    ClusterRoleTemplateBinding, ClusterRoleTemplateBindingSpec, NoStatus
);

/// Who gets a role template in a project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectRoleTemplateBindingSpec {
    /// A user (or `groupName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// A group (or `userName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// A project-context role template.
    #[serde(default)]
    pub role_template_name: String,
    /// `c-xxxxx:p-yyyyy`.
    #[serde(default)]
    pub project_name: String,
}

kind!(
    /// Binds a user or group to a role template in a project (namespace = project name).
    ProjectRoleTemplateBinding, ProjectRoleTemplateBindingSpec, NoStatus
);

/// What people see of a cluster's conditions: `Active` (Ready),
/// `Unavailable` (not connected or not Ready) or `Pending` (not yet known).
pub fn cluster_state(cluster: &Value) -> &'static str {
    let condition = |t: &str| {
        cluster
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .and_then(|c| c["status"].as_str())
    };
    match (condition("Connected"), condition("Ready")) {
        (_, Some("True")) => "Active",
        (Some("False"), _) | (_, Some("False")) => "Unavailable",
        _ => "Pending",
    }
}

/// An outgoing webhook: the alert as JSON, signed when a secret is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookNotifier {
    /// Where the JSON is POSTed (`https://…` or `http://…`).
    pub url: String,
    /// Write-only: signs each body with HMAC-SHA256 in the
    /// `X-Drover-Signature: sha256=HEX` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A Slack incoming webhook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlackNotifier {
    /// The incoming webhook's URL.
    pub url: String,
    /// The channel to post to, where the webhook allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// STARTTLS after connecting (usually port 587); required.
    #[default]
    Starttls,
    /// TLS from the start (usually port 465).
    Tls,
    /// No TLS at all (a relay on a trusted network only).
    None,
}

/// Mail through an SMTP server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailNotifier {
    /// The SMTP server's name or address.
    pub host: String,
    /// Its port (default: 587, or 465 with `tls: tls`, or 25 with `tls: none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// The user to authenticate as, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Write-only: the user's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The sender address.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
}

/// PagerDuty's Events API v2.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PagerDutyNotifier {
    /// Write-only: the integration's routing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// The Events API endpoint (default
    /// `https://events.pagerduty.com/v2/enqueue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A receiver that takes Alertmanager's webhook payload (version 4).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertmanagerNotifier {
    /// Where the payload is POSTed.
    pub url: String,
}

/// Where alerts are sent: exactly one of the kinds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotifierSpec {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookNotifier>,
    /// A Slack incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackNotifier>,
    /// Email over SMTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailNotifier>,
    /// PagerDuty Events API v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagerduty: Option<PagerDutyNotifier>,
    /// An Alertmanager-compatible webhook receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<AlertmanagerNotifier>,
}

kind!(
    /// Where alerts go (cluster-scoped; admins manage them).
    Notifier, NotifierSpec, NoStatus
);

/// A duration a condition must hold for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForSeconds {
    /// Seconds the condition must hold before the rule fires.
    #[serde(default)]
    pub for_seconds: u64,
}

/// Node requests over a share of allocatable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeResourceUsage {
    /// `cpu`, `memory` or `pods`.
    pub resource: String,
    /// Percent of the node's allocatable that its pods request.
    pub percent: u32,
}

/// Pods not running.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodNotRunning {
    /// Only this namespace (default: all the rule's namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only pods matching this label selector (`app=web,tier!=cache`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Seconds a pod must stay not running or not ready.
    #[serde(default)]
    pub for_seconds: u64,
}

/// Containers restarting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodRestarts {
    /// More restarts than this within the window fire the rule.
    pub count: u32,
    /// The window, in seconds.
    pub window_seconds: u64,
    /// Only this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only pods matching this label selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// Workloads with fewer available replicas than desired.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadUnavailable {
    /// Only this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only the Deployments, StatefulSets and DaemonSets of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Seconds a workload must stay short of replicas.
    #[serde(default)]
    pub for_seconds: u64,
}

/// Quota use over a share of the limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaUsageCondition {
    /// Percent of any limit used.
    pub percent: u32,
}

/// Downstream events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventCondition {
    /// The event's reason (`BackOff`, `FailedScheduling`, …).
    pub reason: String,
    /// The event's type (default `Warning`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

/// Drover's certificates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateExpiry {
    /// Fire when the serving certificate or the CA expires within this
    /// many days.
    pub days: u32,
}

/// Scheduled backups.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupFailed {}

/// What a rule watches for: exactly one of these.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertCondition {
    /// The cluster's agent disconnected, or the cluster not Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_disconnected: Option<ForSeconds>,
    /// A node NotReady, or under memory, disk or PID pressure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_not_ready: Option<ForSeconds>,
    /// A node whose pods request over a share of its allocatable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_resource_usage: Option<NodeResourceUsage>,
    /// Pods not running, or running but not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_not_running: Option<PodNotRunning>,
    /// Pods restarting too often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_restarts: Option<PodRestarts>,
    /// Workloads short of available replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_unavailable: Option<WorkloadUnavailable>,
    /// Quota use (the project's, or in a cluster's namespace, every
    /// project's and namespace's of the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_usage: Option<QuotaUsageCondition>,
    /// Downstream events of a reason, seen in the last five minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventCondition>,
    /// Drover's serving certificate or CA expiring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expiry: Option<CertificateExpiry>,
    /// A Backup whose last run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_failed: Option<BackupFailed>,
}

/// A rule that fires an alert: in a cluster's namespace (about that
/// cluster) or a project's (about the project's namespaces).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertRuleSpec {
    /// What to watch for.
    #[serde(default)]
    pub condition: AlertCondition,
    /// `critical`, `warning` (default) or `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// The Notifiers to send to, by name.
    #[serde(default)]
    pub notifiers: Vec<String>,
    /// How long a new alert waits before its first message (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_wait_seconds: Option<u64>,
    /// How long after a message a change (new objects, or resolved) is
    /// sent (default 180).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_interval_seconds: Option<u64>,
    /// How long after a message an unchanged firing alert is sent again
    /// (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_interval_seconds: Option<u64>,
    /// Free text, added to every message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One notifier's delivery of a message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The Notifier.
    pub notifier: String,
    /// `Delivered`, `Failed` or `Sending`.
    pub result: String,
    /// How many attempts were made.
    #[serde(default)]
    pub attempts: u32,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The last message a rule sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastNotification {
    /// When it was sent.
    pub time: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// The affected objects it named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected: Vec<String>,
    /// Each notifier's result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<Delivery>,
}

/// What the rule's evaluation found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertRuleStatus {
    /// `firing` or `resolved` (absent until it first fires).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When the state began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// What is wrong, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The objects affected (`node/n1`, `deployment/web/api`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected: Vec<String>,
    /// Why the rule cannot be evaluated, if it cannot (a notifier or
    /// project missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last message sent, and how each notifier took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notification: Option<LastNotification>,
}

kind!(
    /// An alert rule (namespace = a cluster's or a project's name).
    AlertRule, AlertRuleSpec, AlertRuleStatus
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_structural() {
        let s = schema_for::<Cluster>();
        assert_eq!(s["type"], "object");
        assert_eq!(
            s["properties"]["spec"]["properties"]["displayName"]["type"],
            "string"
        );
        assert_eq!(
            s["properties"]["metadata"]["properties"]["labels"]["type"],
            "object"
        );
        assert!(!s.to_string().contains("$ref"), "everything inlined");
        let rt = schema_for::<RoleTemplate>();
        assert_eq!(
            rt["properties"]["spec"]["properties"]["context"]["enum"],
            serde_json::json!(["cluster", "project"])
        );
    }
}
