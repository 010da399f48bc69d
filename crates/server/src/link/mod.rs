//! How to reach a cluster: its agent's link, on whichever replica holds it.
//!
//! ```text
//!   proxy, UI, controllers ──▶ Dialer ──┬─▶ a local Link ──▶ tunnel ──▶ agent
//!                                       └─▶ peer (mutual TLS) ──▶ the holder's Link
//! ```
//!
//! - [`Links`]: the agent links this replica holds, by cluster; serving one
//!   ([`Links::serve`]) claims the cluster's record in the store
//!   ([`records`]) and releases it when the link ends.
//! - [`records`]: which replica holds which cluster's link, with a
//!   generation, so that a stale holder cannot overwrite a newer one.
//! - [`peer`]: the replica-to-replica connection (mutual TLS with
//!   certificates from Drover's own peer CA) that carries a request to the
//!   holder, and nothing else.
//! - [`dialer`]: one way to send a request to a cluster from anywhere:
//!   the local link, else the holder's, waiting a moment for one to appear.
//! - [`kube`]: JSON requests and watches to a cluster over the dialer.

pub mod dialer;
pub mod kube;
pub mod peer;
pub mod records;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use drover_core::{api, keys};
use drover_store::{Mirror, Store};
use drover_tunnel::{mux, Keepalive, Mode, Opener, WsIo};
use hyper_util::rt::TokioIo;

pub use dialer::{Dialer, Route};
pub use records::LinkRecord;

/// One connected agent.
#[derive(Debug, Clone)]
pub struct Link {
    /// The cluster.
    pub cluster: String,
    /// The store key of the registration token the agent connected with:
    /// when it goes, so does the link.
    pub registration: String,
    /// Tells this link from the one that may replace it.
    pub id: u64,
    /// Opens streams to the agent.
    pub opener: Opener,
}

/// The agent links of this replica, by cluster.
#[derive(Debug)]
pub struct Links {
    store: Store,
    /// This replica's id, in the records it writes.
    replica: String,
    links: Mutex<HashMap<String, Link>>,
    next_id: AtomicU64,
    /// Every cluster's record, to give way to a newer link elsewhere.
    table: Arc<Mirror<LinkRecord>>,
    _follow: tokio::task::JoinHandle<()>,
}

