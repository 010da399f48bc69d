//! Pod Security Admission (PSA): the Pod Security Standards checks that
//! kube-apiserver's built-in `PodSecurity` admission plugin runs, so the sim
//! refuses (or warns about) pods in namespaces labelled
//! `pod-security.kubernetes.io/enforce|warn|audit: baseline|restricted`
//! with the very messages kube-apiserver gives.
//!
//! This follows `k8s.io/pod-security-admission` as released with Kubernetes
//! v1.31 (module tag `v0.31.14`, commit
//! `eef6df42d33e4e09f4e326c8c53ef53b69fdbdcd`; files `policy/check_*.go`,
//! `policy/checks.go`, `policy/registry.go`, `policy/helpers.go`,
//! `policy/visitor.go`, `api/helpers.go`, `admission/admission.go`). Only the
//! `latest` rules are implemented (for v1.31 the newest check revision is
//! `v1.31`); a namespace pinned to an older `-version` is evaluated with the
//! latest rules, though its version is still shown in messages. Later
//! releases differ in two places, noted where they apply: v1.32 adds the
//! `net.ipv4.tcp_rmem`/`tcp_wmem` safe sysctls, v1.33 allows `image`
//! volumes under restricted.
//!
//! As in upstream:
//! - a check's result is a reason (always shown) and a detail (shown in
//!   parentheses); the results are listed in check-ID order, baseline checks
//!   first, then restricted ones, and joined with `", "`;
//! - restricted replaces the baseline checks `capabilities_baseline`,
//!   `hostPathVolumes` and `seccompProfile_baseline` by stricter ones;
//! - containers are visited as initContainers, containers, then
//!   ephemeralContainers;
//! - pods with `spec.os.name: windows` skip the restricted
//!   `allowPrivilegeEscalation`, `capabilities_restricted` and
//!   `seccompProfile_restricted` checks (and no others);
//! - the user-namespace relaxation of `procMount`, `runAsNonRoot` and
//!   `runAsUser` is off, as kube-apiserver leaves it while the
//!   `UserNamespacesPodSecurityStandards` feature gate is off (its default).
//!
//! Pods are read as JSON, leniently: a field that is missing, `null` or of
//! the wrong type counts as unset (kube-apiserver would have refused a body
//! with a wrongly typed field before admission).

use std::collections::BTreeSet;

pub(crate) use drover_core::pod_security::Level;
use drover_core::pod_security::{parse_version, VERSION_LATEST};
use serde_json::{Map, Value};

/// The prefix of the namespace labels that choose the policy.
const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// A namespace's Pod Security policy, from its labels
/// (`pod-security.kubernetes.io/{enforce,audit,warn}` and their `-version`
/// labels), as upstream's `api.PolicyToEvaluate` computes it with
/// kube-apiserver's default configuration (every mode `privileged:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Level whose violations refuse a pod (403).
    pub(crate) enforce: Level,
    /// Level whose violations are recorded in the audit annotations.
    pub(crate) audit: Level,
    /// Level whose violations are returned as warnings.
    pub(crate) warn: Level,
    /// `latest` or `v1.N`, as shown in messages for `enforce`.
    pub(crate) enforce_version: String,
    /// `latest` or `v1.N`, as shown in messages for `warn`.
    pub(crate) warn_version: String,
    /// `latest` or `v1.N`, as shown in messages for `audit`.
    pub(crate) audit_version: String,
}

impl Policy {
    /// The policy of a namespace with these labels (`None`: no labels).
    ///
    /// Upstream's rules (`api/helpers.go`):
    /// - a missing mode label means `privileged`, a missing or invalid
    ///   version label means `latest`;
    /// - an invalid `enforce` level evaluates as `restricted` (fail closed),
    ///   while an invalid `audit` or `warn` level evaluates as `privileged`
    ///   (fail open);
    /// - without a `warn` label, a valid `enforce` level stricter than warn's
    ///   also becomes the warn level, with enforce's version unless a
    ///   `warn-version` label is set.
    ///
    /// Upstream also refuses to create or relabel a namespace with invalid
    /// labels (422); that check is the caller's, not this function's.
    pub(crate) fn from_labels(labels: Option<&Map<String, Value>>) -> Policy {
        let mut policy = Policy::all_privileged();
        let Some(labels) = labels else {
            return policy;
        };
        let label = |mode: &str| {
            labels
                .get(&format!("{LABEL_PREFIX}{mode}"))
                .map(|v| v.as_str().unwrap_or(""))
        };

        let mut has_enforce_level = false;
        if let Some(value) = label("enforce") {
            let level = Level::parse(value);
            has_enforce_level = level.is_some();
            policy.enforce = level.unwrap_or(Level::Restricted);
        }
        if let Some(value) = label("enforce-version") {
            policy.enforce_version = parse_version(value);
        }
        if let Some(value) = label("audit") {
            policy.audit = Level::parse(value).unwrap_or(Level::Privileged);
        }
        if let Some(value) = label("audit-version") {
            policy.audit_version = parse_version(value);
        }
        let has_warn_level = label("warn").is_some();
        if let Some(value) = label("warn") {
            policy.warn = Level::parse(value).unwrap_or(Level::Privileged);
        }
        let has_warn_version = label("warn-version").is_some();
        if let Some(value) = label("warn-version") {
            policy.warn_version = parse_version(value);
        }

        if !has_warn_level && has_enforce_level && policy.enforce > policy.warn {
            policy.warn = policy.enforce;
            if !has_warn_version {
                policy.warn_version = policy.enforce_version.clone();
            }
        }
        policy
    }

    /// kube-apiserver's default policy: every mode `privileged:latest`.
    fn all_privileged() -> Policy {
        Policy {
            enforce: Level::Privileged,
            audit: Level::Privileged,
            warn: Level::Privileged,
            enforce_version: VERSION_LATEST.to_owned(),
            warn_version: VERSION_LATEST.to_owned(),
            audit_version: VERSION_LATEST.to_owned(),
        }
    }
}

/// One failed check, e.g. reason `privileged`, detail
/// `container "x" must not set securityContext.privileged=true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    /// Upstream's `ForbiddenReason`: short, always shown.
    pub(crate) reason: String,
    /// Upstream's `ForbiddenDetail`: shown in parentheses when not empty.
    pub(crate) detail: String,
}

/// Evaluate a pod (its JSON: `metadata` + `spec`) against a level: every
/// check of that level and below, in upstream's order. `Privileged` allows
/// everything.
pub(crate) fn check(level: Level, pod: &Value) -> Vec<Violation> {
    if level == Level::Privileged {
        return Vec::new();
    }
    let pod = PodView::new(pod);
    CHECKS
        .iter()
        .filter(|def| def.applies(level))
        .filter_map(|def| (def.run)(&pod))
        .collect()
}

/// The text kube-apiserver refuses a pod with (after
/// `pods "NAME" is forbidden: `, which the caller adds), e.g.
/// `violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "x" must set securityContext.allowPrivilegeEscalation=false), ...`.
pub(crate) fn describe(level: Level, version: &str, violations: &[Violation]) -> String {
    format!(
        "violates PodSecurity {}: {}",
        level_version(level, version),
        forbidden_detail(violations)
    )
}

