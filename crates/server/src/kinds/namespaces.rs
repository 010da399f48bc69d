//! Namespaces in projects.
//!
//! A downstream namespace belongs to a project when its annotation
//! `drover.io/project-id: <cluster>:<project>` agrees with Drover's own
//! record of it (`/drover/adopted/{cluster}/{namespace}` → [`Record`]: the
//! project, and the UID of the namespace it was made for). Records are
//! written only by Drover: after a namespace was created or moved through
//! Drover's proxy by someone allowed to, and for the namespaces of the
//! Default and System projects. A namespace annotated directly in the
//! cluster, bypassing Drover, is therefore not adopted (and logged); nor is
//! one deleted and made again under the same name, whose UID differs.
//!
//! Through the proxy ([`inspect`], [`authorize`], then [`record_write`]): a
//! JSON create of a namespace carrying the annotation is allowed to the
//! project's owners and members (and the cluster's owners) and sent as the
//! agent, since members hold no cluster-wide right to create namespaces;
//! changing the annotation of an existing namespace (a move) is for cluster
//! owners. Both are refused when the project's quota could not hold one
//! more namespace, saying by how much. The deciding writes nothing: the
//! record changes only once the cluster accepted the write, for the UID it
//! answered with, and only if nobody changed the record meanwhile. A
//! refused or failed write leaves the record exactly as it was.

use std::collections::BTreeMap;

use axum::http::Method;
use drover_apiserver::ApiError;
use drover_auth::policy::Snapshot;
use drover_core::{api, keys, quantity};
use drover_rbac::UserInfo;
use drover_store::{KeyValue, ListOptions, Op, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The annotation that puts a namespace in a project.
pub const PROJECT_ANNOTATION: &str = "drover.io/project-id";

/// Drover's record of a namespace's project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The project.
    pub project: String,
    /// The UID of the namespace the record is for; `None` in records from
    /// before UIDs were kept, taken from the namespace when next seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl Record {
    fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok().or_else(|| {
            // A record from before UIDs: the project's name alone.
            let project = std::str::from_utf8(bytes).ok()?;
            (!project.is_empty() && !project.starts_with('{')).then(|| Record {
                project: project.to_owned(),
                uid: None,
            })
        })
    }

    /// Whether the record is for this incarnation of the namespace.
    pub fn is_for(&self, uid: &str) -> bool {
        self.uid.as_deref().is_none_or(|u| u == uid)
    }
}

/// Where every cluster's records live.
pub const RECORDS: &str = "/drover/adopted/";

/// Where a cluster's records live.
pub fn record_prefix(cluster: &str) -> String {
    format!("{RECORDS}{cluster}/")
}

fn record_key(cluster: &str, namespace: &str) -> String {
    format!("{}{namespace}", record_prefix(cluster))
}

fn unavailable<E>(_: E) -> ApiError {
    ApiError::unavailable("the datastore is unavailable")
}

/// Drover's records of a cluster: namespace → (record, as stored).
pub async fn records(
    store: &Store,
    cluster: &str,
) -> Result<BTreeMap<String, (Record, KeyValue)>, ApiError> {
    let page = store
        .list(&ListOptions {
            prefix: record_prefix(cluster),
            ..Default::default()
        })
        .await
        .map_err(unavailable)?;
    Ok(page
        .items
        .into_iter()
        .filter_map(|kv| {
            let ns = kv.key.rsplit('/').next()?.to_owned();
            Some((ns, (Record::parse(&kv.value)?, kv)))
        })
        .collect())
}

/// The write that makes a namespace's record `record` (or removes it),
/// given the record as it was read (`None`: there was none). Committed in
/// a transaction, it fails if the record changed since it was read.
pub fn record_op(
    cluster: &str,
    namespace: &str,
    before: Option<&KeyValue>,
    record: Option<&Record>,
) -> Option<Op> {
    let key = record_key(cluster, namespace);
    let bytes = |r: &Record| serde_json::to_vec(r).expect("a plain record");
    match (before, record) {
        (None, None) => None,
        (None, Some(r)) => Some(Op::create(key, bytes(r))),
        (Some(kv), Some(r)) => Some(Op::update(key, bytes(r), kv.mod_revision)),
        (Some(kv), None) => Some(Op::delete(key, kv.mod_revision)),
    }
}

