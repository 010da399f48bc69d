//! Drover's versioned object store: the role etcd plays for Kubernetes.
//!
//! Every write gets a global, monotonically increasing *revision*, which the
//! resource API exposes as an object's `resourceVersion`. Updates are
//! compare-and-swap on it, `watch(prefix, from)` streams every change after a
//! revision in order, and compaction drops history so that a watch from a
//! compacted revision fails with [`StoreError::TooOld`] (HTTP 410 upstream).
//!
//! # Layout
//! - [`Store`]: the handle everyone uses; cheap to clone. It owns a
//!   [`Backend`] and a watch hub.
//! - [`Backend`]: the one trait a datastore implements (get, list, create,
//!   update, delete, changes-since, compact).
//! - `sql`: the backend over SQL, in two dialects: SQLite in WAL mode (the
//!   embedded default, `sqlite://DIR/state.db`) and PostgreSQL (`postgres://…`,
//!   for HA, with LISTEN/NOTIFY waking watchers in other processes).
//! - `watch`: one pump per store reads new log rows once and fans them out to
//!   every watcher; a watcher first catches up from the log, then follows the
//!   pump, so it sees each change exactly once and in order.
//! - `dump`: whole-store reads and loads for backups: a consistent
//!   [`Store::snapshot`], the raw log with write times
//!   ([`Store::log_since`]) and [`Store::load`] into an empty datastore.
//! - [`Follower`] and [`Store::follow`]: an in-memory view kept current from
//!   a watch, reloaded after a broken one; [`Mirror`], such a view of the
//!   parsed keys under a prefix, with change notification.
//!
//! # Data flow of a write
//! ```text
//! update(key, value, expected_rev)
//!   └─ BEGIN; revision = meta.revision + 1 (row lock serialises writers)
//!      check the key's latest log row against expected_rev
//!      INSERT log row (revision, key, value, …); NOTIFY (PostgreSQL); COMMIT
//!   └─ wake the pump ─▶ broadcast ─▶ watchers whose prefix matches
//! ```
//! Because writers are serialised on the revision counter and commit in
//! revision order, "every row with revision > R" never has a hole that a later
//! commit could fill.

mod dump;
mod error;
mod follow;
mod keys;
mod sql;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use dump::{Contents, Load, LogRow, Snapshot};
pub use error::StoreError;
pub use follow::{Follower, Mirror};
pub use keys::{prefix_end, validate_key};

/// A store revision: the value of the global write counter after a write.
pub type Revision = i64;

/// Result type of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One stored object as of some revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The object's key, e.g. `/registry/management.drover.io/clusters/c-abcde`.
    pub key: String,
    /// The object's bytes (JSON for everything Drover stores).
    pub value: Bytes,
    /// The revision at which the object was created.
    pub create_revision: Revision,
    /// The revision of the object's latest change (its `resourceVersion`).
    pub mod_revision: Revision,
}

/// What a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The key was created.
    Added,
    /// The key was updated.
    Modified,
    /// The key was deleted; the event carries its last value.
    Deleted,
}

/// One change, as delivered by [`Store::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Kind of change.
    pub kind: EventType,
    /// The object after the change (for a deletion: its last value, with
    /// `mod_revision` set to the revision of the deletion).
    pub kv: KeyValue,
}

impl Event {
    /// The revision at which this change happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only keys starting with this prefix.
    pub prefix: String,
    /// Only keys strictly after this one (for `continue`).
    pub start_after: Option<String>,
    /// At most this many items.
    pub limit: Option<usize>,
    /// List the state as of this revision (must not be compacted); `None`
    /// means the current revision.
    pub revision: Option<Revision>,
}