/// The warning kube-apiserver returns (`Warning: 299 - "…"`) for the warn
/// mode, and also records as the `pod-security.kubernetes.io/audit-violations`
/// audit annotation for the audit mode: `would violate PodSecurity
/// "restricted:latest": …`. Upstream adds no warning to a request it refuses.
pub(crate) fn warning(level: Level, version: &str, violations: &[Violation]) -> String {
    format!(
        "would violate PodSecurity {}: {}",
        level_version(level, version),
        forbidden_detail(violations)
    )
}

/// `"level:version"`, quoted as Go's `%q` quotes it.
fn level_version(level: Level, version: &str) -> String {
    go_quote(&format!("{}:{}", level.as_str(), version))
}

/// Upstream's `AggregateCheckResult.ForbiddenDetail`: each reason, with its
/// detail in parentheses when there is one, joined with `", "`.
fn forbidden_detail(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            let reason = if v.reason.is_empty() {
                "unknown forbidden reason"
            } else {
                v.reason.as_str()
            };
            if v.detail.is_empty() {
                reason.to_owned()
            } else {
                format!("{reason} ({})", v.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pod (`{"metadata", "spec"}`) that upstream's `DefaultPodSpecExtractor`
/// evaluates for an object of this kind: a Pod itself; the `template` of a
/// PodTemplate; `spec.template` of a ReplicationController, ReplicaSet,
/// Deployment, DaemonSet, StatefulSet or Job; `spec.jobTemplate.spec.template`
/// of a CronJob. `None` for other kinds, or when there is no template
/// (upstream then skips the object, or evaluates an empty pod spec, which
/// passes every check).
///
/// Upstream never refuses a workload object: it only warns (and audits),
/// and it skips the evaluation when warn and audit are both `privileged`.
pub(crate) fn pod_template(kind: &str, obj: &Value) -> Option<Value> {
    let obj = Some(obj);
    let template = match kind {
        "Pod" => obj,
        "PodTemplate" => field(obj, "template"),
        "ReplicationController"
        | "ReplicaSet"
        | "Deployment"
        | "DaemonSet"
        | "StatefulSet"
        | "Job" => field(field(obj, "spec"), "template"),
        "CronJob" => field(
            field(field(field(obj, "spec"), "jobTemplate"), "spec"),
            "template",
        ),
        _ => None,
    }?;
    let part = |key: &str| {
        field(Some(template), key)
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new()))
    };
    let mut pod = Map::new();
    pod.insert("metadata".to_owned(), part("metadata"));
    pod.insert("spec".to_owned(), part("spec"));
    Some(Value::Object(pod))
}

// ---------------------------------------------------------------------------
// The pod as the checks see it.

/// A pod's JSON, with its containers listed in upstream's visiting order.
struct PodView<'a> {
    /// `metadata.annotations`.
    annotations: Option<&'a Map<String, Value>>,
    /// `spec`.
    spec: Option<&'a Value>,
    /// `spec.securityContext`.
    security_context: Option<&'a Value>,
    /// initContainers, containers, then ephemeralContainers.
    containers: Vec<ContainerView<'a>>,
}

/// One container of a pod.
struct ContainerView<'a> {
    /// `name` (`""` when missing).
    name: &'a str,
    /// The whole container.
    value: &'a Value,
    /// `securityContext`.
    security_context: Option<&'a Value>,
}

impl<'a> PodView<'a> {
    fn new(pod: &'a Value) -> PodView<'a> {
        let spec = field(Some(pod), "spec");
        let containers = ["initContainers", "containers", "ephemeralContainers"]
            .iter()
            .flat_map(|key| items(spec, key))
            .map(|value| ContainerView {
                name: text(Some(value), "name"),
                value,
                security_context: field(Some(value), "securityContext"),
            })
            .collect();
        PodView {
            annotations: field(field(Some(pod), "metadata"), "annotations")
                .and_then(Value::as_object),
            spec,
            security_context: field(spec, "securityContext"),
            containers,
        }
    }

    /// `spec.os.name == "windows"`.
    fn is_windows(&self) -> bool {
        text(field(self.spec, "os"), "name") == "windows"
    }
}

// ---------------------------------------------------------------------------
// The registry of checks.

/// A check, as upstream registers it (only its `latest` revision).
struct CheckDef {
    /// Upstream's check ID; within a level the checks run in ID order.
    id: &'static str,
    /// Baseline checks also run for restricted (unless overridden).
    level: Level,
    /// `None` when the pod passes.
    run: CheckFn,
}

impl CheckDef {
    /// Whether this check runs for a namespace at `level`.
    fn applies(&self, level: Level) -> bool {
        match self.level {
            Level::Privileged => false,
            Level::Baseline => match level {
                Level::Privileged => false,
                Level::Baseline => true,
                Level::Restricted => !RESTRICTED_OVERRIDES.contains(&self.id),
            },
            Level::Restricted => level == Level::Restricted,
        }
    }
}

/// Baseline checks that restricted replaces (upstream's `OverrideCheckIDs`
/// of `capabilities_restricted`, `restrictedVolumes` and
/// `seccompProfile_restricted`).
const RESTRICTED_OVERRIDES: &[&str] = &[
    "capabilities_baseline",
    "hostPathVolumes",
    "seccompProfile_baseline",
];

/// Every check, in upstream's evaluation order: baseline IDs sorted
/// (byte-wise, as Go's `sort.Slice` on strings), then restricted IDs sorted.
const CHECKS: &[CheckDef] = &[
    baseline("appArmorProfile", app_armor_profile),
    baseline("capabilities_baseline", capabilities_baseline),
    baseline("hostNamespaces", host_namespaces),
    baseline("hostPathVolumes", host_path_volumes),
    baseline("hostPorts", host_ports),
    baseline("privileged", privileged),
    baseline("procMount", proc_mount),
    baseline("seLinuxOptions", se_linux_options),
    baseline("seccompProfile_baseline", seccomp_profile_baseline),
    baseline("sysctls", sysctls),
    baseline("windowsHostProcess", windows_host_process),
    restricted("allowPrivilegeEscalation", allow_privilege_escalation),
    restricted("capabilities_restricted", capabilities_restricted),
    restricted("restrictedVolumes", restricted_volumes),
    restricted("runAsNonRoot", run_as_non_root),
    restricted("runAsUser", run_as_user),
    restricted("seccompProfile_restricted", seccomp_profile_restricted),
];

/// The signature of a check: `None` when the pod passes.
type CheckFn = fn(&PodView<'_>) -> Option<Violation>;

/// A baseline check.
const fn baseline(id: &'static str, run: CheckFn) -> CheckDef {
    CheckDef {
        id,
        level: Level::Baseline,
        run,
    }
}

/// A restricted check.
const fn restricted(id: &'static str, run: CheckFn) -> CheckDef {
    CheckDef {
        id,
        level: Level::Restricted,
        run,
    }
}

// ---------------------------------------------------------------------------
// Baseline checks.

/// Capabilities that baseline lets containers add (the container runtime's
/// default set).
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Annotation key prefix of the deprecated per-container AppArmor profiles.
const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// `appArmorProfile`: the profile type may only be `RuntimeDefault` or
/// `Localhost`; the deprecated annotations only `runtime/default`,
/// `localhost/*` or empty.
fn app_armor_profile(pod: &PodView<'_>) -> Option<Violation> {
    let mut setters = Vec::new();
    let mut bad_values: BTreeSet<&str> = BTreeSet::new();

    if let Some(kind) = app_armor_type(pod.security_context) {
        if !allowed_app_armor_type(kind) {
            setters.push("pod".to_owned());
            bad_values.insert(kind);
        }
    }
    let mut bad_containers = Vec::new();
    for c in &pod.containers {
        if let Some(kind) = app_armor_type(c.security_context) {
            if !allowed_app_armor_type(kind) {
                bad_containers.push(c.name);
                bad_values.insert(kind);
            }
        }
    }
    if !bad_containers.is_empty() {
        setters.push(containers_phrase(&bad_containers));
    }

    let mut annotations: Vec<String> = pod
        .annotations
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| {
            let value = value.as_str()?;
            let forbidden =
                key.starts_with(APPARMOR_ANNOTATION_PREFIX) && !allowed_app_armor_annotation(value);
            forbidden.then(|| format!("{key}={}", go_quote(value)))
        })
        .collect();
    annotations.sort();

    let mut values: Vec<String> = bad_values.into_iter().map(str::to_owned).collect();
    if !annotations.is_empty() {
        setters.push(pluralize("annotation", "annotations", annotations.len()).to_owned());
        values.extend(annotations);
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            setters.join(" and "),
            join_quote(&values)
        ),
    )
}