/// Write a namespace's record, if it is still as read (and, with `fence`,
/// if the lease it is written under is still held).
pub async fn set_record(
    store: &Store,
    cluster: &str,
    namespace: &str,
    before: Option<&KeyValue>,
    record: Option<&Record>,
    fence: Option<&Op>,
) -> Result<(), ApiError> {
    let Some(op) = record_op(cluster, namespace, before, record) else {
        return Ok(());
    };
    let ops: Vec<Op> = fence.cloned().into_iter().chain([op]).collect();
    store.txn(&ops).await.map(drop).map_err(|e| match e {
        StoreError::Conflict { .. } | StoreError::AlreadyExists(_) | StoreError::NotFound(_) => {
            ApiError::new(
                409,
                "Conflict",
                "the namespace's project changed meanwhile; try again",
            )
        }
        other => unavailable(other),
    })
}

/// The namespaces of a project, by Drover's records.
pub async fn of_project(
    store: &Store,
    cluster: &str,
    project: &str,
) -> Result<Vec<String>, ApiError> {
    Ok(records(store, cluster)
        .await?
        .into_iter()
        .filter(|(_, (r, _))| r.project == project)
        .map(|(ns, _)| ns)
        .collect())
}

/// A namespace's share of its project's quota: the namespace default,
/// with the keys its override in `spec.namespaceResourceQuotas` names
/// replaced.
pub fn share(spec: &api::ProjectSpec, namespace: &str) -> Option<api::ResourceList> {
    let mut out = spec
        .namespace_default_resource_quota
        .as_ref()
        .map(|q| q.limit.clone());
    if let Some(o) = spec.namespace_resource_quotas.get(namespace) {
        out.get_or_insert_with(Default::default)
            .extend(o.limit.clone());
    }
    out
}

/// Whether a project's quota holds the shares of `namespaces` together;
/// the refusal says by how much it would be exceeded.
pub fn check_quota(
    project: &str,
    spec: &api::ProjectSpec,
    namespaces: &[&str],
) -> Result<(), ApiError> {
    let Some(limit) = &spec.resource_quota else {
        return Ok(());
    };
    for (key, max) in &limit.limit {
        let Some(max) = quantity::parse(max) else {
            continue;
        };
        let mut total = 0i128;
        let mut parts = Vec::new();
        for ns in namespaces {
            let each = share(spec, ns)
                .and_then(|s| s.get(key).and_then(|v| quantity::parse(v)))
                .unwrap_or(0);
            total += each;
            parts.push((*ns, each));
        }
        if total > max {
            let memory = key.contains("memory");
            let given: Vec<String> = parts
                .iter()
                .map(|(ns, q)| format!("{ns} {}", quantity::format(*q, memory)))
                .collect();
            return Err(ApiError::forbidden_because(format!(
                "project {project} would exceed its {key} limit of {} by {}: {} namespaces would be given {} ({})",
                quantity::format(max, memory),
                quantity::format(total - max, memory),
                namespaces.len(),
                quantity::format(total, memory),
                given.join(", "),
            )));
        }
    }
    Ok(())
}

/// Whether a namespace's current use fits in a project's quota: within
/// what the project has left once the other namespaces' shares are given,
/// and within the share the namespace would get. The refusal names each
/// resource that does not fit.
pub fn check_usage_fits(
    project: &str,
    spec: &api::ProjectSpec,
    namespace: &str,
    others: &[&str],
    used: &api::ResourceList,
) -> Result<(), ApiError> {
    let Some(limit) = &spec.resource_quota else {
        return Ok(());
    };
    let own = share(spec, namespace).unwrap_or_default();
    let mut short = Vec::new();
    for (key, max) in &limit.limit {
        let (Some(max), Some(uses)) = (
            quantity::parse(max),
            used.get(key).and_then(|u| quantity::parse(u)),
        ) else {
            continue;
        };
        let given: i128 = others
            .iter()
            .filter_map(|ns| share(spec, ns)?.get(key).and_then(|v| quantity::parse(v)))
            .sum();
        let left = (max - given).max(0);
        let memory = key.contains("memory");
        let f = |q: i128| quantity::format(q, memory);
        if uses > left {
            short.push(format!(
                "{key} (uses {}, {} left of {})",
                f(uses),
                f(left),
                f(max)
            ));
        } else if let Some(share) = own.get(key).and_then(|v| quantity::parse(v)) {
            if uses > share {
                short.push(format!(
                    "{key} (uses {}, its share would be {})",
                    f(uses),
                    f(share)
                ));
            }
        }
    }
    if short.is_empty() {
        return Ok(());
    }
    Err(ApiError::forbidden_because(format!(
        "namespace {namespace:?} does not fit in project {project}'s quota: {}; give it a larger share (spec.namespaceResourceQuotas) or make room first",
        short.join(", ")
    )))
}

