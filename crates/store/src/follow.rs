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