/// `securityContext.appArmorProfile.type`, when `appArmorProfile` is set.
fn app_armor_type(security_context: Option<&Value>) -> Option<&str> {
    field(security_context, "appArmorProfile").map(|p| text(Some(p), "type"))
}

fn allowed_app_armor_type(kind: &str) -> bool {
    matches!(kind, "RuntimeDefault" | "Localhost")
}

fn allowed_app_armor_annotation(value: &str) -> bool {
    value.is_empty() || value == "runtime/default" || value.starts_with("localhost/")
}

/// `capabilities_baseline`: only capabilities of the default set may be
/// added.
fn capabilities_baseline(pod: &PodView<'_>) -> Option<Violation> {
    let mut bad_containers = Vec::new();
    let mut forbidden: BTreeSet<&str> = BTreeSet::new();
    for c in &pod.containers {
        let Some(capabilities) = field(c.security_context, "capabilities") else {
            continue;
        };
        let mut valid = true;
        for cap in strings(Some(capabilities), "add") {
            if !BASELINE_CAPABILITIES.contains(&cap) {
                valid = false;
                forbidden.insert(cap);
            }
        }
        if !valid {
            bad_containers.push(c.name);
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    violation(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad_containers),
            join_quote(&forbidden)
        ),
    )
}

/// `hostNamespaces`: no hostNetwork, hostPID or hostIPC.
fn host_namespaces(pod: &PodView<'_>) -> Option<Violation> {
    let set: Vec<&str> = [
        ("hostNetwork", "hostNetwork=true"),
        ("hostPID", "hostPID=true"),
        ("hostIPC", "hostIPC=true"),
    ]
    .into_iter()
    .filter(|(key, _)| flag(pod.spec, key) == Some(true))
    .map(|(_, shown)| shown)
    .collect();
    if set.is_empty() {
        return None;
    }
    violation("host namespaces", set.join(", "))
}

/// `hostPathVolumes`: no hostPath volumes.
fn host_path_volumes(pod: &PodView<'_>) -> Option<Violation> {
    let names: Vec<&str> = items(pod.spec, "volumes")
        .iter()
        .filter(|v| field(Some(v), "hostPath").is_some())
        .map(|v| text(Some(v), "name"))
        .collect();
    if names.is_empty() {
        return None;
    }
    violation(
        "hostPath volumes",
        format!(
            "{} {}",
            pluralize("volume", "volumes", names.len()),
            join_quote(&names)
        ),
    )
}

/// `hostPorts`: no container port may set a hostPort.
fn host_ports(pod: &PodView<'_>) -> Option<Violation> {
    let mut bad_containers = Vec::new();
    let mut ports: BTreeSet<String> = BTreeSet::new();
    for c in &pod.containers {
        let mut valid = true;
        for port in items(Some(c.value), "ports") {
            match field(Some(port), "hostPort").and_then(Value::as_i64) {
                Some(0) | None => {}
                Some(host_port) => {
                    valid = false;
                    ports.insert(host_port.to_string());
                }
            }
        }
        if !valid {
            bad_containers.push(c.name);
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    let shown: Vec<&str> = ports.iter().map(String::as_str).collect();
    violation(
        "hostPort",
        format!(
            "{} {} {} {} {}",
            pluralize("container", "containers", bad_containers.len()),
            join_quote(&bad_containers),
            pluralize("uses", "use", bad_containers.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            shown.join(", ")
        ),
    )
}

/// `privileged`: no container may set `securityContext.privileged=true`.
fn privileged(pod: &PodView<'_>) -> Option<Violation> {
    let bad: Vec<&str> = pod
        .containers
        .iter()
        .filter(|c| flag(c.security_context, "privileged") == Some(true))
        .map(|c| c.name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_phrase(&bad)
        ),
    )
}

/// `procMount`: `securityContext.procMount` may only be `Default`.
fn proc_mount(pod: &PodView<'_>) -> Option<Violation> {
    let mut bad_containers = Vec::new();
    let mut types: BTreeSet<&str> = BTreeSet::new();
    for c in &pod.containers {
        let Some(value) = field(c.security_context, "procMount") else {
            continue;
        };
        let kind = value.as_str().unwrap_or("");
        if kind != "Default" {
            bad_containers.push(c.name);
            types.insert(kind);
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    violation(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad_containers),
            join_quote(&types)
        ),
    )
}

/// SELinux types baseline allows (revision v1.31, which added
/// `container_engine_t`).
const SELINUX_ALLOWED_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// What `seLinuxOptions` found wrong across the pod and its containers.
#[derive(Default)]
struct SeLinuxFindings<'a> {
    bad_types: BTreeSet<&'a str>,
    set_user: bool,
    set_role: bool,
}

impl<'a> SeLinuxFindings<'a> {
    /// Record one `seLinuxOptions`; `true` when it is allowed.
    fn record(&mut self, options: &'a Value) -> bool {
        let mut valid = true;
        let kind = text(Some(options), "type");
        if !SELINUX_ALLOWED_TYPES.contains(&kind) {
            valid = false;
            self.bad_types.insert(kind);
        }
        if !text(Some(options), "user").is_empty() {
            valid = false;
            self.set_user = true;
        }
        if !text(Some(options), "role").is_empty() {
            valid = false;
            self.set_role = true;
        }
        valid
    }

    /// The part after `securityContext.seLinuxOptions: `.
    fn describe(&self) -> String {
        let mut data = Vec::new();
        if !self.bad_types.is_empty() {
            data.push(format!(
                "{} {}",
                pluralize("type", "types", self.bad_types.len()),
                join_quote(&self.bad_types)
            ));
        }
        if self.set_user {
            data.push("user may not be set".to_owned());
        }
        if self.set_role {
            data.push("role may not be set".to_owned());
        }
        data.join("; ")
    }
}

/// `seLinuxOptions`: the type may only be a container type; user and role
/// may not be set.
fn se_linux_options(pod: &PodView<'_>) -> Option<Violation> {
    let mut findings = SeLinuxFindings::default();
    let mut setters = Vec::new();
    if let Some(options) = field(pod.security_context, "seLinuxOptions") {
        if !findings.record(options) {
            setters.push("pod".to_owned());
        }
    }
    let mut bad_containers = Vec::new();
    for c in &pod.containers {
        if let Some(options) = field(c.security_context, "seLinuxOptions") {
            if !findings.record(options) {
                bad_containers.push(c.name);
            }
        }
    }
    if !bad_containers.is_empty() {
        setters.push(containers_phrase(&bad_containers));
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            findings.describe()
        ),
    )
}

