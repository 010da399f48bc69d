//! The replicas of the server, and how each knows the others.
//!
//! Each replica registers itself under `/drover/replicas/{id}`: the URL
//! other replicas reach it at (its peer listener), and when it last renewed
//! the record, which it does every [`RENEW`]. A record not renewed for
//! [`TTL`] is a replica gone (judged by the wall clock: replicas need
//! synchronised clocks, as PostgreSQL's own replicas do). A draining
//! replica says so in its record and is no longer chosen for anything.
//!
//! A replica acts on its leases only while its own last renewal is younger
//! than [`ACT_FOR`] (by its monotonic clock), which is shorter than
//! [`TTL`]: a replica that was frozen, or cut off from the datastore, stops
//! before any other may take over from it.
//!
//! [`Members`] is the view every other part uses, pushed on a watch channel
//! whenever who is alive changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use drover_core::meta;
use drover_store::{Mirror, Op, Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often a replica renews its record.
pub const RENEW: Duration = Duration::from_secs(2);
/// A record not renewed for this long is a replica gone.
pub const TTL: Duration = Duration::from_secs(8);
/// How long after its last successful renewal a replica still acts on its
/// leases: less than [`TTL`], so that it has stopped before any other
/// replica may take them over.
pub const ACT_FOR: Duration = Duration::from_secs(6);
/// Where the records live.
pub const PREFIX: &str = "/drover/replicas/";

/// A replica as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRecord {
    /// Its id (unique per process start).
    pub id: String,
    /// Where other replicas reach it (`https://host:port`, mutual TLS).
    pub peer_url: String,
    /// Drover's version.
    pub version: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// When it last renewed this record (RFC 3339, microseconds).
    pub renewed: String,
    /// It is shutting down: nothing new is given to it.
    #[serde(default)]
    pub draining: bool,
}

impl ReplicaRecord {
    /// Whether it has renewed its record within [`TTL`] of `now`.
    pub fn alive_at(&self, now: SystemTime) -> bool {
        meta::parse_rfc3339(&self.renewed).is_some_and(|t| t + TTL > now)
    }
}

/// The key of a replica's record.
pub fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

fn parse(bytes: &[u8]) -> Option<ReplicaRecord> {
    serde_json::from_slice(bytes).ok()
}

/// Who is there, as of one moment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Members {
    /// Every record, live or not, by id.
    pub records: BTreeMap<String, ReplicaRecord>,
    /// The ids of the live replicas.
    pub live: BTreeSet<String>,
    /// The live replicas that are not draining, in id order: those work is
    /// given to.
    pub serving: Vec<String>,
}

impl Members {
    fn at(records: BTreeMap<String, ReplicaRecord>, now: SystemTime) -> Self {
        let live: BTreeSet<String> = records
            .values()
            .filter(|r| r.alive_at(now))
            .map(|r| r.id.clone())
            .collect();
        let serving = records
            .values()
            .filter(|r| live.contains(&r.id) && !r.draining)
            .map(|r| r.id.clone())
            .collect();
        Self {
            records,
            live,
            serving,
        }
    }

    /// Whether replica `id` is alive.
    pub fn is_live(&self, id: &str) -> bool {
        self.live.contains(id)
    }

    /// Where replica `id` is reached, if it is alive.
    pub fn peer_url(&self, id: &str) -> Option<&str> {
        self.is_live(id)
            .then(|| self.records.get(id).map(|r| r.peer_url.as_str()))
            .flatten()
    }
}

/// This replica's membership: its record, renewed, and the view of all.
#[derive(Debug)]
pub struct Registry {
    store: Store,
    me: Mutex<ReplicaRecord>,
    mirror: Arc<Mirror<ReplicaRecord>>,
    members: watch::Sender<Arc<Members>>,
    /// When this replica last renewed its record (monotonic).
    renewed_at: Mutex<Option<Instant>>,
    draining: AtomicBool,
    _follow: tokio::task::JoinHandle<()>,
}

impl Registry {
    /// Register this replica (`id`, reached at `peer_url`) and start
    /// following the others.
    pub async fn join(
        store: &Store,
        id: String,
        peer_url: String,
    ) -> Result<Arc<Self>, StoreError> {
        let now = meta::rfc3339_micro(SystemTime::now());
        let me = ReplicaRecord {
            id,
            peer_url,
            version: drover_core::VERSION.to_owned(),
            started: now.clone(),
            renewed: now,
            draining: false,
        };
        let written = Instant::now();
        store
            .txn(&[Op::create(
                key(&me.id),
                serde_json::to_vec(&me).expect("plain data"),
            )])
            .await?;
        let (mirror, follow) = Mirror::spawn(store, PREFIX, parse);
        let registry = Arc::new(Self {
            store: store.clone(),
            me: Mutex::new(me),
            mirror,
            members: watch::channel(Arc::default()).0,
            renewed_at: Mutex::new(Some(written)),
            draining: AtomicBool::new(false),
            _follow: follow,
        });
        registry.mirror.ready(Duration::from_secs(5)).await;
        registry.publish();
        Ok(registry)
    }

    /// This replica's id.
    pub fn id(&self) -> String {
        self.me.lock().unwrap_or_else(|e| e.into_inner()).id.clone()
    }

    /// The current view.
    pub fn members(&self) -> Arc<Members> {
        self.members.borrow().clone()
    }

    /// The view, pushed on every change of who is alive or serving.
    pub fn watch(&self) -> watch::Receiver<Arc<Members>> {
        self.members.subscribe()
    }

