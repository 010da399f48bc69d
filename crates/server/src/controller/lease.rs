//! Which replica runs what: each cluster's controllers on exactly one
//! replica at a time, the global controllers on one leader.
//!
//! Every replica works out the same assignment from the same view of the
//! serving replicas by rendezvous hashing ([`crate::replicas::owner`]): a
//! replica joining takes over only the clusters it now wins, one leaving
//! gives up only its own — no cascade of moves. The assignment is made
//! real by leases in the store (`/drover/leases/{name}` → [`Lease`]),
//! written only when a lease changes hands:
//!
//! - the replica a lease is assigned to takes it when it is free, or held
//!   by a replica that is gone (a compare-and-swap with the next
//!   generation);
//! - a holder that is no longer assigned the lease (a replica joined, or it
//!   is draining) stops what runs under it, then gives it up (the lease
//!   stays, without a holder, so generations only grow);
//! - a lease is valid only while its holder is alive, and a holder acts
//!   only while its own registration is fresh ([`Registry::may_act`],
//!   shorter than the time after which others may take over): two replicas
//!   never act under one lease at once.
//!
//! A cluster controller's writes to the store (status, namespace records,
//! the end of a removal) and the leader's orphan sweep carry the lease's
//! [`Held::fence`]: they fail if the lease changed hands meanwhile. Token
//! expiry and compaction need none: done twice, they change nothing more.
//! Writes to a cluster stop as soon as the lease is lost (the controller's
//! stop token, a child of this replica's one cancellation tree).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_core::{api, keys, meta};
use drover_store::{Mirror, Op, Revision, Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::replicas::{self, Registry};

/// Where the leases live.
pub const PREFIX: &str = "/drover/leases/";
/// The lease of the global controllers.
pub const LEADER: &str = "leader";
/// How long a stopping controller is given before its lease is let go.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// A lease, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// The replica holding it (empty: released).
    pub holder: String,
    /// One more than the lease it replaced: leases are released by
    /// emptying the holder, never removed while their cluster exists, so
    /// generations only grow.
    pub generation: u64,
    /// When it was taken (RFC 3339).
    pub acquired: String,
}

/// The lease of one cluster's controllers.
pub fn cluster_lease(cluster: &str) -> String {
    format!("clusters/{cluster}")
}

/// The key of a lease.
pub fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn parse(bytes: &[u8]) -> Option<Lease> {
    serde_json::from_slice(bytes).ok()
}

/// A lease this replica holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Its name (`leader`, `clusters/{id}`).
    pub name: String,
    /// The revision it was written at.
    pub revision: Revision,
    /// Its generation.
    pub generation: u64,
}

impl Held {
    /// The cluster a `clusters/{id}` lease is for (else the lease's name).
    pub fn cluster(&self) -> &str {
        self.name.strip_prefix("clusters/").unwrap_or(&self.name)
    }

    /// The condition that keeps a write to the store made under this lease:
    /// the lease has not changed hands.
    pub fn fence(&self) -> Op {
        Op::check(key(&self.name), Some(self.revision))
    }

