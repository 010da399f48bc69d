//! StatefulSets and DaemonSets, as kube's controllers run them:
//!
//! - a StatefulSet makes pods `NAME-0 … NAME-(N-1)` in order (with
//!   `OrderedReady`, the next only once the one before is Running and
//!   Ready), removes the highest first, replaces pods of an older template
//!   from the highest down, and makes a PersistentVolumeClaim
//!   `CLAIM-NAME-i` per volume claim template (Bound at once, as a dynamic
//!   provisioner would). Pods carry `statefulset.kubernetes.io/pod-name`,
//!   `apps.kubernetes.io/pod-index` and `controller-revision-hash`.
//! - a DaemonSet makes one pod per node, pinned by required node affinity
//!   on `metadata.name`, with the tolerations kube adds, and replaces
//!   pods of an older template.
//!
//! Both report the status fields `kubectl rollout status` reads, and keep
//! a ControllerRevision per template for `kubectl rollout history|undo`.

use serde_json::{json, Value};

use drover_store::{Store, StoreError};

use crate::workloads::{
    controller_uid, create_if_absent, create_pod, delete_if_present, delete_pod, i, list,
    pod_from_template, ready, s, template_hash, write_if_changed, Created,
};

const STATEFULSETS: &str = "/registry/apps/statefulsets/";
const DAEMONSETS: &str = "/registry/apps/daemonsets/";
const PODS: &str = "/registry/core/pods/";
const NODES: &str = "/registry/core/nodes/";
const CLAIMS: &str = "/registry/core/persistentvolumeclaims/";
const REVISIONS: &str = "/registry/apps/controllerrevisions/";

/// One pass over every StatefulSet and DaemonSet.
pub(crate) async fn reconcile(
    store: &Store,
    open: &std::collections::HashSet<String>,
) -> Result<(), StoreError> {
    let pods = list(store, PODS).await?;
    let history = list(store, REVISIONS).await?;
    let statefulsets = list(store, STATEFULSETS).await?;
    for (key, rev, sts) in &statefulsets {
        let accepts = open.contains(s(sts, "/metadata/namespace"))
            && sts.pointer("/metadata/deletionTimestamp").is_none();
        if accepts {
            revisions(store, sts, "StatefulSet", &history).await?;
        }
        statefulset(store, key, *rev, sts, accepts, &pods).await?;
    }
    let nodes = list(store, NODES).await?;
    let daemonsets = list(store, DAEMONSETS).await?;
    for (key, rev, ds) in &daemonsets {
        let accepts = open.contains(s(ds, "/metadata/namespace"))
            && ds.pointer("/metadata/deletionTimestamp").is_none();
        if accepts {
            revisions(store, ds, "DaemonSet", &history).await?;
        }
        daemonset(store, key, *rev, ds, accepts, &pods, &nodes).await?;
    }
    // Revisions whose owner is gone go with it.
    let owners: std::collections::HashSet<&str> = statefulsets
        .iter()
        .chain(daemonsets.iter())
        .map(|(_, _, o)| s(o, "/metadata/uid"))
        .collect();
    for (key, _, r) in &history {
        let ours = r
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| refs.iter().find(|o| o["controller"] == true))
            .is_some_and(|o| matches!(o["kind"].as_str(), Some("StatefulSet" | "DaemonSet")));
        if ours && controller_uid(r).is_some_and(|u| !owners.contains(u)) {
            delete_if_present(store, key).await?;
        }
    }
    Ok(())
}

fn owned_by<'a>(pods: &'a [(String, i64, Value)], owner: &Value) -> Vec<&'a (String, i64, Value)> {
    let uid = s(owner, "/metadata/uid");
    pods.iter()
        .filter(|(_, _, p)| controller_uid(p) == Some(uid))
        .collect()
}

