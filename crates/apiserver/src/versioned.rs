//! A value rebuilt on demand after invalidations, for snapshots that many
//! requests read and few writes change (authorization rules).
//!
//! Every invalidation bumps a generation. A reader whose generation matches
//! the stored one gets it; otherwise it builds anew and installs the result
//! only if nothing newer is there — so a slow build that started before an
//! invalidation can never replace a newer snapshot, and an invalidation is
//! never lost.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// See the module docs.
#[derive(Debug, Default)]
pub struct Versioned<T> {
    generation: AtomicU64,
    slot: RwLock<Option<(u64, Arc<T>)>>,
}

impl<T> Versioned<T> {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            generation: AtomicU64::new(1),
            slot: RwLock::new(None),
        }
    }

    /// Mark the current value stale.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The current value, built by `build` if stale.
    pub async fn get<E, F, Fut>(&self, build: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some((g, v)) = &*self.slot.read().unwrap_or_else(|e| e.into_inner()) {
            if *g == generation {
                return Ok(v.clone());
            }
        }
        let built = Arc::new(build().await?);
        let mut slot = self.slot.write().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|(g, _)| *g < generation) {
            *slot = Some((generation, built.clone()));
        }
        Ok(built)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_older_build_never_replaces_a_newer_one() {
        let cache = Versioned::<u32>::new();
        assert_eq!(*cache.get(|| async { Ok::<_, ()>(1) }).await.unwrap(), 1);
        assert_eq!(
            *cache.get(|| async { Ok::<_, ()>(99) }).await.unwrap(),
            1,
            "cached"
        );
        // A build starts (and reads the generation), an invalidation
        // happens, a newer build finishes first.
        cache.invalidate();
        let mut slow = Box::pin(cache.get(|| async {
            tokio::task::yield_now().await;
            Ok::<_, ()>(2)
        }));
        assert!(futures::poll!(&mut slow).is_pending());
        cache.invalidate();
        assert_eq!(*cache.get(|| async { Ok::<_, ()>(3) }).await.unwrap(), 3);
        assert_eq!(
            *slow.await.unwrap(),
            2,
            "the slow caller gets its own build"
        );
        assert_eq!(
            *cache.get(|| async { Ok::<_, ()>(4) }).await.unwrap(),
            3,
            "but the newer one stays installed"
        );
    }
}
