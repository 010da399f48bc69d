//! Watch fan-out: one pump per [`Store`](crate::Store) reads each new log row
//! once and broadcasts it; every watcher follows the broadcast.
//!
//! ```text
//! writes ──wake──▶ pump ── changes_since(all, last) ──▶ broadcast ──▶ watcher ─▶ mpsc ─▶ caller
//!                                                                     ▲
//!                                  changes_since(prefix, after) ──────┘ (catch-up)
//! ```
//! A watcher subscribes to the broadcast *before* it catches up from the log,
//! so the two overlap rather than leave a gap, and it drops anything at or
//! below the last revision it delivered, so the overlap is not seen twice.
//! A watcher that falls behind the broadcast (lag), or a pump that fell
//! behind compaction (gap), catches up from the log again; if that history is
//! gone the watcher ends with [`StoreError::TooOld`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::{BoxStream, StreamExt};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::{Backend, Event, Result, Revision, StoreError};

/// Rows read per query, by the pump and by catch-ups.
const BATCH: usize = 512;
/// Events kept for watchers that are momentarily slow.
const BROADCAST_CAPACITY: usize = 4096;
/// Events buffered per watcher before it is considered slow.
const WATCHER_BUFFER: usize = 256;

#[derive(Debug, Clone)]
enum Signal {
    Change(Arc<Event>),
    /// The pump skipped history (it fell behind compaction): watchers must
    /// re-read from the log.
    Gap,
}

pub(crate) struct Hub {
    tx: Mutex<Option<broadcast::Sender<Signal>>>,
    local_write: Arc<Notify>,
    /// The highest revision this process has committed.
    last_local: AtomicI64,
    pump: JoinHandle<()>,
}

impl Hub {
    pub(crate) fn start(backend: Arc<dyn Backend>, from: Revision) -> Arc<Self> {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let local_write = Arc::new(Notify::new());
        let pump = tokio::spawn(pump(backend, tx.clone(), local_write.clone(), from));
        Arc::new(Self {
            tx: Mutex::new(Some(tx)),
            local_write,
            last_local: AtomicI64::new(0),
            pump,
        })
    }

    /// Tell the pump this process just committed a write at `revision`.
    pub(crate) fn written(&self, revision: Revision) {
        self.last_local.fetch_max(revision, Ordering::AcqRel);
        self.local_write.notify_one();
    }

    /// The highest revision this process has committed (0 before any).
    pub(crate) fn last_local_write(&self) -> Revision {
        self.last_local.load(Ordering::Acquire)
    }

    /// Stop the pump; watchers end with [`StoreError::Closed`].
    pub(crate) fn stop(&self) {
        self.pump.abort();
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    pub(crate) fn watch(
        &self,
        backend: Arc<dyn Backend>,
        prefix: String,
        after: Revision,
    ) -> BoxStream<'static, Result<Event>> {
        let (out, rx) = mpsc::channel(WATCHER_BUFFER);
        let sub = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|tx| tx.subscribe());
        match sub {
            Some(sub) => {
                tokio::spawn(follow(backend, prefix, after, sub, out));
            }
            None => {
                let _ = out.try_send(Err(StoreError::Closed));
            }
        }
        ReceiverStream::new(rx).boxed()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

async fn pump(
    backend: Arc<dyn Backend>,
    tx: broadcast::Sender<Signal>,
    local_write: Arc<Notify>,
    mut last: Revision,
) {
    loop {
        loop {
            match backend.changes_since("", last, BATCH).await {
                Ok(events) => {
                    let full = events.len() == BATCH;
                    for event in events {
                        last = event.revision();
                        let _ = tx.send(Signal::Change(Arc::new(event)));
                    }
                    if !full {
                        break;
                    }
                }
                Err(StoreError::TooOld { .. }) => {
                    match backend.revisions().await {
                        Ok(revs) => last = revs.current,
                        Err(e) => tracing::warn!(error = %e, "watch pump cannot read revisions"),
                    }
                    tracing::warn!(revision = last, "watch pump fell behind compaction");
                    let _ = tx.send(Signal::Gap);
                    break;
                }
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "watch pump cannot read changes; retrying");
                    break;
                }
            }
        }
        tokio::select! {
            _ = local_write.notified() => {}
            _ = backend.wait_for_change() => {}
            _ = tokio::time::sleep(backend.poll_interval()) => {}
        }
    }
}

/// Deliver to `out` every change under `prefix` after `last` from the log.
async fn catch_up(
    backend: &dyn Backend,
    prefix: &str,
    last: &mut Revision,
    out: &mpsc::Sender<Result<Event>>,
) -> Result<bool> {
    loop {
        let events = backend.changes_since(prefix, *last, BATCH).await?;
        let full = events.len() == BATCH;
        for event in events {
            *last = event.revision();
            if out.send(Ok(event)).await.is_err() {
                return Ok(false);
            }
        }
        if !full {
            return Ok(true);
        }
    }
}

async fn follow(
    backend: Arc<dyn Backend>,
    prefix: String,
    mut last: Revision,
    mut sub: broadcast::Receiver<Signal>,
    out: mpsc::Sender<Result<Event>>,
) {
    let mut need_catch_up = true;
    loop {
        if need_catch_up {
            need_catch_up = false;
            match catch_up(backend.as_ref(), &prefix, &mut last, &out).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
            }
        }
        let signal = tokio::select! {
            _ = out.closed() => return,
            signal = sub.recv() => signal,
        };
        match signal {
            Ok(Signal::Change(event)) => {
                if event.revision() <= last {
                    continue;
                }
                last = event.revision();
                if event.kv.key.starts_with(&prefix)
                    && out.send(Ok((*event).clone())).await.is_err()
                {
                    return;
                }
            }
            Ok(Signal::Gap) | Err(broadcast::error::RecvError::Lagged(_)) => need_catch_up = true,
            Err(broadcast::error::RecvError::Closed) => {
                let _ = out.send(Err(StoreError::Closed)).await;
                return;
            }
        }
    }
}