/// Keep a ControllerRevision for `owner`'s current template (what `kubectl
/// rollout history|undo` read for StatefulSets and DaemonSets): made with
/// the next revision number, or renumbered when an old template comes back,
/// and at most `revisionHistoryLimit` others kept.
async fn revisions(
    store: &Store,
    owner: &Value,
    kind: &str,
    revisions: &[(String, i64, Value)],
) -> Result<(), StoreError> {
    let ns = s(owner, "/metadata/namespace");
    let name = revision_name(owner);
    let uid = s(owner, "/metadata/uid");
    let mut mine: Vec<&(String, i64, Value)> = revisions
        .iter()
        .filter(|(_, _, r)| controller_uid(r) == Some(uid))
        .collect();
    mine.sort_by_key(|(_, _, r)| i(r, "/revision"));
    let max_other = mine
        .iter()
        .filter(|(_, _, r)| s(r, "/metadata/name") != name)
        .map(|(_, _, r)| i(r, "/revision"))
        .max()
        .unwrap_or(0);
    match mine.iter().find(|(_, _, r)| s(r, "/metadata/name") == name) {
        Some((key, rev, r)) => {
            if i(r, "/revision") <= max_other {
                let mut new = r.clone();
                new["revision"] = json!(max_other + 1);
                write_if_changed(store, key, *rev, r, &new).await?;
            }
        }
        None => {
            let mut template = owner
                .pointer("/spec/template")
                .cloned()
                .unwrap_or_else(|| json!({}));
            template["$patch"] = json!("replace");
            let mut labels = owner
                .pointer("/spec/selector/matchLabels")
                .cloned()
                .unwrap_or_else(|| json!({}));
            labels["controller-revision-hash"] = json!(name.rsplit('-').next().unwrap_or_default());
            let revision = json!({
                "apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": crate::workloads::new_meta(&name, ns, labels, crate::workloads::owner_ref(kind, "apps/v1", owner)),
                "data": {"spec": {"template": template}},
                "revision": max_other + 1,
            });
            let key = drover_core::keys::object("apps", "controllerrevisions", Some(ns), &name);
            create_if_absent(store, &key, &revision).await?;
        }
    }
    let limit = owner
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10)
        .max(0) as usize;
    let old: Vec<&&(String, i64, Value)> = mine
        .iter()
        .filter(|(_, _, r)| s(r, "/metadata/name") != name)
        .collect();
    for (key, _, _) in old.iter().take(old.len().saturating_sub(limit)) {
        delete_if_present(store, key).await?;
    }
    Ok(())
}

/// The revision name kube gives a template: `NAME-HASH`.
fn revision_name(owner: &Value) -> String {
    let hash = template_hash(owner.pointer("/spec/template").unwrap_or(&Value::Null));
    format!("{}-{hash}", s(owner, "/metadata/name"))
}