/// What a namespace uses of each quota key, as a ResourceQuota counts it
/// (`drover_core::quota`): its pods that have not finished, and `counts`
/// of the other objects (`services`, …).
pub fn usage(pods: &[Value], counts: &BTreeMap<String, usize>) -> api::ResourceList {
    let mut sums: BTreeMap<String, i128> = BTreeMap::new();
    for pod in pods.iter().filter(|p| !drover_core::quota::is_terminal(p)) {
        for (k, v) in drover_core::quota::object_usage("pods", "", pod) {
            let sum = sums.entry(k).or_default();
            *sum = sum.saturating_add(v);
        }
    }
    sums.entry("pods".into()).or_default();
    for (k, n) in counts {
        sums.insert(k.clone(), *n as i128 * 1000);
    }
    sums.into_iter()
        .map(|(k, v)| {
            let memory = k.contains("memory");
            (k, quantity::format(v, memory))
        })
        .collect()
}

/// A namespace write the proxy must decide on.
#[derive(Debug, PartialEq, Eq)]
pub struct NamespaceWrite {
    /// The namespace.
    pub namespace: String,
    /// The annotation's new value (`None`: removed).
    pub project_id: Option<String>,
    /// A create (else an update or patch of an existing namespace).
    pub create: bool,
}

/// Find a namespace write that sets or removes the project annotation:
/// `POST /api/v1/namespaces`, or `PUT`/`PATCH /api/v1/namespaces/{name}`
/// with a JSON body (merge, strategic merge or JSON patch).
pub fn inspect(method: &Method, path: &str, body: &[u8]) -> Option<NamespaceWrite> {
    let path = path.split('?').next().unwrap_or_default();
    let rest = path.strip_prefix("/api/v1/namespaces")?;
    let v: Value = serde_json::from_slice(body).ok()?;
    let from_object = |v: &Value| -> Option<Option<String>> {
        let annotations = v.pointer("/metadata/annotations")?.as_object()?;
        let value = annotations.get(PROJECT_ANNOTATION)?;
        Some(value.as_str().map(str::to_owned))
    };
    if rest.is_empty() && method == Method::POST {
        let namespace = v.pointer("/metadata/name")?.as_str()?.to_owned();
        return Some(NamespaceWrite {
            namespace,
            project_id: from_object(&v)?,
            create: true,
        });
    }
    let name = rest.strip_prefix('/')?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let project_id = match (method.as_str(), &v) {
        ("PATCH", Value::Array(ops)) => ops.iter().rev().find_map(|op| {
            let p = op["path"].as_str()?;
            (p == "/metadata/annotations/drover.io~1project-id" || p == "/metadata/annotations")
                .then(|| match op["op"].as_str() {
                    Some("remove") if p.ends_with("project-id") => None,
                    _ if p == "/metadata/annotations" => {
                        op["value"][PROJECT_ANNOTATION].as_str().map(str::to_owned)
                    }
                    _ => op["value"].as_str().map(str::to_owned),
                })
        })?,
        ("PUT", v) => from_object(v).unwrap_or(None),
        ("PATCH", v) => from_object(v)?,
        _ => return None,
    };
    Some(NamespaceWrite {
        namespace: name.to_owned(),
        project_id,
        create: false,
    })
}

/// What the proxy decided about a namespace write.
#[derive(Debug)]
pub struct Decision {
    /// Send it as the agent (a create in a project the caller may use).
    pub as_agent: bool,
    /// The record to write once the cluster accepted the write, and the
    /// record as it was when the write was decided.
    pub change: Option<(Option<String>, Option<KeyValue>)>,
}

