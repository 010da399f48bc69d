//! What runs once for the whole installation, on the leader (the replica
//! holding the `leader` lease), each level-based and idempotent so that a
//! new leader just carries on:
//!
//! - token expiry: every minute, delete expired Tokens with their hash
//!   records (an expired token is refused at authentication already; this
//!   keeps the list and the store clean);
//! - compaction: every 5 minutes, keep the last 10,000 revisions (never
//!   past what the log archive holds, when there is one);
//! - backups and the log archive ([`super::backups`]);
//! - provider users' groups, refreshed ([`super::groups`]);
//! - the orphan sweep: every minute, remove what something that is gone
//!   left behind — link records and leases of deleted clusters, namespace
//!   records of deleted clusters, name reservations of deleted clusters
//!   and projects, token
//!   hash records without their Token (and Tokens without theirs),
//!   registration records without their ClusterRegistrationToken, records
//!   of replicas gone for ten minutes.

use std::time::{Duration, SystemTime};

use drover_auth::token;
use drover_core::{api, keys};
use drover_store::{ListOptions, Op, Store, StoreError};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::lease::{self, Held};
use super::{Action, Ctx};
use crate::kinds::{management, namespaces, registration};
use crate::link::records as link_records;
use crate::replicas::{self, ReplicaRecord};

/// How often expired tokens are swept.
const TOKEN_SWEEP: Duration = Duration::from_secs(60);
/// How often the store is compacted, and how much history it keeps:
/// watchers further behind get 410 and list again, as with etcd.
const COMPACTION: Duration = Duration::from_secs(300);
const KEEP_REVISIONS: i64 = 10_000;
/// How often orphans are swept.
const ORPHAN_SWEEP: Duration = Duration::from_secs(60);
/// How long a replica's record stays after it is gone.
const FORGET_REPLICAS: Duration = Duration::from_secs(600);

/// Start the leader's controllers under `held`, until `stop`.
pub fn start(ctx: Ctx, held: Held, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(
        async move {
            let never = || std::future::pending::<()>();
            let tokens = super::run("token-expiry", stop.clone(), never, || async {
                sweep_expired_tokens(&ctx.store).await.map(|n| {
                    if n > 0 {
                        tracing::info!(deleted = n, "removed expired tokens");
                    }
                    Action::Requeue(TOKEN_SWEEP)
                })
            });
            let archiver = match super::backups::archiver(&ctx.store, &ctx.backups) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "cannot archive the log");
                    None
                }
            };
            // With an archive configured but not running, compaction
            // waits: what it would drop is not archived.
            let archived = match &archiver {
                Some(a) => Some(a.archived()),
                None if ctx.backups.log_archive.is_some() => {
                    Some(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(-1)))
                }
                None => None,
            };
            let compaction = super::run("compaction", stop.clone(), never, || async {
                super::backups::compact(&ctx.store, KEEP_REVISIONS, archived.as_ref())
                    .await
                    .map(|()| Action::Requeue(COMPACTION))
            });
            let log_archive = async {
                if let Some(archiver) = &archiver {
                    super::run("log-archive", stop.clone(), never, || {
                        super::backups::archive_step(archiver)
                    })
                    .await;
                }
            };
            let changes = backup_changes(&ctx.store, stop.clone());
            let backups = super::run(
                "backups",
                stop.clone(),
                || {
                    let changes = changes.clone();
                    async move { changes.notified().await }
                },
                || super::backups::reconcile(&ctx, &held, &ctx.backups),
            );
            let orphans = super::run("orphan-sweep", stop.clone(), never, || async {
                sweep_orphans(&ctx, &held).await.map(|n| {
                    if n > 0 {
                        tracing::info!(removed = n, "swept orphaned records");
                    }
                    Action::Requeue(ORPHAN_SWEEP)
                })
            });
            let groups = super::run("group-refresh", stop.clone(), never, || {
                super::groups::refresh_all(&ctx)
            });
            tokio::join!(tokens, compaction, orphans, log_archive, backups, groups);
        }
        .instrument(tracing::info_span!("leader")),
    )
}

/// Woken on every change to a Backup, until `stop`.
fn backup_changes(store: &Store, stop: CancellationToken) -> std::sync::Arc<tokio::sync::Notify> {
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    let (store, wake) = (store.clone(), notify.clone());
    tokio::spawn(async move {
        use futures::StreamExt;
        let prefix = drover_core::keys::prefix(api::GROUP, "backups", None);
        while !stop.is_cancelled() {
            let Ok(at) = store.revisions().await else {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            };
            let mut events = store.watch(&prefix, at.current);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    next = events.next() => match next {
                        Some(Ok(_)) => wake.notify_one(),
                        _ => break,
                    },
                }
            }
            wake.notify_one();
        }
    });
    notify
}

