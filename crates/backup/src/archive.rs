//! The log archive, for point-in-time recovery: every write the store
//! makes is copied, in revision order, into segment files
//! `log-{first}-{last}.drlog` (revisions zero-padded to 20 digits, so names
//! sort in order) at the archive location, at least every
//! [`SEGMENT_EVERY`] while there are writes. Each row carries the time it
//! was written, so a restore can stop at a time.
//!
//! The archiver runs on one replica (the leader). It starts where the
//! archive ends (the last segment's revision) and publishes how far it got,
//! so that compaction never drops a row it has not archived yet. An archive
//! that goes past the store's own revision belongs to another history (the
//! datastore was restored): the archiver refuses it rather than mix the
//! two. Segments older than the retention are deleted, once an hour.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_store::{Revision, Store, StoreError};

use crate::format::{FileKind, Header, Writer};
use crate::{BackupError, Key, Location, SEGMENT_EXT};

/// The name prefix of log segments.
pub const SEGMENT_PREFIX: &str = "log-";
/// A segment is written at least this often while there are writes.
pub const SEGMENT_EVERY: Duration = Duration::from_secs(8);
/// Rows per segment at most.
const SEGMENT_ROWS: usize = 5_000;
/// How often old segments are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A segment's name.
pub fn segment_name(first: Revision, last: Revision) -> String {
    format!("{SEGMENT_PREFIX}{first:020}-{last:020}{SEGMENT_EXT}")
}

/// The revisions a segment's name covers.
pub fn parse_segment_name(name: &str) -> Option<(Revision, Revision)> {
    let range = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_EXT)?;
    let (first, last) = range.split_once('-')?;
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

/// A time in microseconds since the Unix epoch.
pub fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The time `micros` microseconds after the Unix epoch.
pub fn from_micros(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64)
}

/// Copies the store's log to the archive.
pub struct Archiver {
    store: Store,
    location: Location,
    key: Option<Key>,
    scratch: PathBuf,
    /// The last revision archived; -1 until the archive's end is known.
    archived: Arc<AtomicI64>,
    /// Segments older than this are deleted.
    retention: Duration,
    last_prune: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Archiver {
    /// An archiver of `store` to `location`, encrypting when `key` is
    /// given, staging files in `scratch`, keeping segments for `retention`.
    pub fn new(
        store: Store,
        location: Location,
        key: Option<Key>,
        scratch: PathBuf,
        retention: Duration,
    ) -> Self {
        Self {
            store,
            location,
            key,
            scratch,
            archived: Arc::new(AtomicI64::new(-1)),
            retention,
            last_prune: std::sync::Mutex::new(None),
        }
    }

    /// Delete segments last written before the retention, at most once an
    /// hour; returns how many.
    async fn prune(&self) -> Result<usize, BackupError> {
        {
            let mut last = self.last_prune.lock().expect("not poisoned");
            if last.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
                return Ok(0);
            }
            *last = Some(std::time::Instant::now());
        }
        let Some(cutoff) = SystemTime::now().checked_sub(self.retention) else {
            return Ok(0);
        };
        let mut deleted = 0;
        for e in self.location.list(SEGMENT_PREFIX).await? {
            if parse_segment_name(&e.name).is_some() && e.modified < cutoff {
                self.location.delete(&e.name).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// How far the archive goes (-1 until known): compaction must not go
    /// past it.
    pub fn archived(&self) -> Arc<AtomicI64> {
        self.archived.clone()
    }

    /// The archive's last revision, read from its segments' names; with no
    /// segment, the store's compacted revision (history before it cannot be
    /// archived any more).
    async fn resume_point(&self) -> Result<Revision, BackupError> {
        let last = self
            .location
            .list(SEGMENT_PREFIX)
            .await?
            .iter()
            .filter_map(|e| parse_segment_name(&e.name).map(|(_, last)| last))
            .max();
        let at = self.store.revisions().await?;
        match last {
            Some(last) if last > at.current => Err(BackupError::Refused(format!(
                "the log archive {} holds revisions up to {last}, past this datastore's {}: \
                 it is the archive of the datastore this one was restored from; give \
                 --backup-log-archive a new location",
                self.location, at.current
            ))),
            Some(last) => Ok(last),
            None => Ok(at.compacted),
        }
    }

    /// Archive what was written since the last call (or since the
    /// archive's end, the first time); returns the segments written.
    pub async fn step(&self) -> Result<usize, BackupError> {
        let pruned = self.prune().await?;
        if pruned > 0 {
            tracing::info!(segments = pruned, "pruned log segments past the retention");
        }
        let mut from = self.archived.load(Ordering::SeqCst);
        if from < 0 {
            from = self.resume_point().await?;
            self.archived.store(from, Ordering::SeqCst);
        }
        let mut written = 0;
        loop {
            let rows = match self.store.log_since(from, SEGMENT_ROWS).await {
                Ok(rows) => rows,
                Err(StoreError::TooOld { compacted, .. }) => {
                    tracing::error!(
                        from,
                        compacted,
                        "the store was compacted past the log archive's end; archiving from {compacted}: point-in-time recovery has a gap"
                    );
                    from = compacted;
                    self.archived.store(from, Ordering::SeqCst);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
                return Ok(written);
            };
            let (first, last) = (first.revision, last.revision);
            let full = rows.len() == SEGMENT_ROWS;
            let name = segment_name(first, last);
            std::fs::create_dir_all(&self.scratch)?;
            let file = tempfile::NamedTempFile::new_in(&self.scratch)?;
            let out = std::io::BufWriter::new(file.reopen()?);
            let key = self.key.clone();
            tokio::task::spawn_blocking(move || -> Result<(), BackupError> {
                let mut w =
                    Writer::new(out, Header::new(FileKind::Log, first, last), key.as_ref())?;
                for row in &rows {
                    w.write_row(row)?;
                }
                // Read back at once by the upload, then deleted: no fsync.
                let (_, out) = w.finish()?;
                out.into_inner().map_err(|e| e.into_error())?;
                Ok(())
            })
            .await
            .map_err(|e| BackupError::Refused(format!("the segment writer failed: {e}")))??;
            self.location.upload(file.path(), &name).await?;
            from = last;
            self.archived.store(last, Ordering::SeqCst);
            written += 1;
            if !full {
                return Ok(written);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_in_revision_order() {
        let a = segment_name(9, 99);
        let b = segment_name(100, 1000);
        assert!(a < b);
        assert_eq!(parse_segment_name(&b), Some((100, 1000)));
        assert_eq!(parse_segment_name("log-5-3.drlog"), None);
        assert_eq!(parse_segment_name("backup-1.drbk"), None);
    }
}