/// Decide a namespace write through the proxy. Writes nothing; see
/// [`record_write`] for what follows the cluster's answer. `usage` is what
/// a moved namespace uses now, which must fit in the target project's
/// quota.
pub async fn authorize(
    store: &Store,
    snapshot: &Snapshot,
    user: &UserInfo,
    cluster: &str,
    write: &NamespaceWrite,
    usage: Option<&api::ResourceList>,
) -> Result<Decision, ApiError> {
    let target = match &write.project_id {
        None => None,
        Some(id) => {
            let Some((c, p)) = id.split_once(':') else {
                return Err(ApiError::bad_request(format!(
                    "{PROJECT_ANNOTATION} must be <cluster>:<project>, not {id:?}"
                )));
            };
            if c != cluster {
                return Err(ApiError::bad_request(format!(
                    "{PROJECT_ANNOTATION} names cluster {c:?}, but this is cluster {cluster:?}"
                )));
            }
            Some(p.to_owned())
        }
    };
    let projects = snapshot.projects_of(cluster);
    let current = records(store, cluster).await?;
    let before = current.get(&write.namespace);
    if !write.create && before.map(|(r, _)| r.project.as_str()) == target.as_deref() {
        return Ok(Decision {
            as_agent: false,
            change: None,
        });
    }
    if let Some(p) = &target {
        let Some(spec) = projects.get(p) else {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!(
                    "projects.{} {p:?} not found in cluster {cluster:?}",
                    api::GROUP
                ),
            ));
        };
        let allowed = if write.create {
            snapshot.may_use_project(user, cluster, p)
        } else {
            snapshot.owns_cluster(user, cluster)
        };
        if !allowed {
            return Err(ApiError::forbidden_because(format!(
                "user {:?} may not {} namespace {:?} {} project {p}",
                user.name,
                if write.create { "create" } else { "move" },
                write.namespace,
                if write.create { "in" } else { "to" },
            )));
        }
        let others: Vec<&str> = current
            .iter()
            .filter(|(ns, (r, _))| r.project == *p && **ns != write.namespace)
            .map(|(ns, _)| ns.as_str())
            .collect();
        if let Some(used) = usage {
            check_usage_fits(p, spec, &write.namespace, &others, used)?;
        }
        let mut all = others.clone();
        all.push(&write.namespace);
        check_quota(p, spec, &all)?;
    } else if !snapshot.owns_cluster(user, cluster) {
        return Err(ApiError::forbidden_because(format!(
            "user {:?} may not take namespace {:?} out of its project",
            user.name, write.namespace
        )));
    }
    Ok(Decision {
        as_agent: write.create && target.is_some(),
        change: Some((target, before.map(|(_, kv)| kv.clone()))),
    })
}

/// After the cluster accepted a namespace write (its answer: the namespace
/// as stored), record the namespace's project for the UID the cluster gave
/// it. The record must still be as it was when the write was decided —
/// except that a create made a new namespace, whose record replaces any
/// left by an earlier one of that name.
pub async fn record_write(
    store: &Store,
    cluster: &str,
    write: &NamespaceWrite,
    decision: &Decision,
    answer: &Value,
) -> Result<(), ApiError> {
    let Some((project, before)) = &decision.change else {
        return Ok(());
    };
    let uid = answer
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty());
    let Some(uid) = uid else {
        return Err(ApiError::new(
            502,
            "BadGateway",
            "the cluster's answer carries no namespace UID",
        ));
    };
    let record = project.as_ref().map(|p| Record {
        project: p.clone(),
        uid: Some(uid.to_owned()),
    });
    if !write.create {
        return set_record(
            store,
            cluster,
            &write.namespace,
            before.as_ref(),
            record.as_ref(),
            None,
        )
        .await;
    }
    // The cluster made a new namespace: whatever is recorded for its name
    // is about an earlier one, and gives way, however often it changes.
    let mut last = None;
    for _ in 0..5 {
        let current = store
            .get(&record_key(cluster, &write.namespace))
            .await
            .map_err(unavailable)?;
        match set_record(
            store,
            cluster,
            &write.namespace,
            current.as_ref(),
            record.as_ref(),
            None,
        )
        .await
        {
            Err(e) if e.code == 409 => last = Some(e),
            done => return done,
        }
    }
    Err(last.expect("five conflicts"))
}

/// The Default and System projects of a cluster, by their label.
pub fn system_projects(store_projects: &[(String, Value)]) -> (Option<String>, Option<String>) {
    let find = |which: &str| {
        store_projects
            .iter()
            .find(|(_, p)| {
                p.pointer("/metadata/labels/drover.io~1system-project") == Some(&Value::from(which))
            })
            .map(|(name, _)| name.clone())
    };
    (find("default"), find("system"))
}