async fn statefulset(
    store: &Store,
    key: &str,
    rev: i64,
    sts: &Value,
    accepts: bool,
    pods: &[(String, i64, Value)],
) -> Result<(), StoreError> {
    let name = s(sts, "/metadata/name").to_owned();
    let want = sts
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let parallel = s(sts, "/spec/podManagementPolicy") == "Parallel";
    let update_revision = revision_name(sts);
    let ordinal = |p: &Value| {
        s(p, "/metadata/name")
            .strip_prefix(&format!("{name}-"))
            .and_then(|n| n.parse::<i64>().ok())
    };
    let owned = owned_by(pods, sts);
    let live: Vec<&(String, i64, Value)> = owned
        .iter()
        .copied()
        .filter(|(_, _, p)| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    if accepts {
        // Create the missing ordinals in order.
        for n in 0..want {
            if live.iter().any(|(_, _, p)| ordinal(p) == Some(n)) {
                continue;
            }
            let earlier_ready = (0..n).all(|m| {
                live.iter()
                    .any(|(_, _, p)| ordinal(p) == Some(m) && ready(p))
            });
            if !parallel && !earlier_ready {
                break;
            }
            let pod_name = format!("{name}-{n}");
            claims(store, sts, n).await?;
            let mut pod = pod_from_template(sts, "StatefulSet", &pod_name);
            let labels = &mut pod["metadata"]["labels"];
            labels["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
            labels["apps.kubernetes.io/pod-index"] = json!(n.to_string());
            labels["controller-revision-hash"] = json!(update_revision);
            pod["spec"]["hostname"] = json!(pod_name);
            if let Some(svc) = sts.pointer("/spec/serviceName").and_then(Value::as_str) {
                pod["spec"]["subdomain"] = json!(svc);
            }
            // Each claim template becomes a volume of the pod.
            for t in sts
                .pointer("/spec/volumeClaimTemplates")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let claim = s(t, "/metadata/name");
                let volume = json!({"name": claim, "persistentVolumeClaim": {"claimName": format!("{claim}-{pod_name}")}});
                match pod["spec"]["volumes"].as_array_mut() {
                    Some(v) => v.push(volume),
                    None => pod["spec"]["volumes"] = json!([volume]),
                }
            }
            let message = format!("create Pod {pod_name} in StatefulSet {name} successful");
            match create_pod(store, sts, pod, "statefulset-controller", Some(message)).await? {
                Created::Yes(_) | Created::Taken => {}
                Created::Refused => break,
            }
            if !parallel {
                break;
            }
        }
        // Scale down from the highest ordinal; replace pods of an older
        // template from the highest down, one at a time.
        let mut by_ordinal: Vec<&(String, i64, Value)> = live.clone();
        by_ordinal.sort_by_key(|(_, _, p)| std::cmp::Reverse(ordinal(p).unwrap_or(i64::MAX)));
        let partition = i(sts, "/spec/updateStrategy/rollingUpdate/partition");
        let rolling = s(sts, "/spec/updateStrategy/type") != "OnDelete";
        for (k, _, p) in &by_ordinal {
            let n = ordinal(p).unwrap_or(i64::MAX);
            let outdated = rolling
                && n >= partition
                && s(p, "/metadata/labels/controller-revision-hash") != update_revision;
            if n >= want || outdated {
                delete_pod(store, sts, k, p, "statefulset-controller").await?;
                if !parallel {
                    break;
                }
            }
        }
    }
    let in_range: Vec<&Value> = live
        .iter()
        .map(|(_, _, p)| p)
        .filter(|p| ordinal(p).is_some_and(|n| n < want))
        .collect();
    let ready_count = in_range.iter().filter(|p| ready(p)).count();
    let updated = in_range
        .iter()
        .filter(|p| s(p, "/metadata/labels/controller-revision-hash") == update_revision)
        .count();
    let current_revision = if updated == in_range.len() {
        update_revision.clone()
    } else {
        sts.pointer("/status/currentRevision")
            .and_then(Value::as_str)
            .unwrap_or(&update_revision)
            .to_owned()
    };
    let mut new = sts.clone();
    new["status"] = json!({
        "observedGeneration": i(sts, "/metadata/generation"), "replicas": in_range.len(),
        "readyReplicas": ready_count, "currentReplicas": updated, "updatedReplicas": updated,
        "availableReplicas": ready_count, "currentRevision": current_revision,
        "updateRevision": update_revision, "collisionCount": 0,
    });
    write_if_changed(store, key, rev, sts, &new).await
}

/// The claims of a StatefulSet's pod `n`, made if missing and Bound.
async fn claims(store: &Store, sts: &Value, n: i64) -> Result<(), StoreError> {
    let ns = s(sts, "/metadata/namespace");
    let name = s(sts, "/metadata/name");
    for t in sts
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let claim = format!("{}-{name}-{n}", s(t, "/metadata/name"));
        let key = drover_core::keys::object("", "persistentvolumeclaims", Some(ns), &claim);
        if store.get(&key).await?.is_some() {
            continue;
        }
        let mut labels = sts
            .pointer("/spec/selector/matchLabels")
            .cloned()
            .unwrap_or_else(|| json!({}));
        if let Some(l) = t.pointer("/metadata/labels").and_then(Value::as_object) {
            for (k, v) in l {
                labels[k] = v.clone();
            }
        }
        let spec = t.get("spec").cloned().unwrap_or_else(|| json!({}));
        create_if_absent(store, &key, &bound_claim(ns, &claim, labels, spec)).await?;
    }
    Ok(())
}

/// Bind the claims users made, as a dynamic provisioner of the default
/// storage class would.
pub(crate) async fn bind_claims(store: &Store) -> Result<(), StoreError> {
    for (key, rev, pvc) in list(store, CLAIMS).await? {
        if s(&pvc, "/status/phase") == "Bound"
            || pvc.pointer("/metadata/deletionTimestamp").is_some()
        {
            continue;
        }
        let bound = bound_claim(
            s(&pvc, "/metadata/namespace"),
            s(&pvc, "/metadata/name"),
            json!({}),
            pvc.get("spec").cloned().unwrap_or_else(|| json!({})),
        );
        let mut new = pvc.clone();
        new["spec"] = bound["spec"].clone();
        new["status"] = bound["status"].clone();
        for (k, v) in bound["metadata"]["annotations"]
            .as_object()
            .into_iter()
            .flatten()
        {
            new["metadata"]["annotations"][k] = v.clone();
        }
        write_if_changed(store, &key, rev, &pvc, &new).await?;
    }
    Ok(())
}

/// A claim as a dynamic provisioner leaves it: Bound to a volume of the
/// size asked for, on the default storage class.
pub(crate) fn bound_claim(ns: &str, name: &str, labels: Value, mut spec: Value) -> Value {
    if spec.get("storageClassName").is_none() {
        spec["storageClassName"] = json!("standard");
    }
    let uid = drover_core::meta::new_uid();
    spec["volumeName"] = json!(format!("pvc-{uid}"));
    spec["volumeMode"] = json!(spec["volumeMode"].as_str().unwrap_or("Filesystem"));
    let capacity = spec
        .pointer("/resources/requests/storage")
        .cloned()
        .unwrap_or_else(|| json!("1Gi"));
    let modes = spec
        .get("accessModes")
        .cloned()
        .unwrap_or_else(|| json!(["ReadWriteOnce"]));
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "creationTimestamp": drover_core::meta::now_rfc3339(),
            "labels": labels, "annotations": {"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"}},
        "spec": spec, "status": {"phase": "Bound", "accessModes": modes, "capacity": {"storage": capacity}}})
}

