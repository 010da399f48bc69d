//! Events, as the control plane and kubelets record them: each is written
//! in `core/v1` (what `kubectl get events` and `describe` read) and in
//! `events.k8s.io/v1` (what newer clients read); the same event about the
//! same object again only counts up; each is removed an hour after it was
//! last seen, as kube-apiserver's `--event-ttl` (renewed on each update)
//! does.

use std::time::{Duration, SystemTime};

use drover_core::meta;
use drover_store::{ListOptions, Store, StoreError};
use serde_json::{json, Value};
use sha2::Digest;

/// kube-apiserver's default `--event-ttl`.
const TTL: Duration = Duration::from_secs(3600);
/// How often expired events are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Who records an event: `deployment-controller`, `default-scheduler`, or
/// the kubelet of a node.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source<'a> {
    /// A control-plane component, by name.
    Controller(&'a str),
    /// The kubelet of this node.
    Kubelet(&'a str),
}

impl Source<'_> {
    fn component(&self) -> &str {
        match self {
            Source::Controller(c) => c,
            Source::Kubelet(_) => "kubelet",
        }
    }

    fn host(&self) -> Option<&str> {
        match self {
            Source::Controller(_) => None,
            Source::Kubelet(node) => Some(node),
        }
    }
}

/// One event about `object`: `Normal` unless `warning`.
#[derive(Debug)]
pub(crate) struct Event<'a> {
    pub(crate) source: Source<'a>,
    pub(crate) warning: bool,
    pub(crate) reason: &'a str,
    /// The events.k8s.io `action`, e.g. `Binding`.
    pub(crate) action: &'a str,
    pub(crate) message: String,
    /// For a container's events: `spec.containers{NAME}`.
    pub(crate) field_path: Option<String>,
}

/// Record `event` about `object` (any object with apiVersion, kind and
/// metadata). A failure to record is logged, never fatal: kube's recorder
/// drops events too.
pub(crate) async fn record(store: &Store, object: &Value, event: Event<'_>) {
    if let Err(e) = write(store, object, &event).await {
        tracing::debug!(error = %e, reason = event.reason, "event not recorded");
    }
}

async fn write(store: &Store, object: &Value, e: &Event<'_>) -> Result<(), StoreError> {
    let s = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let name = s("/metadata/name");
    // Cluster-scoped objects' events live in `default`, as kube's.
    let ns = Some(s("/metadata/namespace"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    let now = SystemTime::now();
    // The same event about the same object is one Event whose count grows,
    // as kube's event correlator keeps it: its name comes from what it says.
    let digest = sha2::Sha256::digest(
        format!(
            "{}\0{}\0{}\0{}\0{}",
            s("/metadata/uid"),
            e.reason,
            e.message,
            e.field_path.as_deref().unwrap_or_default(),
            e.source.component()
        )
        .as_bytes(),
    );
    let event_name = format!("{name}.{}", hex::encode(&digest[..8]));
    let mut involved = json!({
        "kind": s("/kind"), "namespace": s("/metadata/namespace"), "name": name,
        "uid": s("/metadata/uid"), "apiVersion": s("/apiVersion"),
        "resourceVersion": s("/metadata/resourceVersion"),
    });
    if let Some(path) = &e.field_path {
        involved["fieldPath"] = json!(path);
    }
    let ty = if e.warning { "Warning" } else { "Normal" };
    let instance = match e.source {
        Source::Controller(c) => format!("{c}-sim"),
        Source::Kubelet(node) => node.to_owned(),
    };
    let stamp = meta::rfc3339(now);
    let micro = meta::rfc3339_micro(now);
    let metadata = || json!({"name": event_name, "namespace": ns, "uid": meta::new_uid(), "creationTimestamp": stamp});
    let mut source = json!({"component": e.source.component()});
    if let Some(host) = e.source.host() {
        source["host"] = json!(host);
    }
    let core = json!({
        "apiVersion": "v1", "kind": "Event", "metadata": metadata(),
        "involvedObject": involved, "reason": e.reason, "message": e.message,
        "source": source, "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        "type": ty, "eventTime": null, "reportingComponent": e.source.component(),
        "reportingInstance": instance,
    });
    let mut newer = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": metadata(),
        "eventTime": micro, "reportingController": e.source.component(),
        "reportingInstance": instance, "action": e.action, "reason": e.reason,
        "regarding": involved, "note": e.message, "type": ty,
        "deprecatedSource": source, "deprecatedFirstTimestamp": stamp,
        "deprecatedLastTimestamp": stamp, "deprecatedCount": 1,
    });
    if e.action.is_empty() {
        newer["action"] = json!(e.reason);
    }
    let records = [
        (
            drover_core::keys::object("", "events", Some(&ns), &event_name),
            core.to_string(),
        ),
        (
            drover_core::keys::object("events.k8s.io", "events", Some(&ns), &event_name),
            newer.to_string(),
        ),
    ];
    match store.create_all(&records).await {
        Ok(_) => Ok(()),
        Err(StoreError::AlreadyExists(_)) => repeat(store, &records, &stamp, &micro).await,
        Err(e) => Err(e),
    }
}