/// The cluster's Project objects: (name, object).
pub async fn project_objects(store: &Store, cluster: &str) -> Vec<(String, Value)> {
    let Ok(page) = store
        .list(&ListOptions {
            prefix: keys::prefix(api::GROUP, "projects", Some(cluster)),
            ..Default::default()
        })
        .await
    else {
        return Vec::new();
    };
    page.items
        .into_iter()
        .filter_map(|kv| {
            let v: Value = serde_json::from_slice(&kv.value).ok()?;
            Some((v.pointer("/metadata/name")?.as_str()?.to_owned(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_project_annotation_writes() {
        let body =
            json!({"metadata": {"name": "ns1", "annotations": {PROJECT_ANNOTATION: "c-1:p-1"}}});
        assert_eq!(
            inspect(
                &Method::POST,
                "/api/v1/namespaces?fieldManager=x",
                body.to_string().as_bytes()
            ),
            Some(NamespaceWrite {
                namespace: "ns1".into(),
                project_id: Some("c-1:p-1".into()),
                create: true
            })
        );
        let patch = json!({"metadata": {"annotations": {PROJECT_ANNOTATION: "c-1:p-2"}}});
        assert_eq!(
            inspect(
                &Method::PATCH,
                "/api/v1/namespaces/ns1",
                patch.to_string().as_bytes()
            )
            .unwrap()
            .project_id,
            Some("c-1:p-2".into())
        );
        let removal = json!({"metadata": {"annotations": {PROJECT_ANNOTATION: null}}});
        assert_eq!(
            inspect(
                &Method::PATCH,
                "/api/v1/namespaces/ns1",
                removal.to_string().as_bytes()
            )
            .unwrap()
            .project_id,
            None
        );
        let jp = json!([{"op": "replace", "path": "/metadata/annotations/drover.io~1project-id", "value": "c-1:p-3"}]);
        assert_eq!(
            inspect(
                &Method::PATCH,
                "/api/v1/namespaces/ns1",
                jp.to_string().as_bytes()
            )
            .unwrap()
            .project_id,
            Some("c-1:p-3".into())
        );
        let other = json!({"metadata": {"labels": {"a": "b"}}});
        assert_eq!(
            inspect(
                &Method::PATCH,
                "/api/v1/namespaces/ns1",
                other.to_string().as_bytes()
            ),
            None
        );
        assert_eq!(
            inspect(&Method::POST, "/api/v1/namespaces/ns1/pods", b"{}"),
            None
        );
    }

    #[test]
    fn quota_refusal_says_by_how_much() {
        let spec: api::ProjectSpec = serde_json::from_value(json!({
            "resourceQuota": {"limit": {"pods": "10", "limits.memory": "4Gi"}},
            "namespaceDefaultResourceQuota": {"limit": {"pods": "4", "limits.memory": "1Gi"}},
        }))
        .unwrap();
        assert!(check_quota("p", &spec, &["a", "b"]).is_ok());
        let e = check_quota("p", &spec, &["a", "b", "c"]).unwrap_err();
        assert!(e.to_string().contains("pods limit of 10 by 2"), "{e}");
        let mut spec = spec;
        spec.namespace_resource_quotas.insert(
            "a".into(),
            serde_json::from_value(json!({"limit": {"pods": "1"}})).unwrap(),
        );
        assert!(check_quota("p", &spec, &["a", "b", "c"]).is_ok());
        let used: api::ResourceList = [("pods".to_owned(), "5".to_owned())].into();
        let e = check_usage_fits("p", &spec, "c", &["a", "b"], &used).unwrap_err();
        assert!(
            e.to_string()
                .contains("pods (uses 5, its share would be 4)"),
            "{e}"
        );
        let used: api::ResourceList = [("pods".to_owned(), "2".to_owned())].into();
        assert!(check_usage_fits("p", &spec, "c", &["a", "b"], &used).is_ok());
        let used: api::ResourceList = [("pods".to_owned(), "6".to_owned())].into();
        let e = check_usage_fits("p", &spec, "c", &["a", "b"], &used).unwrap_err();
        assert!(e.to_string().contains("pods (uses 6, 5 left of 10)"), "{e}");
    }
}