    /// Whether this replica may act on its leases now: its last renewal
    /// is younger than [`ACT_FOR`], so no other replica can have taken
    /// them over.
    pub fn may_act(&self) -> bool {
        self.renewed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < ACT_FOR)
    }

    /// If replica `id` is gone by its record as this replica sees it now:
    /// that record's revision (`None`: no record), for a condition that it
    /// has not renewed since. `None` if it is alive.
    pub fn gone_record(&self, id: &str) -> Option<Option<drover_store::Revision>> {
        match self.mirror.get(&key(id)) {
            None => Some(None),
            Some((record, revision)) => {
                (!record.alive_at(SystemTime::now())).then_some(Some(revision))
            }
        }
    }

    /// Whether this replica is shutting down.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Work out the view from the mirror and the clock; publish it if it
    /// changed.
    fn publish(&self) {
        let records = self
            .mirror
            .items()
            .into_iter()
            .map(|(_, r, _)| (r.id.clone(), r))
            .collect();
        let members = Members::at(records, SystemTime::now());
        self.members.send_if_modified(|current| {
            let changed = (current.live != members.live) || (current.serving != members.serving);
            // Addresses and renewals are read from the latest records.
            *current = Arc::new(members);
            changed
        });
    }

    /// Write this replica's record again (renewed now).
    async fn renew(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let record = {
            let mut me = self.me.lock().unwrap_or_else(|e| e.into_inner());
            me.renewed = meta::rfc3339_micro(SystemTime::now());
            me.draining = self.draining();
            me.clone()
        };
        let bytes = serde_json::to_vec(&record).expect("plain data");
        let key = key(&record.id);
        let op = match self.store.get(&key).await? {
            Some(kv) => Op::update(key, bytes, kv.mod_revision),
            // Removed while this replica was away (swept as dead): again.
            None => Op::create(key, bytes),
        };
        self.store.txn(&[op]).await?;
        *self.renewed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
        Ok(())
    }

    /// Renew every [`RENEW`], and publish the view on every change of the
    /// records and every half second (liveness changes with time), until
    /// `stop`.
    pub fn spawn(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut renew = tokio::time::interval(RENEW);
            renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut changes = me.mirror.changes();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = renew.tick() => {
                        if let Err(e) = me.renew().await {
                            if matches!(e, StoreError::Closed) {
                                return;
                            }
                            tracing::warn!(error = %e, "cannot renew this replica's record");
                        }
                    }
                    _ = tick.tick() => me.publish(),
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        me.publish();
                    }
                }
            }
        })
    }

    /// Say this replica is draining: nothing new is given to it.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        if let Err(e) = self.renew().await {
            tracing::warn!(error = %e, "cannot mark this replica draining");
        }
    }

    /// Remove this replica's record: it is gone at once for the others.
    pub async fn leave(&self) {
        let id = self.id();
        if let Ok(Some(kv)) = self.store.get(&key(&id)).await {
            let _ = self.store.txn(&[Op::delete(kv.key, kv.mod_revision)]).await;
        }
    }
}

/// Rendezvous (highest random weight) hashing: the replica of `serving`
/// that `key` is given to. Every replica works out the same answer from the
/// same view; a replica joining or leaving moves only the keys it wins or
/// held.
pub fn owner<'a>(key: &str, serving: &'a [String]) -> Option<&'a str> {
    use sha2::{Digest, Sha256};
    serving
        .iter()
        .max_by_key(|replica| {
            let mut h = Sha256::new();
            h.update(key.as_bytes());
            h.update([0]);
            h.update(replica.as_bytes());
            let d = h.finalize();
            (
                u64::from_be_bytes(d[..8].try_into().expect("8 bytes")),
                replica.as_str(),
            )
        })
        .map(String::as_str)
}

/// A replica id: the host's name and a random suffix, new at every start.
pub fn new_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(40)
                .collect::<String>()
                .to_ascii_lowercase()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "drover".to_owned());
    format!("{host}-{}", drover_core::names::random_suffix(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, age: Duration, draining: bool) -> ReplicaRecord {
        ReplicaRecord {
            id: id.into(),
            peer_url: format!("https://{id}"),
            version: "x".into(),
            started: meta::rfc3339(SystemTime::now()),
            renewed: meta::rfc3339_micro(SystemTime::now() - age),
            draining,
        }
    }

    #[test]
    fn members_are_live_until_their_record_is_ttl_old() {
        let records = [
            record("a", Duration::from_secs(1), false),
            record("b", Duration::from_secs(11), false),
            record("c", Duration::from_secs(1), true),
        ]
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
        let m = Members::at(records, SystemTime::now());
        assert_eq!(m.live, ["a", "c"].map(String::from).into());
        assert_eq!(m.serving, vec!["a"]);
        assert_eq!(m.peer_url("a"), Some("https://a"));
        assert_eq!(m.peer_url("b"), None);
    }

    #[test]
    fn rendezvous_moves_only_what_it_must() {
        let three: Vec<String> = ["r1", "r2", "r3"].map(String::from).into();
        let four: Vec<String> = ["r1", "r2", "r3", "r4"].map(String::from).into();
        let keys: Vec<String> = (0..3000).map(|i| format!("c-{i}")).collect();
        let mut moved = 0;
        let mut share = BTreeMap::<&str, usize>::new();
        for k in &keys {
            let before = owner(k, &three).unwrap();
            let after = owner(k, &four).unwrap();
            *share.entry(before).or_default() += 1;
            if before != after {
                moved += 1;
                assert_eq!(after, "r4", "a key moved between two old replicas");
            }
        }
        // A quarter moves to the new replica; the rest stay.
        assert!((600..900).contains(&moved), "{moved}");
        // The three share evenly.
        assert!(share.values().all(|n| (850..1150).contains(n)), "{share:?}");
        assert_eq!(owner("x", &[]), None);
    }
}