    /// Change the stored object at `key` with `change` (which says whether
    /// it changed anything) and write it, on condition that neither the
    /// object nor this lease changed since it was read; a racing write of
    /// the object is read again, ten times at most.
    pub async fn update(
        &self,
        store: &Store,
        key: &str,
        mut change: impl FnMut(&mut serde_json::Value) -> bool,
    ) -> Result<Updated, StoreError> {
        for _ in 0..10 {
            let Some(kv) = store.get(key).await? else {
                return Ok(Updated::Gone);
            };
            let Ok(mut obj) = serde_json::from_slice::<serde_json::Value>(&kv.value) else {
                return Ok(Updated::Gone);
            };
            if !change(&mut obj) {
                return Ok(Updated::Done);
            }
            let write = Op::update(key.to_owned(), obj.to_string(), kv.mod_revision);
            match store.txn(&[self.fence(), write]).await {
                Ok(_) => return Ok(Updated::Done),
                Err(StoreError::Conflict { key: k, .. }) if k == key => continue,
                Err(StoreError::NotFound(k)) if k == key => return Ok(Updated::Gone),
                Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {
                    return Ok(Updated::LostLease)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Updated::Contended)
    }
}

/// How a [`Held::update`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updated {
    /// Written, or already as wanted.
    Done,
    /// The object is not there.
    Gone,
    /// The lease changed hands: nothing was written.
    LostLease,
    /// Others kept writing the object: given up.
    Contended,
}

/// What a controller run under a lease is started with.
pub type Start =
    Arc<dyn Fn(Ctx, Held, CancellationToken) -> tokio::task::JoinHandle<()> + Send + Sync>;

struct Running {
    held: Held,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// A cluster as assignment needs it: whether it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Brief;

fn parse_cluster(_: &[u8]) -> Option<Brief> {
    Some(Brief)
}

/// This replica's part in the assignment, and what it runs under it.
pub struct Ownership {
    ctx: Ctx,
    leases: Arc<Mirror<Lease>>,
    clusters: Arc<Mirror<Brief>>,
    running: Mutex<HashMap<String, Running>>,
    /// The parent of every controller's stop token: one cancellation tree.
    root: CancellationToken,
    /// Set once the leases are being given up (drain): the assignment
    /// neither takes nor releases any more, [`Ownership::release_all`]
    /// does.
    releasing: std::sync::atomic::AtomicBool,
    /// Starts a cluster's controllers, and the leader's.
    start_cluster: Start,
    start_leader: Start,
    _follow: [tokio::task::JoinHandle<()>; 2],
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("running", &self.held())
            .finish_non_exhaustive()
    }
}

impl Ownership {
    /// Follow the leases and the clusters; `start_cluster` and
    /// `start_leader` start what runs under each lease this replica takes.
    pub fn new(ctx: Ctx, start_cluster: Start, start_leader: Start) -> Arc<Self> {
        let (leases, a) = Mirror::spawn(&ctx.store, PREFIX, parse);
        let (clusters, b) = Mirror::spawn(
            &ctx.store,
            &keys::prefix(api::GROUP, "clusters", None),
            parse_cluster,
        );
        Arc::new(Self {
            ctx,
            leases,
            clusters,
            running: Mutex::default(),
            root: CancellationToken::new(),
            releasing: Default::default(),
            start_cluster,
            start_leader,
            _follow: [a, b],
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The leases this replica runs something under, by name.
    pub fn held(&self) -> BTreeMap<String, u64> {
        self.lock()
            .iter()
            .map(|(n, r)| (n.clone(), r.held.generation))
            .collect()
    }

    /// Every lease in the store, by name: (holder, generation).
    pub fn leases(&self) -> BTreeMap<String, (String, u64)> {
        self.leases
            .items()
            .into_iter()
            .map(|(k, l, _)| {
                (
                    k.strip_prefix(PREFIX).unwrap_or(&k).to_owned(),
                    (l.holder, l.generation),
                )
            })
            .collect()
    }

    /// Keep the assignment real until `stop`: on every change of the
    /// leases, the clusters or who is serving, and every second.
    pub fn spawn(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut leases = me.leases.changes();
            let mut clusters = me.clusters.changes();
            let mut members = me.ctx.registry.watch();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last = None;
            loop {
                let now = (
                    me.leases.revision(),
                    me.cluster_names(),
                    me.ctx.registry.members().serving.clone(),
                    me.ctx.registry.may_act(),
                );
                // Cluster status writes change the mirror's revision, not
                // the names: nothing to do for those.
                let key = (now.0, now.1.clone(), now.2.clone(), now.3);
                if last.as_ref() != Some(&key) || me.finished_any() {
                    // Unsettled (a store read or write failed): again on
                    // the next tick, even if nothing else changes.
                    last = me.rebalance(&now.1).await.then_some(key);
                }
                tokio::select! {
                    () = stop.cancelled() => {
                        me.root.cancel();
                        me.stop_all().await;
                        return;
                    }
                    _ = leases.changed() => {}
                    _ = clusters.changed() => {}
                    _ = members.changed() => {}
                    _ = tick.tick() => {}
                }
            }
        })
    }

    fn cluster_names(&self) -> BTreeSet<String> {
        self.clusters
            .items()
            .into_iter()
            .filter_map(|(k, _, _)| k.rsplit('/').next().map(str::to_owned))
            .collect()
    }

    /// Whether a controller ended by itself (a cluster removed): its lease
    /// is then given up.
    fn finished_any(&self) -> bool {
        self.lock().values().any(|r| r.task.is_finished())
    }

    /// Take, keep or give up each lease as the assignment says; `false`
    /// when a step failed on the store and must be tried again.
    async fn rebalance(&self, clusters: &BTreeSet<String>) -> bool {
        if self.releasing.load(std::sync::atomic::Ordering::Acquire) {
            return true;
        }
        let registry = &self.ctx.registry;
        let mut settled = true;
        if !registry.may_act() {
            // Cut off from the store (or frozen) for too long: others may
            // take over now, so nothing here may act any more.
            if !self.lock().is_empty() {
                tracing::warn!("this replica could not renew its registration in time; stopping its controllers");
            }
            self.stop_all().await;
            return true;
        }
        let me = registry.id();
        let members = registry.members();
        let mut names: BTreeSet<String> = clusters.iter().map(|c| cluster_lease(c)).collect();
        names.insert(LEADER.to_owned());
        // Leases of clusters that are gone, still held here, go too.
        names.extend(self.lock().keys().cloned());
        // A draining replica takes nothing, even before the others see it
        // draining.
        let draining = registry.draining();
        for name in names {
            let assigned =
                !draining && replicas::owner(&name, &members.serving) == Some(me.as_str());
            let exists = name == LEADER
                || name
                    .strip_prefix("clusters/")
                    .is_some_and(|c| clusters.contains(c));
            let current = self.leases.get(&key(&name));
            let mine = current.as_ref().is_some_and(|(l, _)| l.holder == me);
            let finished = self.lock().get(&name).is_some_and(|r| r.task.is_finished());
            if mine && (!assigned || !exists || finished) {
                self.stop(&name).await;
                if let Some((lease, revision)) = &current {
                    self.release(&name, lease, *revision).await;
                }
                continue;
            }
            if assigned && exists && !mine {
                let free = current
                    .as_ref()
                    .is_none_or(|(l, _)| l.holder.is_empty() || !members.is_live(&l.holder));
                if !free {
                    continue; // its holder gives it up when it sees the change
                }
                match self.acquire(&name, current.as_ref(), &me).await {
                    Ok(Some(held)) => self.start(&name, held),
                    Ok(None) => {}
                    // Another replica won, or the holder renewed: the
                    // change wakes this loop.
                    Err(
                        e @ (StoreError::Conflict { .. }
                        | StoreError::AlreadyExists(_)
                        | StoreError::NotFound(_)),
                    ) => tracing::debug!(lease = %name, error = %e, "lease not taken"),
                    Err(e) => {
                        tracing::debug!(lease = %name, error = %e, "lease not taken; trying again");
                        settled = false;
                    }
                }
                continue;
            }
            if mine {
                let (lease, revision) = current.expect("mine");
                let held = Held {
                    name: name.clone(),
                    revision,
                    generation: lease.generation,
                };
                let running = self.lock().get(&name).map(|r| r.held.clone());
                if running.as_ref() != Some(&held) {
                    self.stop(&name).await;
                    // The mirror may lag (this replica was frozen or cut
                    // off): start only under the lease the store has now.
                    match self.still_mine(&held, &me).await {
                        Ok(true) => self.start(&name, held),
                        Ok(false) => {}
                        Err(_) => settled = false,
                    }
                }
            } else if self.lock().contains_key(&name) {
                // Taken over by another replica (this one was away).
                self.stop(&name).await;
            }
        }
        settled
    }

    /// Take a free lease; `None` when its holder turns out to be alive
    /// after all.
    async fn acquire(
        &self,
        name: &str,
        current: Option<&(Lease, Revision)>,
        me: &str,
    ) -> Result<Option<Held>, StoreError> {
        let lease = Lease {
            holder: me.to_owned(),
            generation: current.map_or(1, |(l, _)| l.generation + 1),
            acquired: meta::now_rfc3339(),
        };
        let bytes = serde_json::to_vec(&lease).expect("plain data");
        let mut ops = vec![match current {
            Some((_, revision)) => Op::update(key(name), bytes, *revision),
            None => Op::create(key(name), bytes),
        }];
        // The holder is judged gone from its record as this replica sees
        // it now, and the take holds only if that record is still the one
        // in the store: a holder that renewed meanwhile keeps its lease.
        if let Some((old, _)) = current.filter(|(l, _)| !l.holder.is_empty()) {
            let Some(seen) = self.ctx.registry.gone_record(&old.holder) else {
                return Ok(None);
            };
            ops.push(Op::check(replicas::key(&old.holder), seen));
        }
        let kvs = self.ctx.store.txn(&ops).await?;
        tracing::info!(lease = %name, generation = lease.generation, "took the lease");
        Ok(Some(Held {
            name: name.to_owned(),
            revision: kvs[0].mod_revision,
            generation: lease.generation,
        }))
    }

    /// Whether the store (not the mirror) still has `held` as this
    /// replica's lease.
    async fn still_mine(&self, held: &Held, me: &str) -> Result<bool, StoreError> {
        Ok(match self.ctx.store.get(&key(&held.name)).await? {
            Some(kv) => {
                kv.mod_revision == held.revision && parse(&kv.value).is_some_and(|l| l.holder == me)
            }
            None => false,
        })
    }

    fn start(&self, name: &str, held: Held) {
        let stop = self.root.child_token();
        let task = if name == LEADER {
            (self.start_leader)(self.ctx.clone(), held.clone(), stop.clone())
        } else {
            (self.start_cluster)(self.ctx.clone(), held.clone(), stop.clone())
        };
        self.lock()
            .insert(name.to_owned(), Running { held, stop, task });
    }

    async fn stop(&self, name: &str) {
        let Some(running) = self.lock().remove(name) else {
            return;
        };
        Self::finish(vec![running]).await;
    }

    /// Cancel every one of `running` first, then wait for them together,
    /// up to [`STOP_WAIT`]; what is left is aborted (and waited for).
    async fn finish(running: Vec<Running>) -> Vec<Held> {
        for r in &running {
            r.stop.cancel();
        }
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        let waits = running.into_iter().map(|r| async move {
            let mut task = r.task;
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
            r.held
        });
        futures::future::join_all(waits).await
    }

    async fn stop_all(&self) {
        let running: Vec<Running> = self.lock().drain().map(|(_, r)| r).collect();
        Self::finish(running).await;
    }

    /// Cancel every controller's stop token now (and any started later):
    /// shutdown does not wait for the assignment loop to notice.
    pub fn cancel_all(&self) {
        self.root.cancel();
    }

    /// Stop everything and give up every lease (a draining replica): the
    /// others take them over at once instead of after this one is gone.
    pub async fn release_all(&self) {
        self.releasing
            .store(true, std::sync::atomic::Ordering::Release);
        let running: Vec<Running> = self.lock().drain().map(|(_, r)| r).collect();
        let held = Self::finish(running).await;
        let me = self.ctx.registry.id();
        let releases = held.into_iter().map(|h| {
            let me = me.clone();
            async move {
                let lease = Lease {
                    holder: me,
                    generation: h.generation,
                    acquired: String::new(),
                };
                let release = self.release(&h.name, &lease, h.revision);
                let _ = tokio::time::timeout(STOP_WAIT, release).await;
            }
        });
        futures::future::join_all(releases).await;
    }

    /// Give up a lease held here: it stays, with no holder and its
    /// generation, so that the next holder's generation is higher than
    /// any before it.
    async fn release(&self, name: &str, lease: &Lease, revision: Revision) {
        let released = Lease {
            holder: String::new(),
            generation: lease.generation,
            acquired: lease.acquired.clone(),
        };
        let bytes = serde_json::to_vec(&released).expect("plain data");
        let _ = self
            .ctx
            .store
            .txn(&[Op::update(key(name), bytes, revision)])
            .await;
    }
}

/// The controllers of a cluster's lease, or the leader's, with their
/// registry: what the HA test and `/healthz` read.
pub fn describe(registry: &Registry, ownership: &Ownership) -> serde_json::Value {
    serde_json::json!({
        "replica": registry.id(),
        "held": ownership.held(),
    })
}