/// An event seen again: its count and last time move on.
async fn repeat(
    store: &Store,
    records: &[(String, String); 2],
    stamp: &str,
    micro: &str,
) -> Result<(), StoreError> {
    for (key, _) in records {
        let Some(kv) = store.get(key).await? else {
            continue;
        };
        let mut ev: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        if ev["apiVersion"] == "v1" {
            ev["count"] = json!(ev["count"].as_i64().unwrap_or(1) + 1);
            ev["lastTimestamp"] = json!(stamp);
        } else {
            let count = ev
                .pointer("/series/count")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                + 1;
            ev["series"] = json!({"count": count, "lastObservedTime": micro});
            ev["deprecatedCount"] = json!(count);
            ev["deprecatedLastTimestamp"] = json!(stamp);
        }
        match store.update(key, ev.to_string(), kv.mod_revision).await {
            Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sweep expired events every minute until the task is aborted.
pub(crate) fn spawn_sweep(store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            match sweep(&store, SystemTime::now()).await {
                Err(StoreError::Closed) => return,
                Err(e) => tracing::debug!(error = %e, "event sweep failed"),
                Ok(_) => {}
            }
        }
    })
}

/// Remove the events (both groups) last seen more than the TTL before `now`.
pub(crate) async fn sweep(store: &Store, now: SystemTime) -> Result<usize, StoreError> {
    let mut removed = 0;
    for prefix in ["/registry/core/events/", "/registry/events.k8s.io/events/"] {
        let mut start_after = None;
        loop {
            let page = store
                .list(&ListOptions {
                    prefix: prefix.into(),
                    start_after: start_after.clone(),
                    limit: Some(500),
                    revision: None,
                })
                .await?;
            for kv in &page.items {
                let ev: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                // The TTL runs from the last time the event was seen.
                let seen = [
                    "/lastTimestamp",
                    "/deprecatedLastTimestamp",
                    "/series/lastObservedTime",
                    "/metadata/creationTimestamp",
                ]
                .iter()
                .filter_map(|p| ev.pointer(p).and_then(Value::as_str))
                .find_map(meta::parse_rfc3339);
                if seen.is_some_and(|c| now.duration_since(c).unwrap_or_default() > TTL) {
                    match store.delete(&kv.key, Some(kv.mod_revision)).await {
                        Ok(_) => removed += 1,
                        Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            start_after = page.items.last().map(|kv| kv.key.clone());
            if !page.more {
                break;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_event_is_written_in_both_groups_and_swept_after_its_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &format!("sqlite://{}/s.db", dir.path().display()),
            Default::default(),
        )
        .await
        .unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1"}});
        record(
            &store,
            &pod,
            Event {
                source: Source::Kubelet("n0"),
                warning: false,
                reason: "Started",
                action: "",
                message: "Started container web".into(),
                field_path: Some("spec.containers{web}".into()),
            },
        )
        .await;
        let list = |prefix: &'static str| {
            let store = store.clone();
            async move {
                store
                    .list(&ListOptions {
                        prefix: prefix.into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .items
            }
        };
        let core = list("/registry/core/events/shop/").await;
        let newer = list("/registry/events.k8s.io/events/shop/").await;
        assert_eq!((core.len(), newer.len()), (1, 1));
        let core: Value = serde_json::from_slice(&core[0].value).unwrap();
        assert_eq!(core["involvedObject"]["name"], "web-1");
        assert_eq!(core["source"]["host"], "n0");
        let newer: Value = serde_json::from_slice(&newer[0].value).unwrap();
        assert_eq!(newer["regarding"]["fieldPath"], "spec.containers{web}");
        assert_eq!(newer["note"], "Started container web");

        // The same again counts up instead of adding another.
        record(
            &store,
            &pod,
            Event {
                source: Source::Kubelet("n0"),
                warning: false,
                reason: "Started",
                action: "",
                message: "Started container web".into(),
                field_path: Some("spec.containers{web}".into()),
            },
        )
        .await;
        let again = list("/registry/core/events/shop/").await;
        assert_eq!(again.len(), 1);
        let again: Value = serde_json::from_slice(&again[0].value).unwrap();
        assert_eq!(again["count"], 2);

        assert_eq!(sweep(&store, SystemTime::now()).await.unwrap(), 0);
        let later = SystemTime::now() + TTL + Duration::from_secs(1);
        assert_eq!(sweep(&store, later).await.unwrap(), 2);
    }
}