impl Links {
    /// The links of replica `replica`, with the store's records followed.
    pub fn new(store: &Store, replica: String) -> Arc<Self> {
        let (table, follow) = Mirror::spawn(store, records::PREFIX, records::parse);
        Arc::new(Self {
            store: store.clone(),
            replica,
            links: Mutex::default(),
            next_id: AtomicU64::new(1),
            table,
            _follow: follow,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every cluster's record, as the store has it.
    pub fn table(&self) -> &Arc<Mirror<LinkRecord>> {
        &self.table
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The live link of a cluster held here.
    pub fn get(&self, cluster: &str) -> Option<Link> {
        self.lock()
            .get(cluster)
            .filter(|l| !l.opener.is_closed())
            .cloned()
    }

    /// Every live link held here.
    pub fn all(&self) -> Vec<Link> {
        self.lock()
            .values()
            .filter(|l| !l.opener.is_closed())
            .cloned()
            .collect()
    }

    /// Close a cluster's link, if this replica holds one.
    pub fn close(&self, cluster: &str) {
        if let Some(link) = self.get(cluster) {
            link.opener.close();
        }
    }

    /// Close every link: their agents reconnect, through the balancer, to
    /// another replica (a draining one).
    pub fn close_all(&self) {
        for link in self.all() {
            link.opener.close();
        }
    }

    /// Close the links that connected with the registration token whose
    /// record is `key` (it was deleted). Each link's own task then releases
    /// its record. A cluster being removed keeps its link, whichever
    /// replica removes it, so that its agent can clean up (its removal
    /// revokes the tokens first, then closes the link itself).
    pub async fn close_registration(&self, key: &str) {
        let links: Vec<Link> = self
            .all()
            .into_iter()
            .filter(|l| l.registration == key)
            .collect();
        for link in links {
            let cluster_key = keys::object(api::GROUP, "clusters", None, &link.cluster);
            let deleting = match self.store.get(&cluster_key).await {
                Ok(Some(kv)) => serde_json::from_slice::<serde_json::Value>(&kv.value)
                    .is_ok_and(|v| drover_apiserver::object::is_deleting(&v)),
                Ok(None) => false,
                Err(_) => continue, // checked again by the next sweep
            };
            if deleting {
                continue;
            }
            tracing::info!(cluster = %link.cluster, "closing the agent's link: its registration token was revoked");
            link.opener.close();
        }
    }

    /// Every few seconds, release the records that name this replica for a
    /// link it no longer holds (a release that failed): otherwise such a
    /// record would keep the cluster routed here, and shown connected.
    pub fn spawn_record_sweep(
        self: &Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                for (key, record, revision) in me.table.items() {
                    let cluster = records::cluster_of(&key).to_owned();
                    if record.replica != me.replica || me.get(&cluster).is_some() {
                        continue;
                    }
                    // Whether the link is still registered (closing).
                    let registered = me.lock().get(&cluster).is_some_and(|l| l.id == record.link);
                    if registered {
                        continue;
                    }
                    if records::release(
                        &me.store,
                        &cluster,
                        &record,
                        revision,
                        std::time::SystemTime::now(),
                    )
                    .await
                    {
                        tracing::info!(%cluster, "released a record of a link this replica no longer holds");
                    }
                }
            }
        })
    }

    /// Close every link whose registration token is gone from the store.
    pub async fn close_revoked(&self) {
        let keys: Vec<String> = self.all().into_iter().map(|l| l.registration).collect();
        for key in keys {
            if let Ok(None) = self.store.get(&key).await {
                self.close_registration(&key).await;
            }
        }
    }

    /// Serve an agent's upgraded connection for `cluster` until it ends:
    /// run the tunnel, claim the cluster's record (a newer link than any
    /// before it, here or elsewhere), give way when the record changes
    /// (a newer link on another replica), and release the record at the
    /// end if it is still this link's.
    pub async fn serve(
        self: &Arc<Self>,
        cluster: String,
        registration: String,
        source: String,
        upgraded: hyper::upgrade::Upgraded,
        keepalive: Keepalive,
        accepted: drover_store::Revision,
    ) {
        let ws = drover_tunnel::ws::server(TokioIo::new(upgraded)).await;
        // The server opens streams; the agent never does (its inbound side
        // is dropped, which refuses any stream it opens).
        let session = mux::start(WsIo::new(ws, keepalive), Mode::Client);
        let link = Link {
            cluster: cluster.clone(),
            registration,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            opener: session.opener,
        };
        if let Some(old) = self.lock().insert(cluster.clone(), link.clone()) {
            tracing::info!(%cluster, "a new agent connection replaces the previous one");
            old.opener.close();
        }
        // A link claimed elsewhere after this one was accepted (the store's
        // revision when the agent was answered) is the agent's newer
        // connection: this one then gives way. A link already closing
        // claims nothing.
        let claimed = if link.opener.is_closed() {
            Err(records::ClaimError::Superseded)
        } else {
            records::claim(&self.store, &cluster, &self.replica, link.id, accepted).await
        };
        let claimed = match claimed {
            Ok(c) => Some(c),
            Err(records::ClaimError::Superseded) => {
                tracing::info!(%cluster, "a newer link for the cluster is recorded; closing this one");
                link.opener.close();
                None
            }
            Err(e) => {
                tracing::warn!(%cluster, error = %e, "cannot record the agent's link; closing it");
                link.opener.close();
                None
            }
        };
        // Revoked between the check and now: the revoker may have looked
        // before this link was there.
        if let Ok(None) = self.store.get(&link.registration).await {
            self.close_registration(&link.registration).await;
        }
        tracing::info!(%cluster, %source, "agent connected");
        if let Some((_, revision)) = &claimed {
            // The link stands while the record is the one it wrote: a newer
            // claim (the agent reconnected elsewhere) or the record's
            // removal (this replica was taken for dead) ends it.
            let mut changes = self.table.changes();
            let key = records::key(&cluster);
            loop {
                let superseded = self.table.revision() >= *revision
                    && self.table.get(&key).is_none_or(|(_, r)| r != *revision);
                if superseded {
                    tracing::info!(%cluster, "the cluster's link is recorded elsewhere now; closing this one");
                    link.opener.close();
                    break;
                }
                tokio::select! {
                    () = link.opener.closed() => break,
                    changed = changes.changed() => {
                        if changed.is_err() {
                            link.opener.closed().await;
                            break;
                        }
                    }
                }
            }
        }
        // The tunnel's end: whether the agent fell silent before it.
        let ended = session.driver.await;
        let silent = matches!(&ended, Ok(Err(e)) if e.is_silence());
        if let Ok(Err(e)) = &ended {
            tracing::debug!(%cluster, error = %e, "tunnel ended");
        }
        let last_seen = std::time::SystemTime::now()
            - if silent {
                keepalive.timeout
            } else {
                std::time::Duration::ZERO
            };
        let replaced_here = {
            let mut links = self.lock();
            if links.get(&cluster).is_some_and(|l| l.id == link.id) {
                links.remove(&cluster);
                false
            } else {
                true
            }
        };
        // A newer link here claims the record itself.
        if let (Some((record, revision)), false) = (claimed, replaced_here) {
            if records::release(&self.store, &cluster, &record, revision, last_seen).await {
                tracing::info!(%cluster, silent, "agent disconnected");
            }
        }
    }
}
