//! Importing a cluster: registration tokens and the import manifest.
//!
//! A ClusterRegistrationToken (namespace = its cluster) carries a random
//! token; only the token's SHA-256 is the lookup key
//! (`/drover/registration/{sha256}` → cluster), written in the same
//! transaction as the object and removed with it, so a deleted token stops
//! working at once. [`render_manifest`] is what `kubectl apply` installs
//! the agent with (served at `GET /v1-public/import/{token}.yaml`).

use drover_apiserver::{ApiError, Context, NewObject, Prepared, Strategy};
use drover_core::api::{self, schema_for};
use drover_store::{Op, Store};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The namespace the agent runs in, downstream.
pub const AGENT_NAMESPACE: &str = "drover-system";
/// The agent's name (ServiceAccount, ClusterRole, binding, Deployment).
pub const AGENT_NAME: &str = "drover-agent";
/// The label on everything Drover creates downstream.
pub const MANAGED_LABEL: &str = "drover.io/managed";
/// Length of a registration token.
const TOKEN_LEN: usize = 54;

/// What a registration token's hash record says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    /// The cluster the token imports.
    pub cluster: String,
    /// The ClusterRegistrationToken's name.
    pub name: String,
}

/// Where registration tokens' records live.
pub const RECORDS: &str = "/drover/registration/";

/// The store key of a registration token's record.
pub fn record_key(token: &str) -> String {
    format!("{RECORDS}{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// The cluster a registration token imports, if the token is live.
pub async fn lookup(store: &Store, token: &str) -> Result<Option<Registration>, ApiError> {
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    let kv = store
        .get(&record_key(token))
        .await
        .map_err(|_| ApiError::unavailable("the datastore is unavailable"))?;
    Ok(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
}

/// Where the server is reached, and what its agents run.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    /// `https://host:port`, no trailing slash.
    pub server_url: String,
    /// The agent's image.
    pub agent_image: String,
}

/// The SHA-256 (hex) of a CA PEM, as `drover agent --ca-checksum` wants it.
pub fn ca_checksum(ca_pem: &str) -> String {
    if ca_pem.is_empty() {
        String::new()
    } else {
        hex::encode(Sha256::digest(ca_pem.as_bytes()))
    }
}

/// Fill a registration token object (name and namespace set) with a new
/// token and its commands, and give the record that makes it work.
pub fn fill(obj: &mut Value, server_url: &str) -> (String, Vec<u8>) {
    let token = drover_core::names::random_suffix(TOKEN_LEN);
    let cluster = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let url = format!("{server_url}/v1-public/import/{token}.yaml");
    obj["spec"] = json!({"clusterName": cluster});
    obj["status"] = json!({
        "token": token,
        "manifestUrl": url,
        "command": format!("kubectl apply -f {url}"),
        "insecureCommand": format!("curl --insecure -sfL {url} | kubectl apply -f -"),
    });
    let record = serde_json::to_vec(&Registration { cluster, name }).expect("plain struct");
    (record_key(&token), record)
}

/// The registration token made with every new cluster.
pub fn default_token(cluster: &str, server_url: &str) -> (NewObject, (String, Vec<u8>)) {
    let mut object = json!({
        "apiVersion": api::API_VERSION, "kind": "ClusterRegistrationToken",
        "metadata": {"namespace": cluster, "name": "default-token"},
    });
    let record = fill(&mut object, server_url);
    (
        NewObject {
            group: api::GROUP,
            plural: "clusterregistrationtokens",
            object,
        },
        record,
    )
}

/// ClusterRegistrationToken: the server makes the token and the commands;
/// deleting the object revokes the token.
pub(crate) struct RegistrationTokens {
    pub(crate) server_url: String,
}

impl Strategy for RegistrationTokens {
    fn schema(&self) -> Value {
        schema_for::<api::ClusterRegistrationToken>()
    }

    fn prepare_create<'a>(
        &'a self,
        _ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            let record = fill(obj, &self.server_url);
            Ok(Prepared {
                records: vec![record],
                ..Default::default()
            })
        })
    }

    fn prepare_update<'a>(
        &'a self,
        _ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            // The token and its commands are the server's to write.
            new["status"] = old.get("status").cloned().unwrap_or(Value::Null);
            new["spec"] = old.get("spec").cloned().unwrap_or(Value::Null);
            Ok(())
        })
    }

    /// Deleting the object revokes the token, in the same transaction.
    fn delete_ops<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Op>, ApiError>> {
        Box::pin(async move { Ok(revoke_op(&ctx.store, obj).await?.into_iter().collect()) })
    }
}