/// What the seccomp checks found across the pod and its containers.
struct SeccompFindings<'a> {
    /// `pod` and/or `container(s) "…"` that set a forbidden type.
    setters: Vec<String>,
    /// The forbidden types set.
    bad_values: BTreeSet<&'a str>,
    /// Containers that set no profile while the pod sets no allowed one.
    implicit: Vec<&'a str>,
}

impl<'a> SeccompFindings<'a> {
    fn new(pod: &PodView<'a>) -> SeccompFindings<'a> {
        let mut setters = Vec::new();
        let mut bad_values = BTreeSet::new();
        let mut pod_set = false;
        if let Some(kind) = seccomp_type(pod.security_context) {
            if allowed_seccomp_type(kind) {
                pod_set = true;
            } else {
                setters.push("pod".to_owned());
                bad_values.insert(kind);
            }
        }
        let mut explicit = Vec::new();
        let mut implicit = Vec::new();
        for c in &pod.containers {
            match seccomp_type(c.security_context) {
                Some(kind) if !allowed_seccomp_type(kind) => {
                    explicit.push(c.name);
                    bad_values.insert(kind);
                }
                Some(_) => {}
                None if !pod_set => implicit.push(c.name),
                None => {}
            }
        }
        if !explicit.is_empty() {
            setters.push(containers_phrase(&explicit));
        }
        SeccompFindings {
            setters,
            bad_values,
            implicit,
        }
    }

    /// The violation for explicitly forbidden types, if any.
    fn explicit_violation(&self) -> Option<Violation> {
        if self.setters.is_empty() {
            return None;
        }
        violation(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                self.setters.join(" and "),
                join_quote(&self.bad_values)
            ),
        )
    }
}

/// `securityContext.seccompProfile.type`, when `seccompProfile` is set.
fn seccomp_type(security_context: Option<&Value>) -> Option<&str> {
    field(security_context, "seccompProfile").map(|p| text(Some(p), "type"))
}

fn allowed_seccomp_type(kind: &str) -> bool {
    matches!(kind, "RuntimeDefault" | "Localhost")
}

/// `seccompProfile_baseline` (revision v1.19): a seccomp profile, where
/// set, may only be `RuntimeDefault` or `Localhost` (not `Unconfined`).
fn seccomp_profile_baseline(pod: &PodView<'_>) -> Option<Violation> {
    SeccompFindings::new(pod).explicit_violation()
}

/// Sysctls baseline allows (revision v1.29; v1.32 adds
/// `net.ipv4.tcp_rmem` and `net.ipv4.tcp_wmem`).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// `sysctls`: only the safe sysctls may be set.
fn sysctls(pod: &PodView<'_>) -> Option<Violation> {
    let forbidden: Vec<&str> = items(pod.security_context, "sysctls")
        .iter()
        .map(|s| text(Some(s), "name"))
        .filter(|name| !SAFE_SYSCTLS.contains(name))
        .collect();
    if forbidden.is_empty() {
        return None;
    }
    violation("forbidden sysctls", forbidden.join(", "))
}

/// `windowsHostProcess`: no `securityContext.windowsOptions.hostProcess=true`.
fn windows_host_process(pod: &PodView<'_>) -> Option<Violation> {
    let host_process =
        |sc: Option<&Value>| flag(field(sc, "windowsOptions"), "hostProcess") == Some(true);
    let who = setters(pod, host_process)?;
    violation(
        "hostProcess",
        format!("{who} must not set securityContext.windowsOptions.hostProcess=true"),
    )
}

// ---------------------------------------------------------------------------
// Restricted checks.

/// `allowPrivilegeEscalation` (revision v1.25): every container must set
/// `securityContext.allowPrivilegeEscalation=false`; Windows pods pass.
fn allow_privilege_escalation(pod: &PodView<'_>) -> Option<Violation> {
    if pod.is_windows() {
        return None;
    }
    let bad: Vec<&str> = pod
        .containers
        .iter()
        .filter(|c| flag(c.security_context, "allowPrivilegeEscalation") != Some(false))
        .map(|c| c.name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_phrase(&bad)
        ),
    )
}

/// `capabilities_restricted` (revision v1.25): every container must drop
/// `ALL` and may add only `NET_BIND_SERVICE`; Windows pods pass.
fn capabilities_restricted(pod: &PodView<'_>) -> Option<Violation> {
    if pod.is_windows() {
        return None;
    }
    let mut missing_drop_all = Vec::new();
    let mut adding_forbidden = Vec::new();
    let mut forbidden: BTreeSet<&str> = BTreeSet::new();
    for c in &pod.containers {
        let Some(capabilities) = field(c.security_context, "capabilities") else {
            missing_drop_all.push(c.name);
            continue;
        };
        if !strings(Some(capabilities), "drop").any(|cap| cap == "ALL") {
            missing_drop_all.push(c.name);
        }
        let mut added_forbidden = false;
        for cap in strings(Some(capabilities), "add") {
            if cap != "NET_BIND_SERVICE" {
                added_forbidden = true;
                forbidden.insert(cap);
            }
        }
        if added_forbidden {
            adding_forbidden.push(c.name);
        }
    }
    let mut details = Vec::new();
    if !missing_drop_all.is_empty() {
        details.push(format!(
            r#"{} must set securityContext.capabilities.drop=["ALL"]"#,
            containers_phrase(&missing_drop_all)
        ));
    }
    if !adding_forbidden.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding_forbidden),
            join_quote(&forbidden)
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation("unrestricted capabilities", details.join("; "))
}

/// Volume sources restricted allows (v1.33 adds `image`).
const ALLOWED_VOLUME_SOURCES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Restricted volume sources, in the order upstream names the first one a
/// volume sets (anything else is `unknown`).
const KNOWN_RESTRICTED_VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

/// `restrictedVolumes`: volumes may only use the allowed sources.
fn restricted_volumes(pod: &PodView<'_>) -> Option<Violation> {
    let mut bad_volumes = Vec::new();
    let mut bad_types: BTreeSet<&str> = BTreeSet::new();
    for volume in items(pod.spec, "volumes") {
        let has = |key: &&str| field(Some(volume), key).is_some();
        if ALLOWED_VOLUME_SOURCES.iter().any(has) {
            continue;
        }
        bad_volumes.push(text(Some(volume), "name"));
        let kind = KNOWN_RESTRICTED_VOLUME_SOURCES
            .iter()
            .copied()
            .find(has)
            .unwrap_or("unknown");
        bad_types.insert(kind);
    }
    if bad_volumes.is_empty() {
        return None;
    }
    violation(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", bad_volumes.len()),
            join_quote(&bad_volumes),
            pluralize("uses", "use", bad_volumes.len()),
            pluralize(
                "restricted volume type",
                "restricted volume types",
                bad_types.len()
            ),
            join_quote(&bad_types)
        ),
    )
}