/// One step of a transaction ([`Store::txn`]): a write, or a condition
/// the whole transaction depends on. Conditions are about the store as it
/// was before the transaction (they are checked before its writes); every
/// write gets its own revision, in the order given. A failed step fails
/// the transaction and nothing of it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create `key`; [`StoreError::AlreadyExists`] if it exists.
    Create {
        /// The key.
        key: String,
        /// Its value.
        value: Bytes,
    },
    /// Replace `key` if its latest revision is `expected`.
    Update {
        /// The key.
        key: String,
        /// The new value.
        value: Bytes,
        /// The revision the caller read.
        expected: Revision,
    },
    /// Delete `key` (only at revision `expected`, if given).
    Delete {
        /// The key.
        key: String,
        /// The revision the caller read, if it matters.
        expected: Option<Revision>,
    },
    /// Require `key` to be at `revision` (`None`: to be absent). Writes
    /// nothing; [`StoreError::Conflict`] (or [`StoreError::AlreadyExists`],
    /// [`StoreError::NotFound`]) otherwise.
    Check {
        /// The key.
        key: String,
        /// Its expected latest revision, or `None` for absent.
        revision: Option<Revision>,
    },
    /// Require `key` to exist as the object created at `created` (its
    /// `create_revision`): the same one, whatever its later updates, and not
    /// one deleted and made again. Writes nothing; [`StoreError::NotFound`]
    /// or [`StoreError::Conflict`] otherwise.
    Live {
        /// The key.
        key: String,
        /// The revision that created it.
        created: Revision,
    },
    /// Require that nothing under `prefix` was written after `since`
    /// (so a list read at `since` is still whole). Writes nothing;
    /// [`StoreError::PrefixChanged`] otherwise.
    Unchanged {
        /// The prefix.
        prefix: String,
        /// The revision the caller listed at.
        since: Revision,
    },
}

impl Op {
    /// Create `key` with `value`.
    pub fn create(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Op::Create {
            key: key.into(),
            value: value.into(),
        }
    }

    /// Replace `key`, read at `expected`, with `value`.
    pub fn update(key: impl Into<String>, value: impl Into<Bytes>, expected: Revision) -> Self {
        Op::Update {
            key: key.into(),
            value: value.into(),
            expected,
        }
    }

    /// Delete `key`, read at `expected`.
    pub fn delete(key: impl Into<String>, expected: Revision) -> Self {
        Op::Delete {
            key: key.into(),
            expected: Some(expected),
        }
    }

    /// Require `key` at `revision` (`None`: absent).
    pub fn check(key: impl Into<String>, revision: Option<Revision>) -> Self {
        Op::Check {
            key: key.into(),
            revision,
        }
    }

    /// Require `kv`'s key to be still the object `kv` was read as (not
    /// deleted, not made again), whatever its later updates.
    pub fn live(kv: &KeyValue) -> Self {
        Op::Live {
            key: kv.key.clone(),
            created: kv.create_revision,
        }
    }

    /// The key this step is about (the prefix, for [`Op::Unchanged`]).
    pub fn key(&self) -> &str {
        match self {
            Op::Create { key, .. }
            | Op::Update { key, .. }
            | Op::Delete { key, .. }
            | Op::Check { key, .. }
            | Op::Live { key, .. } => key,
            Op::Unchanged { prefix, .. } => prefix,
        }
    }

    /// Whether the step writes.
    pub fn writes(&self) -> bool {
        !matches!(
            self,
            Op::Check { .. } | Op::Live { .. } | Op::Unchanged { .. }
        )
    }
}

/// The answer to a list.
#[derive(Debug, Clone)]
pub struct ListResult {
    /// Items in key order.
    pub items: Vec<KeyValue>,
    /// The revision the list is consistent at.
    pub revision: Revision,
    /// Whether more items follow the last one returned.
    pub more: bool,
}

/// The revisions a store is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revisions {
    /// The latest revision written.
    pub current: Revision,
    /// History at or below this revision may be gone.
    pub compacted: Revision,
}