/// The delete of a registration token's record, if it is there.
pub async fn revoke_op(store: &Store, obj: &Value) -> Result<Option<Op>, ApiError> {
    let Some(token) = obj.pointer("/status/token").and_then(Value::as_str) else {
        return Ok(None);
    };
    let kv = store
        .get(&record_key(token))
        .await
        .map_err(|_| ApiError::unavailable("the datastore is unavailable"))?;
    Ok(kv.map(|kv| Op::delete(kv.key, kv.mod_revision)))
}

/// Delete a cluster's registration tokens with their records, in one
/// transaction: no agent may connect with them again.
pub async fn revoke_all(store: &Store, cluster: &str) -> Result<(), ApiError> {
    let prefix = drover_core::keys::prefix(api::GROUP, "clusterregistrationtokens", Some(cluster));
    for _ in 0..5 {
        let page = store
            .list(&drover_store::ListOptions {
                prefix: prefix.clone(),
                ..Default::default()
            })
            .await
            .map_err(|_| ApiError::unavailable("the datastore is unavailable"))?;
        let mut ops = Vec::new();
        for kv in &page.items {
            ops.push(Op::delete(kv.key.clone(), kv.mod_revision));
            if let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) {
                ops.extend(revoke_op(store, &obj).await?);
            }
        }
        ops.push(Op::Unchanged {
            prefix: prefix.clone(),
            since: page.revision,
        });
        match store.txn(&ops).await {
            Ok(_) => return Ok(()),
            Err(drover_store::StoreError::Conflict { .. })
            | Err(drover_store::StoreError::NotFound(_))
            | Err(drover_store::StoreError::PrefixChanged { .. }) => continue,
            Err(_) => return Err(ApiError::unavailable("the datastore is unavailable")),
        }
    }
    Err(ApiError::conflict_because(
        drover_apiserver::error::Subject {
            group: api::GROUP,
            resource: "clusterregistrationtokens",
            name: "",
        },
        "the tokens kept changing; try again",
    ))
}

/// The agent's rules downstream, each with why it is there.
fn agent_rules() -> Vec<(&'static str, Value)> {
    let rw = json!(["get", "list", "watch", "create", "update", "patch", "delete"]);
    vec![
        (
            "Act as the Drover user behind each proxied request: the cluster's own RBAC then decides (users, groups, and service accounts for users who are one).",
            json!({"apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"], "verbs": ["impersonate"]}),
        ),
        (
            "Pass a user's Drover principal along as an impersonated extra.",
            json!({"apiGroups": ["authentication.k8s.io"], "resources": ["userextras/principalid", "userextras/username"], "verbs": ["impersonate"]}),
        ),
        (
            "Project Drover's role templates and bindings. RBAC cannot limit by label: Drover itself only ever lists, changes and deletes objects labelled drover.io/managed=true.",
            json!({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles", "clusterrolebindings", "roles", "rolebindings"], "verbs": rw}),
        ),
        (
            "Grant roles it does not hold itself (cluster-admin for cluster owners), which Kubernetes' escalation check otherwise refuses.",
            json!({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles", "roles"], "verbs": ["bind", "escalate"]}),
        ),
        (
            "Projects: create, move (annotate) and delete namespaces; remove drover-system when the cluster is removed.",
            json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": rw}),
        ),
        (
            "Project quotas and container defaults in each project namespace.",
            json!({"apiGroups": [""], "resources": ["resourcequotas", "limitranges"], "verbs": rw}),
        ),
        (
            "Project secrets: copy them into each namespace of their project. Drover only ever reads, changes and deletes Secrets labelled drover.io/managed=true; before a namespace moves into a project whose quota limits secrets, it counts the namespace's Secrets from a Table, without their content.",
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": rw}),
        ),
        (
            "Project network isolation: a NetworkPolicy in each project namespace.",
            json!({"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": rw}),
        ),
        (
            "Quota: count what a namespace uses before it moves into a project with a quota.",
            json!({"apiGroups": [""], "resources": ["pods", "services", "configmaps", "persistentvolumeclaims"], "verbs": ["list"]}),
        ),
        (
            "Alert rules: pods and events read while a rule of the cluster needs them (nothing is written).",
            json!({"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list", "watch"]}),
        ),
        (
            "Alert rules: workloads' available replicas, read while a rule of the cluster needs them.",
            json!({"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"], "verbs": ["get", "list", "watch"]}),
        ),
        (
            "Cluster status: node count, capacity and allocatable.",
            json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}),
        ),
    ]
}

fn yaml_doc(v: &Value) -> String {
    yaml_serde::to_string(v).expect("JSON values always serialise to YAML")
}