/// `runAsNonRoot`: the pod, or else every container, must set
/// `securityContext.runAsNonRoot=true`, and none may set it false.
fn run_as_non_root(pod: &PodView<'_>) -> Option<Violation> {
    let mut setters = Vec::new();
    let mut pod_non_root = false;
    match flag(pod.security_context, "runAsNonRoot") {
        Some(false) => setters.push("pod".to_owned()),
        Some(true) => pod_non_root = true,
        None => {}
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in &pod.containers {
        match flag(c.security_context, "runAsNonRoot") {
            Some(false) => explicit.push(c.name),
            Some(true) => {}
            None if !pod_non_root => implicit.push(c.name),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        );
    }
    if implicit.is_empty() {
        return None;
    }
    violation(
        "runAsNonRoot != true",
        format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers_phrase(&implicit)
        ),
    )
}

/// `runAsUser` (revision v1.23): neither the pod nor a container may set
/// `runAsUser=0`.
fn run_as_user(pod: &PodView<'_>) -> Option<Violation> {
    let root = |sc: Option<&Value>| field(sc, "runAsUser").and_then(Value::as_i64) == Some(0);
    let who = setters(pod, root)?;
    violation("runAsUser=0", format!("{who} must not set runAsUser=0"))
}

/// `seccompProfile_restricted` (revision v1.25): the pod, or else every
/// container, must set a `RuntimeDefault` or `Localhost` seccomp profile;
/// Windows pods pass.
fn seccomp_profile_restricted(pod: &PodView<'_>) -> Option<Violation> {
    if pod.is_windows() {
        return None;
    }
    let findings = SeccompFindings::new(pod);
    if let Some(found) = findings.explicit_violation() {
        return Some(found);
    }
    if findings.implicit.is_empty() {
        return None;
    }
    violation(
        "seccompProfile",
        format!(
            r#"pod or {} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost""#,
            containers_phrase(&findings.implicit)
        ),
    )
}

// ---------------------------------------------------------------------------
// Helpers.

/// A failed check.
/// Who sets what a check forbids, as upstream words it: `pod`, the
/// containers whose security context `forbidden` finds, or both joined by
/// "and"; `None` when nobody does.
fn setters(pod: &PodView<'_>, forbidden: impl Fn(Option<&Value>) -> bool) -> Option<String> {
    let mut who = Vec::new();
    if forbidden(pod.security_context) {
        who.push("pod".to_owned());
    }
    let names: Vec<&str> = pod
        .containers
        .iter()
        .filter(|c| forbidden(c.security_context))
        .map(|c| c.name)
        .collect();
    if !names.is_empty() {
        who.push(containers_phrase(&names));
    }
    (!who.is_empty()).then(|| who.join(" and "))
}

fn violation(reason: &str, detail: String) -> Option<Violation> {
    Some(Violation {
        reason: reason.to_owned(),
        detail,
    })
}

/// `v[key]`, unless `v` or the field is missing or `null`.
fn field<'a>(v: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    v.and_then(|v| v.get(key)).filter(|x| !x.is_null())
}

/// A boolean field (`None` when unset).
fn flag(v: Option<&Value>, key: &str) -> Option<bool> {
    field(v, key).and_then(Value::as_bool)
}

/// A string field (`""` when unset, as Go's zero value).
fn text<'a>(v: Option<&'a Value>, key: &str) -> &'a str {
    field(v, key).and_then(Value::as_str).unwrap_or("")
}

/// An array field (empty when unset).
fn items<'a>(v: Option<&'a Value>, key: &str) -> &'a [Value] {
    field(v, key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The strings of an array field.
fn strings<'a>(v: Option<&'a Value>, key: &str) -> impl Iterator<Item = &'a str> {
    items(v, key).iter().filter_map(Value::as_str)
}

/// Upstream's `pluralize`.
fn pluralize(singular: &'static str, plural: &'static str, count: usize) -> &'static str {
    if count == 1 {
        singular
    } else {
        plural
    }
}

/// Upstream's `joinQuote`: `"a", "b"` (no escaping), `""` for none.
fn join_quote<I>(items: I) -> String
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    items
        .into_iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `container "a"` / `containers "a", "b"`.