/// The operations a datastore implements. Everything above the store (the
/// resource API, controllers) goes through [`Store`], never a backend.
pub trait Backend: Send + Sync + 'static {
    /// A short name for health reports and logs (`sqlite`, `postgres`).
    fn name(&self) -> &'static str;
    /// The current and compacted revisions.
    fn revisions(&self) -> BoxFuture<'_, Result<Revisions>>;
    /// The latest value of `key`, if it exists.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>>;
    /// Keys under a prefix at one consistent revision.
    fn list<'a>(&'a self, opts: &'a ListOptions) -> BoxFuture<'a, Result<ListResult>>;
    /// How many keys under the prefix (after `start_after`) exist at the
    /// revision (`None`: the current one); the limit is ignored.
    fn count<'a>(&'a self, opts: &'a ListOptions) -> BoxFuture<'a, Result<i64>>;
    /// Create `key`; fails with [`StoreError::AlreadyExists`] if it exists.
    fn create<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<KeyValue>>;
    /// Create every key, in one transaction: all or none.
    fn create_all<'a>(
        &'a self,
        items: &'a [(String, Bytes)],
    ) -> BoxFuture<'a, Result<Vec<KeyValue>>>;
    /// Run a transaction: every step or none ([`Store::txn`]). Returns one
    /// [`KeyValue`] per writing step, in order.
    fn txn<'a>(&'a self, ops: &'a [Op]) -> BoxFuture<'a, Result<Vec<KeyValue>>>;
    /// Replace `key` if its latest revision is `expected`.
    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        expected: Revision,
    ) -> BoxFuture<'a, Result<KeyValue>>;
    /// Delete `key`, if `expected` is given only at that revision. Returns the
    /// last value, with `mod_revision` set to the deletion's revision.
    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<Revision>,
    ) -> BoxFuture<'a, Result<KeyValue>>;
    /// Up to `limit` changes under `prefix` with revision > `after`, in order.
    fn changes_since<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Event>>>;
    /// Drop history so that only the last `keep` revisions remain watchable,
    /// and none after `ceiling` (when given) is dropped. Returns the new
    /// compacted revision.
    fn compact(&self, keep: i64, ceiling: Option<Revision>) -> BoxFuture<'_, Result<Revision>>;
    /// Resolves each time something may have been written (by this process or,
    /// where the backend can tell, by another one).
    fn wait_for_change(&self) -> BoxFuture<'_, ()>;
    /// How often the watch pump polls even without a wake-up.
    fn poll_interval(&self) -> Duration;
    /// Close connections.
    fn close(&self) -> BoxFuture<'_, ()>;
    /// See [`Store::snapshot`].
    fn snapshot(
        &self,
        batch: usize,
        out: tokio::sync::mpsc::Sender<Snapshot>,
    ) -> BoxFuture<'_, Result<()>>;
    /// See [`Store::log_since`].
    fn log_since(&self, after: Revision, limit: usize) -> BoxFuture<'_, Result<Vec<LogRow>>>;
    /// See [`Store::contents`].
    fn contents(&self) -> BoxFuture<'_, Result<Contents>>;
    /// See [`Store::load`].
    fn load(
        &self,
        replace: bool,
        rows: tokio::sync::mpsc::Receiver<Load>,
    ) -> BoxFuture<'_, Result<Contents>>;
}

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long to wait for a database connection before giving up.
    pub connect_timeout: Duration,
    /// Maximum connections in the pool.
    pub max_connections: u32,
    /// How often watches look for writes made by other processes, where
    /// the backend cannot be told of them (SQLite); `None` keeps the
    /// backend's default. A process that is the file's only writer can
    /// poll rarely: its own writes wake watches at once.
    pub poll_interval: Option<Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            max_connections: 16,
            poll_interval: None,
        }
    }
}

/// A handle to the versioned store. Cheap to clone; all clones share one
/// connection pool and one watch pump.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    hub: Arc<watch::Hub>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend.name())
            .finish()
    }
}

impl Store {
    /// Open the datastore named by `url`: `sqlite://PATH` or `postgres://…`
    /// (also `postgresql://…`). Creates the schema if needed.
    pub async fn open(url: &str, opts: StoreOptions) -> Result<Self> {
        let backend: Arc<dyn Backend> = Arc::new(sql::SqlBackend::open(url, &opts).await?);
        Self::from_backend(backend).await
    }

    /// Wrap an already opened backend.
    pub async fn from_backend(backend: Arc<dyn Backend>) -> Result<Self> {
        let start = backend.revisions().await?.current;
        let hub = watch::Hub::start(backend.clone(), start);
        Ok(Self { backend, hub })
    }

    /// The backend's short name (`sqlite`, `postgres`).
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The current and compacted revisions; also a cheap health check.
    pub async fn revisions(&self) -> Result<Revisions> {
        self.backend.revisions().await
    }

    /// The highest revision this process has committed (0 before any). A
    /// watcher that has seen this revision has seen every local write.
    pub fn last_local_write(&self) -> Revision {
        self.hub.last_local_write()
    }

