//! Keeping an in-memory view current from the store's watch: load it at a
//! revision, apply every later change in order, and start again after a
//! broken watch (such as a compacted revision), until the store closes.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;

use crate::{Event, Revision, Store, StoreError};

/// An in-memory view of the keys under a prefix, kept by [`Store::follow`].
pub trait Follower: Send + Sync + 'static {
    /// (Re)load the view as of `revision`; `false` retries a second later.
    fn reset(&self, revision: Revision) -> BoxFuture<'_, bool>;
    /// Apply one change under the prefix; changes arrive in order.
    fn apply(&self, event: &Event);
    /// The view stopped being kept current (the watch broke, or the store
    /// closed); [`Follower::reset`] comes first if it starts again.
    fn lost(&self);
}

/// Wait after a failed start before trying again.
const RETRY: Duration = Duration::from_secs(1);
/// Wait after a broken watch before starting again.
const RESTART: Duration = Duration::from_millis(200);

impl Store {
    /// Keep `follower` current with every change under `prefix` until the
    /// store closes.
    pub fn follow<F: Follower>(
        &self,
        prefix: &str,
        follower: Arc<F>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        let prefix = prefix.to_owned();
        tokio::spawn(async move {
            loop {
                let from = match store.revisions().await {
                    Ok(r) => r.current,
                    Err(StoreError::Closed) => return follower.lost(),
                    Err(_) => {
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                };
                if !follower.reset(from).await {
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                let mut events = store.watch(&prefix, from);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(e) => follower.apply(&e),
                        Err(StoreError::Closed) => return follower.lost(),
                        Err(_) => break,
                    }
                }
                follower.lost();
                tokio::time::sleep(RESTART).await;
            }
        })
    }
}

/// The keys under a prefix, each parsed into a `T`, kept current from the
/// store's watch ([`Store::follow`]). Subscribers ([`Mirror::changes`]) learn
/// of every change; readers get what the mirror has seen, which is every
/// write up to [`Mirror::revision`].
pub struct Mirror<T> {
    items: std::sync::RwLock<std::collections::BTreeMap<String, (T, Revision)>>,
    parse: fn(&[u8]) -> Option<T>,
    prefix: String,
    store: Store,
    /// The last revision applied (0 until the first load).
    applied: tokio::sync::watch::Sender<Revision>,
}

impl<T> std::fmt::Debug for Mirror<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("prefix", &self.prefix)
            .field("revision", &*self.applied.borrow())
            .finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + 'static> Mirror<T> {
    /// Mirror the keys under `prefix`, parsed by `parse` (keys it cannot
    /// parse are left out), until the store closes.
    pub fn spawn(
        store: &Store,
        prefix: &str,
        parse: fn(&[u8]) -> Option<T>,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let mirror = Arc::new(Self {
            items: Default::default(),
            parse,
            prefix: prefix.to_owned(),
            store: store.clone(),
            applied: tokio::sync::watch::channel(0).0,
        });
        let task = store.follow(prefix, mirror.clone());
        (mirror, task)
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, std::collections::BTreeMap<String, (T, Revision)>> {
        self.items.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The item under `key` and the revision it was last written at.
    pub fn get(&self, key: &str) -> Option<(T, Revision)> {
        self.read().get(key).cloned()
    }

    /// Every item, by key.
    pub fn items(&self) -> Vec<(String, T, Revision)> {
        self.read()
            .iter()
            .map(|(k, (v, r))| (k.clone(), v.clone(), *r))
            .collect()
    }

    /// The last revision applied: every write up to it is seen.
    pub fn revision(&self) -> Revision {
        *self.applied.borrow()
    }

    /// Changes: the receiver sees a new revision after each change (and
    /// each reload).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.applied.subscribe()
    }

    /// Wait until the mirror has applied every write up to `revision`, for
    /// at most `timeout`; whether it has.
    pub async fn caught_up(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Wait until it has loaded once — it then holds every write committed
    /// before it was made — for at most `timeout`. (For a later write of
    /// one's own, wait with [`Mirror::caught_up`] for its revision.)
    pub async fn ready(&self, timeout: Duration) -> bool {
        self.caught_up(1, timeout).await
    }
}

impl<T: Clone + Send + Sync + 'static> Follower for Mirror<T> {
    fn reset(&self, revision: Revision) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let Ok(page) = self
                .store
                .list(&crate::ListOptions {
                    prefix: self.prefix.clone(),
                    revision: Some(revision),
                    ..Default::default()
                })
                .await
            else {
                return false;
            };
            let items = page
                .items
                .into_iter()
                .filter_map(|kv| Some((kv.key, ((self.parse)(&kv.value)?, kv.mod_revision))))
                .collect();
            *self.items.write().unwrap_or_else(|e| e.into_inner()) = items;
            self.applied.send_replace(revision.max(1));
            true
        })
    }

    fn apply(&self, event: &Event) {
        {
            let mut items = self.items.write().unwrap_or_else(|e| e.into_inner());
            match event.kind {
                crate::EventType::Deleted => {
                    items.remove(&event.kv.key);
                }
                _ => match (self.parse)(&event.kv.value) {
                    Some(v) => {
                        items.insert(event.kv.key.clone(), (v, event.kv.mod_revision));
                    }
                    None => {
                        items.remove(&event.kv.key);
                    }
                },
            }
        }
        self.applied.send_replace(event.revision());
    }

    fn lost(&self) {}
}
