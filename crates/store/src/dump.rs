//! Whole-store reads and loads, for backups and point-in-time recovery:
//!
//! - [`Store::snapshot`]: every live object at one revision, read in one
//!   consistent read transaction while writes go on, sent in batches over
//!   a bounded channel (so memory does not grow with the store);
//! - [`Store::log_since`]: raw log rows after a revision, with the time
//!   each was written, for archiving the log;
//! - [`Store::load`]: rows (a snapshot's, then a log's) written into a
//!   datastore in one transaction with their original revisions, which
//!   commits only when the sender says the load is whole.

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::{Result, Revision, Store};

/// One row of the store's log: a write, with its revision and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    /// The write's revision.
    pub revision: Revision,
    /// The key written.
    pub key: String,
    /// The revision that created the key's current incarnation.
    pub create_revision: Revision,
    /// Whether the write deleted the key (the value is then its last one).
    pub deleted: bool,
    /// The value written.
    pub value: Bytes,
    /// When it was written: microseconds since the Unix epoch, the same
    /// for every row of one transaction (0 for rows written before the
    /// store kept times).
    pub at_micros: i64,
}

impl LogRow {
    /// Whether this row created its key.
    pub fn created(&self) -> bool {
        !self.deleted && self.create_revision == self.revision
    }
}

/// What a snapshot sends, in order: one [`Snapshot::Begin`], then batches.
#[derive(Debug)]
pub enum Snapshot {
    /// The snapshot's revision and how many objects follow.
    Begin {
        /// Every write up to this revision is in the snapshot, none after.
        revision: Revision,
        /// The number of live objects at that revision.
        objects: u64,
    },
    /// The next objects, in key order (as log rows: their latest write).
    Rows(Vec<LogRow>),
}

/// What a load receives: batches of rows, then [`Load::Commit`].
#[derive(Debug)]
pub enum Load {
    /// Rows to write, in revision order within a replay; a snapshot's rows
    /// come first, in any order.
    Rows(Vec<LogRow>),
    /// Everything was sent and checked: commit, with the store at
    /// `revision` and history before `compacted` gone.
    Commit {
        /// The store's revision after the load.
        revision: Revision,
        /// The first revision whose history the load holds.
        compacted: Revision,
    },
}

/// What a datastore holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contents {
    /// Its current revision (0 for a new one).
    pub revision: Revision,
    /// How many live objects it holds.
    pub objects: u64,
}

impl Contents {
    /// Whether nothing was ever written.
    pub fn is_empty(&self) -> bool {
        self.revision == 0 && self.objects == 0
    }
}

/// Now, in microseconds since the Unix epoch.
pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Send every live object as of one revision to `out` in batches of up
    /// to `batch`, read in one consistent snapshot while writes go on.
    /// Ends when everything was sent, or early (with `Ok`) when `out` is
    /// dropped.
    pub async fn snapshot(&self, batch: usize, out: mpsc::Sender<Snapshot>) -> Result<()> {
        self.backend.snapshot(batch.max(1), out).await
    }

    /// Up to `limit` log rows with a revision greater than `after`, oldest
    /// first. Fails with [`crate::StoreError::TooOld`] when `after` was
    /// compacted away.
    pub async fn log_since(&self, after: Revision, limit: usize) -> Result<Vec<LogRow>> {
        self.backend.log_since(after, limit).await
    }

    /// The current revision and the number of live objects.
    pub async fn contents(&self) -> Result<Contents> {
        self.backend.contents().await
    }

    /// Write what `rows` sends into this datastore in one transaction; it
    /// must be empty unless `replace`, which first removes everything. The
    /// transaction commits on [`Load::Commit`]; if the channel closes
    /// before that, nothing is written ([`crate::StoreError::LoadAborted`]).
    pub async fn load(&self, replace: bool, rows: mpsc::Receiver<Load>) -> Result<Contents> {
        self.backend.load(replace, rows).await
    }
}