    /// The latest value of `key`.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        validate_key(key)?;
        self.backend.get(key).await
    }

    /// Keys under a prefix at one consistent revision, with limit/continue.
    pub async fn list(&self, opts: &ListOptions) -> Result<ListResult> {
        self.backend.list(opts).await
    }

    /// How many keys a list with these options would return without a
    /// limit (for `metadata.remainingItemCount`).
    pub async fn count(&self, opts: &ListOptions) -> Result<i64> {
        self.backend.count(opts).await
    }

    /// Create `key` with `value`; [`StoreError::AlreadyExists`] if it exists.
    pub async fn create(&self, key: &str, value: impl Into<Bytes>) -> Result<KeyValue> {
        validate_key(key)?;
        let kv = self.backend.create(key, value.into()).await?;
        self.hub.written(kv.mod_revision);
        Ok(kv)
    }

    /// Create every key in one transaction, all or none; fails with
    /// [`StoreError::AlreadyExists`] (naming the key) if any exists.
    pub async fn create_all<K, V>(&self, items: &[(K, V)]) -> Result<Vec<KeyValue>>
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let items: Vec<(String, Bytes)> = items
            .iter()
            .map(|(k, v)| {
                validate_key(k.as_ref())?;
                Ok((k.as_ref().to_owned(), Bytes::copy_from_slice(v.as_ref())))
            })
            .collect::<Result<_>>()?;
        let kvs = self.backend.create_all(&items).await?;
        self.hub
            .written(kvs.iter().map(|kv| kv.mod_revision).max().unwrap_or(0));
        Ok(kvs)
    }

    /// Run `ops` as one transaction: all of them or none. Each write gets
    /// its own revision, in order; checks ([`Op::Check`], [`Op::Unchanged`])
    /// hold at commit, since writers are serialised. Returns one
    /// [`KeyValue`] per writing step, in order. An empty transaction does
    /// nothing.
    pub async fn txn(&self, ops: &[Op]) -> Result<Vec<KeyValue>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        for op in ops {
            match op {
                Op::Unchanged { .. } => {}
                other => validate_key(other.key())?,
            }
        }
        let kvs = self.backend.txn(ops).await?;
        if let Some(rev) = kvs.iter().map(|kv| kv.mod_revision).max() {
            self.hub.written(rev);
        }
        Ok(kvs)
    }

    /// Replace `key` if its `mod_revision` is still `expected`; otherwise
    /// [`StoreError::Conflict`] (or [`StoreError::NotFound`]).
    pub async fn update(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        expected: Revision,
    ) -> Result<KeyValue> {
        validate_key(key)?;
        let kv = self.backend.update(key, value.into(), expected).await?;
        self.hub.written(kv.mod_revision);
        Ok(kv)
    }

    /// Delete `key` (only at revision `expected`, if given).
    pub async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        validate_key(key)?;
        let kv = self.backend.delete(key, expected).await?;
        self.hub.written(kv.mod_revision);
        Ok(kv)
    }

    /// Every change under `prefix` with a revision greater than `after`,
    /// in order, each exactly once; then every later change as it happens.
    /// Fails with [`StoreError::TooOld`] when `after` was compacted away.
    pub fn watch(&self, prefix: &str, after: Revision) -> BoxStream<'static, Result<Event>> {
        self.hub
            .watch(self.backend.clone(), prefix.to_owned(), after)
    }

    /// Keep only the last `keep` revisions of history; returns the compacted
    /// revision.
    pub async fn compact(&self, keep: i64) -> Result<Revision> {
        self.backend.compact(keep, None).await
    }

    /// As [`Store::compact`], but never past `ceiling` (when given): the
    /// log after it is still needed (by the log archive).
    pub async fn compact_at_most(&self, keep: i64, ceiling: Option<Revision>) -> Result<Revision> {
        self.backend.compact(keep, ceiling).await
    }

    /// Compact every `every`, keeping the last `keep` revisions, until the
    /// store closes. Idempotent, so every replica may run it.
    pub fn spawn_compaction(&self, every: Duration, keep: i64) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match store.compact(keep).await {
                    Ok(_) => {}
                    Err(StoreError::Closed) => return,
                    Err(e) => tracing::warn!(error = %e, "compaction failed; retrying later"),
                }
            }
        })
    }

    /// Stop the watch pump and close connections.
    pub async fn close(&self) {
        self.hub.stop();
        self.backend.close().await;
    }
}