fn containers_phrase(names: &[&str]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

/// A string quoted as Go's `%q` (`strconv.Quote`) quotes it. Go escapes
/// every rune that `unicode.IsPrint` rejects; this escapes control
/// characters, whitespace other than the ASCII space, and the common format
/// characters, which covers what label and annotation values hold.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if !go_printable(c) => {
                if (c as u32) < 0x1_0000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint` for non-ASCII-control runes.
fn go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    let format_char = matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    );
    !(c.is_control() || c.is_whitespace() || format_char)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A pod `ns/p` with this spec.
    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec})
    }

    /// The single violation of one check against `level`.
    fn only(level: Level, pod: &Value) -> Violation {
        let mut found = check(level, pod);
        assert_eq!(found.len(), 1, "{found:?}");
        found.remove(0)
    }

    fn labels(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{LABEL_PREFIX}{k}"), Value::from(*v)))
            .collect()
    }

    #[test]
    fn levels_parse_and_print() {
        for level in [Level::Privileged, Level::Baseline, Level::Restricted] {
            assert_eq!(Level::parse(level.as_str()), Some(level));
        }
        assert_eq!(Level::parse("Restricted"), None);
        assert_eq!(Level::parse(""), None);
        assert!(Level::Privileged < Level::Baseline && Level::Baseline < Level::Restricted);
    }

    #[test]
    fn checks_run_in_upstream_order() {
        let mut ids = Vec::new();
        for level in [Level::Baseline, Level::Restricted] {
            let mut of_level: Vec<&str> = CHECKS
                .iter()
                .filter(|c| c.level == level)
                .map(|c| c.id)
                .collect();
            let mut sorted = of_level.clone();
            sorted.sort_unstable(); // byte-wise, as Go sorts strings
            assert_eq!(of_level, sorted);
            ids.append(&mut of_level);
        }
        assert_eq!(ids.len(), CHECKS.len(), "baseline checks come first");
        for id in RESTRICTED_OVERRIDES {
            assert!(CHECKS
                .iter()
                .any(|c| c.id == *id && c.level == Level::Baseline));
        }
    }

    #[test]
    fn privileged_pod_under_baseline() {
        let p = pod(json!({"containers": [
            {"name": "x", "image": "nginx", "securityContext": {"privileged": true}}
        ]}));
        let found = check(Level::Baseline, &p);
        assert_eq!(
            found,
            vec![Violation {
                reason: "privileged".into(),
                detail: r#"container "x" must not set securityContext.privileged=true"#.into(),
            }]
        );
        assert_eq!(
            describe(Level::Baseline, "latest", &found),
            r#"violates PodSecurity "baseline:latest": privileged (container "x" must not set securityContext.privileged=true)"#
        );
        assert!(check(Level::Privileged, &p).is_empty());
    }

    #[test]
    fn compliant_restricted_pod_passes() {
        let p = pod(json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{"name": "init", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
            "containers": [{"name": "app", "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                "runAsUser": 1000,
                "seLinuxOptions": {"type": "container_t"},
                "appArmorProfile": {"type": "RuntimeDefault"},
                "procMount": "Default"}}],
            "volumes": [
                {"name": "a", "emptyDir": {}}, {"name": "b", "secret": {"secretName": "s"}},
                {"name": "c", "configMap": {"name": "c"}}, {"name": "d", "projected": {"sources": []}},
                {"name": "e", "persistentVolumeClaim": {"claimName": "c"}}, {"name": "f", "downwardAPI": {}},
                {"name": "g", "csi": {"driver": "d"}}, {"name": "h", "ephemeral": {}}]
        }));
        assert_eq!(check(Level::Restricted, &p), vec![]);
        assert_eq!(check(Level::Baseline, &p), vec![]);
    }

    #[test]
    fn kubectl_run_nginx_fails_restricted() {
        // `kubectl run nginx --image=nginx`, as stored after defaulting.
        let p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "nginx", "labels": {"run": "nginx"}},
            "spec": {
                "containers": [{"name": "nginx", "image": "nginx", "resources": {},
                                "imagePullPolicy": "Always"}],
                "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                "securityContext": {}
            }
        });
        assert!(check(Level::Baseline, &p).is_empty());
        let found = check(Level::Restricted, &p);
        let reasons: Vec<&str> = found.iter().map(|v| v.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "allowPrivilegeEscalation != false",
                "unrestricted capabilities",
                "runAsNonRoot != true",
                "seccompProfile"
            ]
        );
        assert_eq!(
            describe(Level::Restricted, "latest", &found),
            concat!(
                r#"violates PodSecurity "restricted:latest": "#,
                r#"allowPrivilegeEscalation != false (container "nginx" must set securityContext.allowPrivilegeEscalation=false), "#,
                r#"unrestricted capabilities (container "nginx" must set securityContext.capabilities.drop=["ALL"]), "#,
                r#"runAsNonRoot != true (pod or container "nginx" must set securityContext.runAsNonRoot=true), "#,
                r#"seccompProfile (pod or container "nginx" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#
            )
        );
        assert!(warning(Level::Restricted, "v1.30", &found).starts_with(
            r#"would violate PodSecurity "restricted:v1.30": allowPrivilegeEscalation != false ("#
        ));
    }

    #[test]
    fn host_namespaces_check() {
        let p = pod(
            json!({"hostNetwork": true, "hostPID": true, "hostIPC": false,
                           "containers": [{"name": "a"}]}),
        );
        assert_eq!(
            only(Level::Baseline, &p),
            Violation {
                reason: "host namespaces".into(),
                detail: "hostNetwork=true, hostPID=true".into()
            }
        );
        let all = pod(json!({"hostNetwork": true, "hostPID": true, "hostIPC": true}));
        assert_eq!(
            only(Level::Baseline, &all).detail,
            "hostNetwork=true, hostPID=true, hostIPC=true"
        );
    }

    #[test]
    fn host_path_volumes_check() {
        let p = pod(json!({"volumes": [
            {"name": "data", "hostPath": {"path": "/data"}},
            {"name": "tmp", "emptyDir": {}}
        ]}));
        assert_eq!(
            only(Level::Baseline, &p),
            Violation {
                reason: "hostPath volumes".into(),
                detail: r#"volume "data""#.into()
            }
        );
        let two = pod(json!({"volumes": [
            {"name": "a", "hostPath": {"path": "/a"}}, {"name": "b", "hostPath": {"path": "/b"}}
        ]}));
        assert_eq!(only(Level::Baseline, &two).detail, r#"volumes "a", "b""#);
        // Restricted replaces hostPathVolumes by restrictedVolumes.
        assert_eq!(
            only(Level::Restricted, &p),
            Violation {
                reason: "restricted volume types".into(),
                detail: r#"volume "data" uses restricted volume type "hostPath""#.into()
            }
        );
    }

    #[test]
    fn restricted_volume_types_as_upstream_fixture() {
        let mut volumes = vec![
            json!({"name": "a1", "emptyDir": {}}),
            json!({"name": "a2", "secret": {}}),
            json!({"name": "a3", "persistentVolumeClaim": {}}),
            json!({"name": "a4", "downwardAPI": {}}),
            json!({"name": "a5", "configMap": {}}),
            json!({"name": "a6", "projected": {}}),
            json!({"name": "a7", "csi": {}}),
            json!({"name": "a8", "ephemeral": {}}),
        ];
        for (i, key) in KNOWN_RESTRICTED_VOLUME_SOURCES.iter().enumerate() {
            let mut volume = json!({"name": format!("b{}", i + 1)});
            volume[*key] = json!({});
            volumes.push(volume);
        }
        volumes.push(json!({"name": "c1"}));
        let p = pod(json!({"volumes": volumes}));
        let found = restricted_volumes(&PodView::new(&p));
        assert_eq!(
            found,
            Some(Violation {
                reason: "restricted volume types".into(),
                detail: concat!(
                    r#"volumes "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9", "b10", "b11", "b12", "b13", "b14", "b15", "b16", "b17", "b18", "b19", "b20", "b21", "c1""#,
                    r#" use restricted volume types "#,
                    r#""awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "fc", "flexVolume", "flocker", "gcePersistentDisk", "gitRepo", "glusterfs", "#,
                    r#""hostPath", "iscsi", "nfs", "photonPersistentDisk", "portworxVolume", "quobyte", "rbd", "scaleIO", "storageos", "unknown", "vsphereVolume""#
                )
                .into()
            })
        );
        // v1.31: an image volume is not allowed yet (v1.33 allows it).
        let image = pod(json!({"volumes": [{"name": "i", "image": {"reference": "x"}}]}));
        assert_eq!(
            restricted_volumes(&PodView::new(&image)).map(|v| v.detail),
            Some(r#"volume "i" uses restricted volume type "unknown""#.into())
        );
    }

    #[test]
    fn host_ports_as_upstream_fixture() {
        let one = pod(json!({"containers": [
            {"name": "a", "ports": [{"hostPort": 0}]},
            {"name": "b", "ports": [{"hostPort": 0}, {"hostPort": 20}]}
        ]}));
        assert_eq!(
            only(Level::Baseline, &one),
            Violation {
                reason: "hostPort".into(),
                detail: r#"container "b" uses hostPort 20"#.into()
            }
        );
        let many = pod(json!({"containers": [
            {"name": "a", "ports": [{"hostPort": 0}]},
            {"name": "b", "ports": [{"hostPort": 0}, {"hostPort": 10}, {"hostPort": 20}]},
            {"name": "c", "ports": [{"hostPort": 0}, {"hostPort": 10}, {"hostPort": 30}]}
        ]}));
        assert_eq!(
            only(Level::Baseline, &many).detail,
            r#"containers "b", "c" use hostPorts 10, 20, 30"#
        );
    }

    #[test]
    fn capabilities() {
        let p = pod(json!({"containers": [
            {"name": "a", "securityContext": {"capabilities": {"add": ["FOO", "BAR"]}}},
            {"name": "b", "securityContext": {"capabilities": {"add": ["BAR", "BAZ"]}}},
            {"name": "c", "securityContext": {"capabilities": {
                "add": ["NET_BIND_SERVICE", "CHOWN"], "drop": ["ALL", "FOO"]}}}
        ]}));
        let pod_view = PodView::new(&p);
        assert_eq!(
            capabilities_restricted(&pod_view),
            Some(Violation {
                reason: "unrestricted capabilities".into(),
                detail: concat!(
                    r#"containers "a", "b" must set securityContext.capabilities.drop=["ALL"]; "#,
                    r#"containers "a", "b", "c" must not include "BAR", "BAZ", "CHOWN", "FOO" in securityContext.capabilities.add"#
                )
                .into()
            })
        );
        assert_eq!(
            capabilities_baseline(&pod_view),
            Some(Violation {
                reason: "non-default capabilities".into(),
                detail: r#"containers "a", "b" must not include "BAR", "BAZ", "FOO" in securityContext.capabilities.add"#.into()
            })
        );
        let net_raw = pod(json!({"containers": [
            {"name": "a", "securityContext": {"capabilities": {"add": ["CHOWN", "KILL"]}}},
            {"name": "b", "securityContext": {"capabilities": {"add": ["NET_RAW"]}}}
        ]}));
        assert_eq!(
            only(Level::Baseline, &net_raw).detail,
            r#"container "b" must not include "NET_RAW" in securityContext.capabilities.add"#
        );
    }

    #[test]
    fn app_armor_as_upstream_fixtures() {
        let p = pod(json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}));
        assert_eq!(
            only(Level::Baseline, &p),
            Violation {
                reason: "forbidden AppArmor profile".into(),
                detail: r#"pod must not set AppArmor profile type to "Unconfined""#.into()
            }
        );
        let c = pod(json!({
            "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "foo", "securityContext": {"appArmorProfile": {"type": "Unconfined"}}}]
        }));
        assert_eq!(
            only(Level::Baseline, &c).detail,
            r#"container "foo" must not set AppArmor profile type to "Unconfined""#
        );
        let annotated = json!({"metadata": {"annotations": {
            "container.apparmor.security.beta.kubernetes.io/": "bogus",
            "container.apparmor.security.beta.kubernetes.io/a": "",
            "container.apparmor.security.beta.kubernetes.io/b": "runtime/default",
            "container.apparmor.security.beta.kubernetes.io/c": "localhost/",
            "container.apparmor.security.beta.kubernetes.io/d": "localhost/foo",
            "container.apparmor.security.beta.kubernetes.io/e": "unconfined",
            "container.apparmor.security.beta.kubernetes.io/f": "unknown"
        }}, "spec": {}});
        assert_eq!(
            only(Level::Baseline, &annotated),
            Violation {
                reason: "forbidden AppArmor profiles".into(),
                detail: concat!(
                    "annotations must not set AppArmor profile type to ",
                    r#""container.apparmor.security.beta.kubernetes.io/="bogus"", "#,
                    r#""container.apparmor.security.beta.kubernetes.io/e="unconfined"", "#,
                    r#""container.apparmor.security.beta.kubernetes.io/f="unknown"""#
                )
                .into()
            }
        );
        let both = json!({
            "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/x": "unconfined"}},
            "spec": {"containers": [{"name": "x", "securityContext": {"appArmorProfile": {"type": "Unconfined"}}}]}
        });
        assert_eq!(
            only(Level::Baseline, &both).detail,
            r#"container "x" and annotation must not set AppArmor profile type to "Unconfined", "container.apparmor.security.beta.kubernetes.io/x="unconfined"""#
        );
    }

    #[test]
    fn se_linux_options_as_upstream_fixture() {
        let p = pod(json!({
            "securityContext": {"seLinuxOptions": {"type": "foo", "user": "bar", "role": "baz"}},
            "containers": [
                {"name": "a", "securityContext": {"seLinuxOptions": {"type": "container_t"}}},
                {"name": "b", "securityContext": {"seLinuxOptions": {"type": "container_init_t"}}},
                {"name": "c", "securityContext": {"seLinuxOptions": {"type": "container_kvm_t"}}},
                {"name": "d", "securityContext": {"seLinuxOptions": {"type": "container_engine_t"}}},
                {"name": "e", "securityContext": {"seLinuxOptions": {"type": "bar"}}},
                {"name": "f", "securityContext": {"seLinuxOptions": {"user": "bar"}}},
                {"name": "g", "securityContext": {"seLinuxOptions": {"role": "baz"}}}
            ]
        }));
        assert_eq!(
            only(Level::Baseline, &p),
            Violation {
                reason: "seLinuxOptions".into(),
                detail: r#"pod and containers "e", "f", "g" set forbidden securityContext.seLinuxOptions: types "bar", "foo"; user may not be set; role may not be set"#.into()
            }
        );
        let role = pod(json!({"securityContext": {"seLinuxOptions": {"role": "r"}}}));
        assert_eq!(
            only(Level::Baseline, &role).detail,
            "pod set forbidden securityContext.seLinuxOptions: role may not be set"
        );
    }

    #[test]
    fn proc_mount_sysctls_host_process_and_seccomp_baseline() {
        let p = pod(json!({
            "securityContext": {
                "sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"},
                            {"name": "kernel.msgmax", "value": "1"},
                            {"name": "net.core.somaxconn", "value": "1"}],
                "seccompProfile": {"type": "Unconfined"},
                "windowsOptions": {"hostProcess": true}
            },
            "containers": [
                {"name": "a", "securityContext": {"procMount": "Unmasked",
                    "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}},
                {"name": "b", "securityContext": {"procMount": "Default",
                    "windowsOptions": {"hostProcess": true}}}
            ]
        }));
        let found = check(Level::Baseline, &p);
        assert_eq!(
            forbidden_detail(&found),
            concat!(
                r#"procMount (container "a" must not set securityContext.procMount to "Unmasked"), "#,
                r#"seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined"), "#,
                "forbidden sysctls (kernel.msgmax, net.core.somaxconn), ",
                r#"hostProcess (pod and container "b" must not set securityContext.windowsOptions.hostProcess=true)"#
            )
        );
    }

    #[test]
    fn seccomp_restricted() {
        let explicit = pod(json!({
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {"name": "a", "securityContext": {"seccompProfile": {"type": "Unconfined"}}},
                {"name": "b"}
            ]
        }));
        assert_eq!(
            seccomp_profile_restricted(&PodView::new(&explicit)).map(|v| v.detail),
            Some(
                r#"container "a" must not set securityContext.seccompProfile.type to "Unconfined""#
                    .into()
            )
        );
        let implicit = pod(json!({"containers": [
            {"name": "a", "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}},
            {"name": "b"}, {"name": "c"}
        ]}));
        assert_eq!(
            seccomp_profile_restricted(&PodView::new(&implicit)).map(|v| v.detail),
            Some(r#"pod or containers "b", "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost""#.into())
        );
    }

    #[test]
    fn run_as_non_root_and_run_as_user() {
        let p = pod(json!({
            "securityContext": {"runAsNonRoot": false, "runAsUser": 0},
            "containers": [
                {"name": "a", "securityContext": {"runAsNonRoot": false, "runAsUser": 0}},
                {"name": "b", "securityContext": {"runAsUser": 1000}}
            ]
        }));
        let view = PodView::new(&p);
        assert_eq!(
            run_as_non_root(&view).map(|v| v.detail),
            Some(r#"pod and container "a" must not set securityContext.runAsNonRoot=false"#.into())
        );
        assert_eq!(
            run_as_user(&view),
            Some(Violation {
                reason: "runAsUser=0".into(),
                detail: r#"pod and container "a" must not set runAsUser=0"#.into()
            })
        );
        let pod_level = pod(json!({
            "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "a"}, {"name": "b", "securityContext": {"runAsNonRoot": true}}]
        }));
        assert_eq!(run_as_non_root(&PodView::new(&pod_level)), None);
    }

    #[test]
    fn containers_visited_init_regular_ephemeral() {
        let p = pod(json!({
            "ephemeralContainers": [{"name": "debug"}],
            "containers": [{"name": "app"}],
            "initContainers": [{"name": "init"}]
        }));
        let found = check(Level::Restricted, &p);
        assert_eq!(
            found[0].detail,
            r#"containers "init", "app", "debug" must set securityContext.allowPrivilegeEscalation=false"#
        );
    }

    #[test]
    fn windows_pods_skip_only_upstreams_windows_checks() {
        let p = pod(json!({"os": {"name": "windows"}, "containers": [{"name": "w"}]}));
        let found = check(Level::Restricted, &p);
        assert_eq!(
            found,
            vec![Violation {
                reason: "runAsNonRoot != true".into(),
                detail: r#"pod or container "w" must set securityContext.runAsNonRoot=true"#.into()
            }]
        );
        let linux = pod(json!({"os": {"name": "linux"}, "containers": [{"name": "l"}]}));
        assert_eq!(check(Level::Restricted, &linux).len(), 4);
    }

    #[test]
    fn baseline_violations_come_before_restricted_ones() {
        let p = pod(json!({
            "hostNetwork": true,
            "containers": [{"name": "a", "securityContext": {"privileged": true}}]
        }));
        let reasons: Vec<String> = check(Level::Restricted, &p)
            .into_iter()
            .map(|v| v.reason)
            .collect();
        assert_eq!(
            reasons,
            [
                "host namespaces",
                "privileged",
                "allowPrivilegeEscalation != false",
                "unrestricted capabilities",
                "runAsNonRoot != true",
                "seccompProfile"
            ]
        );
    }

    #[test]
    fn policy_from_labels_as_upstream() {
        let p = Policy::from_labels(None);
        assert_eq!(p, Policy::all_privileged());
        assert_eq!(
            Policy::from_labels(Some(&Map::new())),
            Policy::all_privileged()
        );

        // Enforce alone also sets warn.
        let p = Policy::from_labels(Some(&labels(&[("enforce", "baseline")])));
        assert_eq!(
            (p.enforce, p.warn, p.audit),
            (Level::Baseline, Level::Baseline, Level::Privileged)
        );

        let p = Policy::from_labels(Some(&labels(&[
            ("enforce", "baseline"),
            ("enforce-version", "v1.22"),
        ])));
        assert_eq!(
            (p.enforce_version.as_str(), p.warn_version.as_str()),
            ("v1.22", "v1.22")
        );

        let p = Policy::from_labels(Some(&labels(&[
            ("enforce", "baseline"),
            ("enforce-version", "v1.22"),
            ("warn-version", "latest"),
        ])));
        assert_eq!(
            (p.warn, p.warn_version.as_str()),
            (Level::Baseline, "latest")
        );

        let p = Policy::from_labels(Some(&labels(&[
            ("enforce", "baseline"),
            ("warn-version", "v1.23"),
        ])));
        assert_eq!(
            (p.warn, p.warn_version.as_str()),
            (Level::Baseline, "v1.23")
        );
        assert_eq!(p.enforce_version, "latest");

        let p = Policy::from_labels(Some(&labels(&[
            ("enforce", "baseline"),
            ("warn", "privileged"),
        ])));
        assert_eq!(p.warn, Level::Privileged);

        let p = Policy::from_labels(Some(&labels(&[
            ("enforce", "baseline"),
            ("enforce-version", "v1.20"),
            ("warn", "restricted"),
            ("warn-version", "v1.21"),
            ("audit", "restricted"),
            ("audit-version", "v1.22"),
        ])));
        assert_eq!(
            p,
            Policy {
                enforce: Level::Baseline,
                audit: Level::Restricted,
                warn: Level::Restricted,
                enforce_version: "v1.20".into(),
                warn_version: "v1.21".into(),
                audit_version: "v1.22".into(),
            }
        );

        // Invalid enforce fails closed (and does not set warn); invalid
        // warn/audit fail open.
        let p = Policy::from_labels(Some(&labels(&[("enforce", "foo")])));
        assert_eq!(
            (p.enforce, p.warn, p.audit),
            (Level::Restricted, Level::Privileged, Level::Privileged)
        );
        let p = Policy::from_labels(Some(&labels(&[
            ("enforce", "baseline"),
            ("warn", "foo"),
            ("audit", "x"),
        ])));
        assert_eq!(
            (p.enforce, p.warn, p.audit),
            (Level::Baseline, Level::Privileged, Level::Privileged)
        );

        // Other labels are ignored.
        let mut other = labels(&[("warn", "restricted")]);
        other.insert("kubernetes.io/metadata.name".into(), Value::from("ns"));
        let p = Policy::from_labels(Some(&other));
        assert_eq!((p.enforce, p.warn), (Level::Privileged, Level::Restricted));
    }

    #[test]
    fn versions_parse_as_upstream() {
        for (label, version) in [
            ("latest", "latest"),
            ("v1.0", "v1.0"),
            ("v1.9", "v1.9"),
            ("v1.25", "v1.25"),
            ("v1.05", "latest"),
            ("v1.", "latest"),
            ("v2.1", "latest"),
            ("1.25", "latest"),
            ("v1.25 ", "latest"),
            ("v1.+5", "latest"),
            ("v1.99999999999999999999", "latest"),
            ("", "latest"),
        ] {
            assert_eq!(parse_version(label), version, "{label:?}");
        }
    }

    #[test]
    fn pod_templates_as_upstream_extractor() {
        let template =
            json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "a"}]}});
        for kind in [
            "Deployment",
            "ReplicaSet",
            "StatefulSet",
            "DaemonSet",
            "Job",
            "ReplicationController",
        ] {
            let obj = json!({"kind": kind, "spec": {"template": template.clone()}});
            assert_eq!(pod_template(kind, &obj), Some(template.clone()), "{kind}");
        }
        let cron = json!({"spec": {"jobTemplate": {"spec": {"template": template.clone()}}}});
        assert_eq!(pod_template("CronJob", &cron), Some(template.clone()));
        let podt = json!({"template": template.clone()});
        assert_eq!(pod_template("PodTemplate", &podt), Some(template.clone()));
        assert_eq!(pod_template("ConfigMap", &json!({"data": {}})), None);
        assert_eq!(pod_template("Deployment", &json!({"spec": {}})), None);
        let bare = json!({"spec": {"template": {"spec": {}}}});
        assert_eq!(
            pod_template("Job", &bare),
            Some(json!({"metadata": {}, "spec": {}}))
        );
    }

    #[test]
    fn messages_join_and_quote_as_upstream() {
        let v = [
            Violation {
                reason: "a".into(),
                detail: String::new(),
            },
            Violation {
                reason: String::new(),
                detail: "d".into(),
            },
        ];
        assert_eq!(
            warning(Level::Baseline, "v1.31", &v),
            r#"would violate PodSecurity "baseline:v1.31": a, unknown forbidden reason (d)"#
        );
        assert_eq!(
            go_quote("a\"b\\c\n\u{1}\u{7f}\u{a0}é"),
            r#""a\"b\\c\n\x01\x7f\u00a0é""#
        );
        assert_eq!(join_quote(Vec::<&str>::new()), "");
        assert_eq!(join_quote(["a", "b"]), r#""a", "b""#);
    }
}