/// Delete every expired Token (and its record); returns how many.
pub(crate) async fn sweep_expired_tokens(store: &Store) -> Result<usize, StoreError> {
    let prefix = drover_core::keys::prefix(api::GROUP, "tokens", None);
    let page = store
        .list(&ListOptions {
            prefix,
            ..Default::default()
        })
        .await?;
    let mut deleted = 0;
    for kv in page.items {
        let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if !token::expired(obj.pointer("/status/expiresAt").and_then(Value::as_str)) {
            continue;
        }
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // The Token and its record go together, or not at all.
        let mut ops = vec![drover_store::Op::delete(kv.key.clone(), kv.mod_revision)];
        if let Some(record) = store.get(&token::record_key(name)).await? {
            ops.push(drover_store::Op::delete(record.key, record.mod_revision));
        }
        match store.txn(&ops).await {
            Ok(_) => deleted += 1,
            Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// The keys under a prefix, as of revision `at`.
async fn list(
    store: &Store,
    prefix: &str,
    at: drover_store::Revision,
) -> Result<Vec<drover_store::KeyValue>, StoreError> {
    Ok(store
        .list(&ListOptions {
            prefix: prefix.to_owned(),
            revision: Some(at),
            ..Default::default()
        })
        .await?
        .items)
}

/// The names of the objects of a kind (all namespaces), as of `at`.
async fn names(
    store: &Store,
    plural: &str,
    at: drover_store::Revision,
) -> Result<std::collections::BTreeSet<String>, StoreError> {
    Ok(list(store, &keys::prefix(api::GROUP, plural, None), at)
        .await?
        .into_iter()
        .filter_map(|kv| kv.key.rsplit('/').next().map(str::to_owned))
        .collect())
}

/// Remove what something that is gone left behind; returns how many
/// records went. Everything is read at one revision (a Token and its
/// record, made together, are never seen apart); each delete is
/// conditioned on the revision it was read at and on the leader's lease.
pub(crate) async fn sweep_orphans(ctx: &Ctx, held: &Held) -> Result<usize, StoreError> {
    let store = &ctx.store;
    let at = store.revisions().await?.current;
    let clusters = names(store, "clusters", at).await?;
    let projects = names(store, "projects", at).await?;
    let now = SystemTime::now();
    let mut gone = Vec::new();
    for kv in list(store, link_records::PREFIX, at).await? {
        let cluster = link_records::cluster_of(&kv.key);
        // Released records stay (their generation orders the next link);
        // so do those of dead holders (the cluster's controller reports
        // them). Only a deleted cluster's record goes.
        if !clusters.contains(cluster) {
            gone.push(kv);
        }
    }
    for kv in list(store, lease::PREFIX, at).await? {
        let name = kv.key.strip_prefix(lease::PREFIX).unwrap_or_default();
        if name
            .strip_prefix("clusters/")
            .is_some_and(|c| !clusters.contains(c))
        {
            gone.push(kv);
        }
    }
    for kv in list(store, namespaces::RECORDS, at).await? {
        let cluster = kv.key[namespaces::RECORDS.len()..]
            .split('/')
            .next()
            .unwrap_or_default();
        if !clusters.contains(cluster) {
            gone.push(kv);
        }
    }
    for kv in list(store, management::NAMESPACE_RESERVATIONS, at).await? {
        let name = kv.key.rsplit('/').next().unwrap_or_default();
        if !clusters.contains(name) && !projects.contains(name) {
            gone.push(kv);
        }
    }
    // Tokens and their hash records, each listed once: either without the
    // other goes.
    let name_of =
        |kv: &drover_store::KeyValue| kv.key.rsplit('/').next().unwrap_or_default().to_owned();
    let tokens = list(store, &keys::prefix(api::GROUP, "tokens", None), at).await?;
    let records = list(store, &token::record_key(""), at).await?;
    let token_names: std::collections::BTreeSet<String> = tokens.iter().map(name_of).collect();
    let record_names: std::collections::BTreeSet<String> = records.iter().map(name_of).collect();
    gone.extend(
        records
            .into_iter()
            .filter(|kv| !token_names.contains(&name_of(kv))),
    );
    gone.extend(
        tokens
            .into_iter()
            .filter(|kv| !record_names.contains(&name_of(kv))),
    );
    let registrations: Vec<String> = list(
        store,
        &keys::prefix(api::GROUP, "clusterregistrationtokens", None),
        at,
    )
    .await?
    .into_iter()
    .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
    .filter_map(|o| {
        o.pointer("/status/token")
            .and_then(Value::as_str)
            .map(crate::kinds::registration::record_key)
    })
    .collect();
    for kv in list(store, registration::RECORDS, at).await? {
        if !registrations.contains(&kv.key) {
            gone.push(kv);
        }
    }
    for kv in list(store, replicas::PREFIX, at).await? {
        let stale = serde_json::from_slice::<ReplicaRecord>(&kv.value)
            .map_or(true, |r| !r.alive_at(now - FORGET_REPLICAS));
        if stale {
            gone.push(kv);
        }
    }
    let mut removed = 0;
    for kv in gone {
        // Each on its own: one that changed meanwhile is left to the next
        // sweep; none survives the leader losing its lease.
        match store
            .txn(&[held.fence(), Op::delete(kv.key.clone(), kv.mod_revision)])
            .await
        {
            Ok(_) => removed += 1,
            // The lease changed hands: the new leader sweeps.
            Err(StoreError::Conflict { key, .. }) if key == lease::key(&held.name) => break,
            Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expired_tokens_are_removed_with_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &format!("sqlite://{}/s.db", dir.path().display()),
            Default::default(),
        )
        .await
        .unwrap();
        let live = token::mint(
            "admin",
            None,
            None,
            Some(Duration::from_secs(3600)),
            Duration::ZERO,
        );
        let mut old = token::mint(
            "admin",
            None,
            None,
            Some(Duration::from_secs(3600)),
            Duration::ZERO,
        );
        old.object["status"]["expiresAt"] = "2001-01-01T00:00:00Z".into();
        for t in [&live, &old] {
            store.create_all(&t.store_items()).await.unwrap();
        }
        assert_eq!(sweep_expired_tokens(&store).await.unwrap(), 1);
        assert!(store
            .get(&token::object_key(&old.name))
            .await
            .unwrap()
            .is_none());
        assert!(store
            .get(&token::record_key(&old.name))
            .await
            .unwrap()
            .is_none());
        assert!(store
            .get(&token::object_key(&live.name))
            .await
            .unwrap()
            .is_some());
        assert_eq!(sweep_expired_tokens(&store).await.unwrap(), 0, "idempotent");
    }
}
