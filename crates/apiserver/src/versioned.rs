//! A value rebuilt on demand after invalidations, for snapshots that many
//! requests read and few writes change (authorization rules).
//!
//! Every invalidation bumps a generation. A reader whose generation matches
//! the stored one gets it; otherwise it builds anew and installs the result
//! only if nothing newer is there — so a slow build that started before an
//! invalidation can never replace a newer snapshot, and an invalidation is
//! never lost. One build runs at a time: readers that find a build under way
//! wait for it and take its result if nothing was invalidated meanwhile, so
//! a burst of readers after a write costs one build, not one each.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// See the module docs.
#[derive(Debug, Default)]
pub struct Versioned<T> {
    generation: AtomicU64,
    slot: RwLock<Option<(u64, Arc<T>)>>,
    building: tokio::sync::Mutex<()>,
}

impl<T> Versioned<T> {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            generation: AtomicU64::new(1),
            slot: RwLock::new(None),
            building: tokio::sync::Mutex::new(()),
        }
    }

    /// Mark the current value stale.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The stored value, if it is of the current generation.
    fn current(&self) -> Option<Arc<T>> {
        let generation = self.generation.load(Ordering::SeqCst);
        match &*self.slot.read().unwrap_or_else(|e| e.into_inner()) {
            Some((g, v)) if *g == generation => Some(v.clone()),
            _ => None,
        }
    }

    /// The current value, built by `build` if stale.
    pub async fn get<E, F, Fut>(&self, build: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(v) = self.current() {
            return Ok(v);
        }
        let _one_at_a_time = self.building.lock().await;
        // The build we waited for may be the one we need.
        if let Some(v) = self.current() {
            return Ok(v);
        }
        let generation = self.generation.load(Ordering::SeqCst);
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
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn cached_until_invalidated() {
        let cache = Versioned::<u32>::new();
        assert_eq!(*cache.get(|| async { Ok::<_, ()>(1) }).await.unwrap(), 1);
        assert_eq!(
            *cache.get(|| async { Ok::<_, ()>(99) }).await.unwrap(),
            1,
            "cached"
        );
        cache.invalidate();
        assert_eq!(*cache.get(|| async { Ok::<_, ()>(2) }).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn readers_during_a_build_share_it() {
        let cache = Arc::new(Versioned::<usize>::new());
        let builds = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..50)
            .map(|_| {
                let (cache, builds) = (cache.clone(), builds.clone());
                tokio::spawn(async move {
                    *cache
                        .get(|| async {
                            let n = builds.fetch_add(1, Ordering::SeqCst) + 1;
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            Ok::<_, ()>(n)
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for r in readers {
            assert_eq!(r.await.unwrap(), 1, "every reader got the one build");
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_invalidation_during_a_build_is_not_lost() {
        let cache = Arc::new(Versioned::<u32>::new());
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let slow = {
            let cache = cache.clone();
            tokio::spawn(async move {
                *cache
                    .get(|| async move {
                        let _ = started_tx.send(());
                        let _ = go_rx.await;
                        Ok::<_, ()>(1)
                    })
                    .await
                    .unwrap()
            })
        };
        started_rx.await.unwrap();
        cache.invalidate(); // a write lands while the build reads old data
        let _ = go_tx.send(());
        assert_eq!(slow.await.unwrap(), 1, "the slow caller gets its own build");
        assert_eq!(
            *cache.get(|| async { Ok::<_, ()>(2) }).await.unwrap(),
            2,
            "but the next reader sees the write"
        );
    }
}
