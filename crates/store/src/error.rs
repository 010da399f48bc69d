//! The store's error type.

use crate::Revision;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist.
    #[error("key {0:?} not found")]
    NotFound(String),
    /// The key exists already (on create).
    #[error("key {0:?} already exists")]
    AlreadyExists(String),
    /// The key changed since the expected revision.
    #[error("key {key:?} is at revision {current}, not {expected}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The key's latest revision.
        current: Revision,
    },
    /// Something under a prefix was written after the revision a
    /// transaction's [`crate::Op::Unchanged`] named.
    #[error("keys under {prefix:?} changed after revision {since}")]
    PrefixChanged {
        /// The prefix.
        prefix: String,
        /// The revision after which nothing was to change.
        since: Revision,
    },
    /// The requested revision was compacted away.
    #[error("revision {requested} is too old: history before {compacted} was compacted")]
    TooOld {
        /// The revision asked for.
        requested: Revision,
        /// The store's compacted revision.
        compacted: Revision,
    },
    /// A key that is empty, too long or has characters outside printable ASCII.
    #[error("invalid key {0:?}: keys are 1 to 1024 printable ASCII characters without spaces")]
    InvalidKey(String),
    /// The datastore URL names no known backend.
    #[error("unsupported datastore {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedScheme(String),
    /// The database file's directory could not be created or written.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// Connecting to the database failed.
    #[error("cannot connect to the {backend} datastore: {source}")]
    Connect {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Creating or migrating the schema failed.
    #[error("cannot prepare the datastore schema: {0}")]
    Schema(#[source] sqlx::Error),
    /// A query failed (database gone, disk full, …).
    #[error("datastore query failed: {0}")]
    Query(#[source] sqlx::Error),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// A load was refused: the datastore already holds data.
    #[error("the datastore is not empty: it is at revision {revision} with {objects} objects")]
    NotEmpty {
        /// Its current revision.
        revision: i64,
        /// Its live objects.
        objects: u64,
    },
    /// A load ended before it was complete; nothing of it was written.
    #[error("the load was abandoned before it was complete; nothing was written")]
    LoadAborted,
}

impl From<sqlx::Error> for StoreError {
    /// A query's failure; on a pool this process closed, [`StoreError::Closed`].
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolClosed => StoreError::Closed,
            other => StoreError::Query(other),
        }
    }
}

impl StoreError {
    /// Whether the error says the datastore itself is unavailable (as opposed
    /// to a problem with the request).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Connect { .. } | StoreError::Query(_) | StoreError::Closed
        )
    }
}