/// The import manifest for `cluster`.
/// `ca_checksum` is the SHA-256 (hex) of the CA PEM at `/cacerts`, empty
/// with a public CA.
pub fn render_manifest(
    settings: &ImportSettings,
    ca_checksum: &str,
    cluster: &str,
    token: &str,
) -> String {
    let labels = json!({"app.kubernetes.io/name": AGENT_NAME, "drover.io/cluster": cluster});
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": AGENT_NAMESPACE, "labels": labels}});
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": AGENT_NAME, "namespace": AGENT_NAMESPACE, "labels": labels}});
    let rules = agent_rules();
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": AGENT_NAME, "labels": labels},
        "rules": rules.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>()});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": AGENT_NAME, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": AGENT_NAME},
        "subjects": [{"kind": "ServiceAccount", "name": AGENT_NAME, "namespace": AGENT_NAMESPACE}]});
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "drover-credentials", "namespace": AGENT_NAMESPACE, "labels": labels},
        "stringData": {"url": settings.server_url, "token": token, "ca-checksum": ca_checksum}});
    // After a CA rotation the agent writes the new checksum here, so that
    // a restarted agent trusts the new CA.
    let trust_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": AGENT_NAME, "namespace": AGENT_NAMESPACE, "labels": labels},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["drover-credentials"], "verbs": ["get", "patch"]}]});
    let trust_binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": AGENT_NAME, "namespace": AGENT_NAMESPACE, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": AGENT_NAME},
        "subjects": [{"kind": "ServiceAccount", "name": AGENT_NAME, "namespace": AGENT_NAMESPACE}]});
    let env = |name: &str, key: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": "drover-credentials", "key": key}}});
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": AGENT_NAME, "namespace": AGENT_NAMESPACE, "labels": labels},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": AGENT_NAME}},
        "strategy": {"type": "Recreate"},
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "serviceAccountName": AGENT_NAME,
                "containers": [{
                    "name": "agent",
                    "image": settings.agent_image,
                    "args": ["agent"],
                    "env": [env("DROVER_SERVER", "url"), env("DROVER_TOKEN", "token"), env("DROVER_CA_CHECKSUM", "ca-checksum"),
                            json!({"name": "DROVER_TRUST_SECRET", "value": format!("{AGENT_NAMESPACE}/drover-credentials")})],
                    "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true, "runAsUser": 65532},
                }],
            },
        },
    }});
    let mut out = format!(
        "# Drover agent for cluster {cluster}, from {}.\n# Apply with: kubectl apply -f <this file>\n",
        settings.server_url
    );
    for doc in [&ns, &sa] {
        out.push_str("---\n");
        out.push_str(&yaml_doc(doc));
    }
    out.push_str("---\n# Why each rule of the agent's ClusterRole is there, in order:\n");
    for (i, (why, _)) in rules.iter().enumerate() {
        out.push_str(&format!("#  {}. {why}\n", i + 1));
    }
    out.push_str(&yaml_doc(&role));
    for doc in [&binding, &trust_role, &trust_binding, &secret, &deployment] {
        out.push_str("---\n");
        out.push_str(&yaml_doc(doc));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_has_every_object_and_the_credentials() {
        let settings = ImportSettings {
            server_url: "https://drover.example:8443".into(),
            agent_image: "drover/drover:0.1.0".into(),
        };
        let text = render_manifest(&settings, &"ab".repeat(32), "c-abcde", "tok123");
        let docs: Vec<Value> = yaml_serde::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "Secret",
                "Deployment"
            ]
        );
        assert_eq!(docs[6]["stringData"]["token"], "tok123");
        assert_eq!(docs[6]["stringData"]["ca-checksum"], "ab".repeat(32));
        assert_eq!(
            docs[7]["spec"]["template"]["spec"]["containers"][0]["image"],
            "drover/drover:0.1.0"
        );
        assert!(text.contains("# Why each rule"));
    }

    #[test]
    fn a_filled_token_has_its_commands() {
        let mut obj = json!({"metadata": {"namespace": "c-1", "name": "t"}});
        let (key, record) = fill(&mut obj, "https://d:1");
        let token = obj["status"]["token"].as_str().unwrap();
        assert_eq!(token.len(), TOKEN_LEN);
        assert_eq!(key, record_key(token));
        assert_eq!(
            obj["status"]["command"],
            format!("kubectl apply -f https://d:1/v1-public/import/{token}.yaml")
        );
        let r: Registration = serde_json::from_slice(&record).unwrap();
        assert_eq!((r.cluster.as_str(), r.name.as_str()), ("c-1", "t"));
    }
}