async fn daemonset(
    store: &Store,
    key: &str,
    rev: i64,
    ds: &Value,
    accepts: bool,
    pods: &[(String, i64, Value)],
    nodes: &[(String, i64, Value)],
) -> Result<(), StoreError> {
    let name = s(ds, "/metadata/name").to_owned();
    let update_revision = revision_name(ds);
    let hash = update_revision
        .rsplit('-')
        .next()
        .unwrap_or_default()
        .to_owned();
    let owned = owned_by(pods, ds);
    let live: Vec<&(String, i64, Value)> = owned
        .into_iter()
        .filter(|(_, _, p)| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    let node_of = |p: &Value| {
        p.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/values/0")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| p.pointer("/spec/nodeName").and_then(Value::as_str).map(str::to_owned))
    };
    let node_names: Vec<String> = nodes
        .iter()
        .map(|(_, _, n)| s(n, "/metadata/name").to_owned())
        .collect();
    if accepts {
        for node in &node_names {
            let here: Vec<&&(String, i64, Value)> = live
                .iter()
                .filter(|(_, _, p)| node_of(p).as_deref() == Some(node))
                .collect();
            let current = here
                .iter()
                .any(|(_, _, p)| s(p, "/metadata/labels/controller-revision-hash") == hash);
            // An outdated pod goes first; its replacement comes next pass.
            if let Some((k, _, p)) = here
                .iter()
                .find(|(_, _, p)| s(p, "/metadata/labels/controller-revision-hash") != hash)
            {
                if s(ds, "/spec/updateStrategy/type") != "OnDelete" {
                    delete_pod(store, ds, k, p, "daemonset-controller").await?;
                }
                continue;
            }
            if current {
                continue;
            }
            let pod_name = format!("{name}-{}", drover_core::names::random_suffix(5));
            let mut pod = pod_from_template(ds, "DaemonSet", &pod_name);
            pod["metadata"]["labels"]["controller-revision-hash"] = json!(hash);
            pod["metadata"]["labels"]["pod-template-generation"] =
                json!(i(ds, "/metadata/generation").to_string());
            pod["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}});
            let mut tolerations = pod["spec"]["tolerations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for (k, effect) in [
                ("node.kubernetes.io/not-ready", "NoExecute"),
                ("node.kubernetes.io/unreachable", "NoExecute"),
                ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                ("node.kubernetes.io/memory-pressure", "NoSchedule"),
                ("node.kubernetes.io/pid-pressure", "NoSchedule"),
                ("node.kubernetes.io/unschedulable", "NoSchedule"),
            ] {
                tolerations.push(json!({"key": k, "operator": "Exists", "effect": effect}));
            }
            pod["spec"]["tolerations"] = json!(tolerations);
            if let Created::Refused =
                create_pod(store, ds, pod, "daemonset-controller", None).await?
            {
                break;
            }
        }
        // Pods on nodes that are gone.
        for (k, _, p) in &live {
            if node_of(p).is_some_and(|n| !node_names.contains(&n)) {
                delete_pod(store, ds, k, p, "daemonset-controller").await?;
            }
        }
    }
    let scheduled: Vec<&Value> = live
        .iter()
        .map(|(_, _, p)| p)
        .filter(|p| node_of(p).is_some_and(|n| node_names.contains(&n)))
        .collect();
    let ready_count = scheduled.iter().filter(|p| ready(p)).count();
    let updated = scheduled
        .iter()
        .filter(|p| s(p, "/metadata/labels/controller-revision-hash") == hash)
        .count();
    let mut new = ds.clone();
    new["status"] = json!({
        "observedGeneration": i(ds, "/metadata/generation"),
        "desiredNumberScheduled": node_names.len(), "currentNumberScheduled": scheduled.len(),
        "numberReady": ready_count, "numberAvailable": ready_count, "updatedNumberScheduled": updated,
        "numberMisscheduled": 0,
    });
    if node_names.len() > ready_count {
        new["status"]["numberUnavailable"] = json!(node_names.len() - ready_count);
    }
    write_if_changed(store, key, rev, ds, &new).await
}
