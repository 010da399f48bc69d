//! The store over SQL, in two dialects sharing one code path through sqlx's
//! `Any` driver: SQLite in WAL mode and PostgreSQL.
//!
//! Schema: `drover_meta` holds the global revision counter and the compacted
//! revision; `drover_log` holds one row per write (kine's design). The latest
//! row of a key is its current state; a row with `deleted = 1` is a tombstone
//! carrying the last value. A write first bumps the counter, which holds the
//! counter's row lock (PostgreSQL) or the database write lock (SQLite) until
//! commit, so writes commit in revision order and watchers never see a hole.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Connection, Executor, Row};
use tokio::sync::{mpsc, Mutex, Notify};
use tokio::task::JoinHandle;

use crate::dump::{Contents, Load, LogRow, Snapshot};
use crate::keys::prefix_end;
use crate::{
    Backend, Event, EventType, KeyValue, ListOptions, ListResult, Op, Result, Revision, Revisions,
    StoreError, StoreOptions,
};

/// The PostgreSQL channel on which every commit notifies watchers.
const NOTIFY_CHANNEL: &str = "drover_store";
/// Greater than every valid key (keys are printable ASCII).
const KEY_MAX: &str = "\u{7f}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS drover_meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        revision INTEGER NOT NULL,
        compacted INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO drover_meta (id, revision, compacted) VALUES (1, 0, 0)",
    "CREATE TABLE IF NOT EXISTS drover_log (
        revision INTEGER PRIMARY KEY,
        key TEXT NOT NULL,
        created INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        create_revision INTEGER NOT NULL,
        value BLOB NOT NULL,
        at INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS drover_log_key_revision ON drover_log (key, revision)",
];

const POSTGRES_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS drover_meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        revision BIGINT NOT NULL,
        compacted BIGINT NOT NULL)",
    "INSERT INTO drover_meta (id, revision, compacted) VALUES (1, 0, 0) ON CONFLICT DO NOTHING",
    "CREATE TABLE IF NOT EXISTS drover_log (
        revision BIGINT PRIMARY KEY,
        key TEXT COLLATE \"C\" NOT NULL,
        created BIGINT NOT NULL,
        deleted BIGINT NOT NULL,
        create_revision BIGINT NOT NULL,
        value BYTEA NOT NULL,
        at BIGINT NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS drover_log_key_revision ON drover_log (key, revision)",
];

/// Columns every log query selects, in this order.
const LOG_COLUMNS: &str = "revision, key, created, deleted, create_revision, value";
/// Columns of a raw log row ([`LogRow`]).
const ROW_COLUMNS: &str = "revision, key, deleted, create_revision, value, at";
/// Rows per INSERT when loading.
const LOAD_CHUNK: usize = 200;
/// The latest row of each live key (`l`), as of the transaction's snapshot.
const LIVE_ROWS: &str = "FROM drover_log l WHERE l.deleted = 0 AND NOT EXISTS (
    SELECT 1 FROM drover_log m WHERE m.key = l.key AND m.revision > l.revision)";

/// The SQL backend.
pub(crate) struct SqlBackend {
    pool: AnyPool,
    dialect: Dialect,
    /// Serialises this process's SQLite writers so they queue here instead of
    /// sleeping in SQLite's busy handler. PostgreSQL writers are serialised by
    /// the counter's row lock instead.
    write_lock: Mutex<()>,
    /// Woken by the PostgreSQL listener on every remote commit.
    remote_change: Arc<Notify>,
    listener: Option<JoinHandle<()>>,
    /// See [`StoreOptions::poll_interval`].
    poll: Duration,
}

struct LatestRow {
    revision: Revision,
    create_revision: Revision,
    value: Vec<u8>,
}

impl SqlBackend {
    pub(crate) async fn open(url: &str, opts: &StoreOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        if let Some(path) = url.strip_prefix("sqlite://") {
            Self::open_sqlite(path, opts).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url, opts).await
        } else {
            let scheme = url.split(':').next().unwrap_or_default();
            Err(StoreError::UnsupportedScheme(
                scheme.chars().take(32).collect(),
            ))
        }
    }

    async fn open_sqlite(path: &str, opts: &StoreOptions) -> Result<Self> {
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(StoreError::UnsupportedScheme(
                "sqlite:// without a path".into(),
            ));
        }
        let dir = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
            check_writable(dir)?;
        }
        let encoded = path
            .replace('%', "%25")
            .replace('?', "%3F")
            .replace('#', "%23");
        let any: AnyConnectOptions = format!("sqlite://{encoded}?mode=rwc")
            .parse()
            .map_err(|source| connect_error(Dialect::Sqlite, source))?;
        let pool = AnyPoolOptions::new()
            .max_connections(opts.max_connections.clamp(1, 8))
            .acquire_timeout(opts.connect_timeout)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA busy_timeout = 30000").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    Ok(())
                })
            })
            .connect_with(any)
            .await
            .map_err(|source| connect_error(Dialect::Sqlite, source))?;
        // WAL is a property of the database file; setting it once persists it.
        pool.execute("PRAGMA journal_mode = WAL")
            .await
            .map_err(StoreError::Schema)?;
        for stmt in SQLITE_SCHEMA {
            pool.execute(*stmt).await.map_err(StoreError::Schema)?;
        }
        // Stores made before commit times were kept (SQLite has no
        // `ADD COLUMN IF NOT EXISTS`).
        let has_at: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pragma_table_info('drover_log') WHERE name = 'at'",
        )
        .fetch_one(&pool)
        .await
        .map_err(StoreError::Schema)?;
        if has_at == 0 {
            pool.execute("ALTER TABLE drover_log ADD COLUMN at INTEGER NOT NULL DEFAULT 0")
                .await
                .map_err(StoreError::Schema)?;
        }
        Ok(Self {
            pool,
            dialect: Dialect::Sqlite,
            write_lock: Mutex::new(()),
            remote_change: Arc::new(Notify::new()),
            listener: None,
            poll: opts.poll_interval.unwrap_or(Duration::from_millis(500)),
        })
    }

    async fn open_postgres(url: &str, opts: &StoreOptions) -> Result<Self> {
        use sqlx::postgres::{PgConnectOptions, PgConnection};
        let pg: PgConnectOptions = url
            .parse()
            .map_err(|source| connect_error(Dialect::Postgres, source))?;
        // Schema changes run on one connection under an advisory lock, so
        // replicas starting together do not race on CREATE TABLE.
        let mut conn = tokio::time::timeout(opts.connect_timeout, PgConnection::connect_with(&pg))
            .await
            .map_err(|_| connect_error(Dialect::Postgres, sqlx::Error::PoolTimedOut))?
            .map_err(|source| connect_error(Dialect::Postgres, source))?;
        let lock = "SELECT 1 FROM (SELECT pg_advisory_lock(7239001)) AS locked";
        conn.execute(lock).await.map_err(StoreError::Schema)?;
        // A schema change waits at most this long for a lock (a backup's
        // long read holds one) rather than queueing every writer behind it.
        conn.execute("SET lock_timeout = '10s'")
            .await
            .map_err(StoreError::Schema)?;
        for stmt in POSTGRES_SCHEMA {
            conn.execute(*stmt).await.map_err(StoreError::Schema)?;
        }
        // Stores made before commit times were kept. Checked first: even
        // `ADD COLUMN IF NOT EXISTS` takes the table's exclusive lock.
        let has_at: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'drover_log' AND column_name = 'at'",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(StoreError::Schema)?;
        if has_at == 0 {
            conn.execute("ALTER TABLE drover_log ADD COLUMN at BIGINT NOT NULL DEFAULT 0")
                .await
                .map_err(StoreError::Schema)?;
        }
        let _ = conn.close().await;

        let any: AnyConnectOptions = url
            .parse()
            .map_err(|source| connect_error(Dialect::Postgres, source))?;
        let pool = AnyPoolOptions::new()
            .max_connections(opts.max_connections.max(2))
            .acquire_timeout(opts.connect_timeout)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // A client that vanishes mid-write must not hold the
                    // revision lock (and so every replica's writes) for long.
                    conn.execute("SET statement_timeout = '30s'").await?;
                    conn.execute("SET lock_timeout = '10s'").await?;
                    conn.execute("SET idle_in_transaction_session_timeout = '30s'")
                        .await?;
                    Ok(())
                })
            })
            .connect_with(any)
            .await
            .map_err(|source| connect_error(Dialect::Postgres, source))?;

        let remote_change = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(pg, remote_change.clone()));
        Ok(Self {
            pool,
            dialect: Dialect::Postgres,
            write_lock: Mutex::new(()),
            remote_change,
            listener: Some(listener),
            poll: opts.poll_interval.unwrap_or(Duration::from_secs(2)),
        })
    }

    /// Steps in one transaction, all or none: conditions are checked and
    /// each write bumps the revision, checks the key's latest row and
    /// appends a row.
    async fn write_all(&self, ops: &[Op]) -> Result<Vec<KeyValue>> {
        let _local = match self.dialect {
            Dialect::Sqlite => Some(self.write_lock.lock().await),
            Dialect::Postgres => None,
        };
        let mut tx = self.pool.begin().await?;
        if ops.iter().any(|op| !op.writes()) {
            // Take the writers' lock first, so that no other writer commits
            // between a condition and this transaction's commit.
            sqlx::query("UPDATE drover_meta SET revision = revision WHERE id = 1")
                .execute(&mut *tx)
                .await?;
        }
        // Conditions are about the store as the caller read it: they are
        // checked before this transaction's own writes.
        for op in ops {
            match op {
                Op::Check { key, revision } => check_key(&mut tx, key, *revision).await?,
                Op::Live { key, created } => check_live(&mut tx, key, *created).await?,
                Op::Unchanged { prefix, since } => check_unchanged(&mut tx, prefix, *since).await?,
                _ => {}
            }
        }
        // One time for the whole transaction: a point-in-time restore
        // takes all of it or none.
        let at = crate::dump::now_micros();
        let mut done = Vec::with_capacity(ops.len());
        for op in ops.iter().filter(|op| op.writes()) {
            done.push(write_one(&mut tx, op, at).await?);
        }
        if self.dialect == Dialect::Postgres && !done.is_empty() {
            // Delivered to listeners when (and only if) the transaction commits.
            tx.execute(format!("NOTIFY {NOTIFY_CHANNEL}").as_str())
                .await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    /// [`StoreError::TooOld`] if history after `after` was compacted.
    /// Checked after reading rows: rows read before a compaction finished
    /// may already be incomplete.
    async fn check_not_compacted(&self, after: Revision) -> Result<()> {
        let compacted = self.revisions().await?.compacted;
        if after < compacted {
            return Err(StoreError::TooOld {
                requested: after,
                compacted,
            });
        }
        Ok(())
    }

    /// One write: see [`Self::write_all`].
    async fn write(&self, op: Op) -> Result<KeyValue> {
        let mut kvs = self.write_all(std::slice::from_ref(&op)).await?;
        Ok(kvs.remove(0))
    }

    async fn list_at(&self, opts: &ListOptions, revision: Revision) -> Result<ListResult> {
        let end = prefix_end(&opts.prefix).unwrap_or_else(|| KEY_MAX.to_owned());
        let limit = opts.limit.map(|l| l.max(1) as i64).unwrap_or(i64::MAX - 1);
        // The latest row of each key at the revision: one with no later row
        // of its key. Written as an anti-join over the same key range (not a
        // `MAX` subquery), PostgreSQL walks the (key, revision) index in key
        // order and stops at the limit; with `MAX` it estimated a few rows,
        // scanned and sorted the whole rest of the range for every page, and
        // 20 pages of 500 took 250 ms instead of 20.
        let rows = sqlx::query(
            "SELECT l.key, l.value, l.create_revision, l.revision FROM drover_log l
             WHERE l.key >= $1 AND l.key < $2 AND l.key > $3
               AND l.revision <= $4 AND l.deleted = 0
               AND NOT EXISTS (SELECT 1 FROM drover_log m
                               WHERE m.key = l.key AND m.revision > l.revision
                                 AND m.revision <= $4
                                 AND m.key >= $1 AND m.key < $2 AND m.key > $3)
             ORDER BY l.key LIMIT $5",
        )
        .bind(opts.prefix.as_str())
        .bind(end.as_str())
        .bind(opts.start_after.as_deref().unwrap_or(""))
        .bind(revision)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut items = rows
            .iter()
            .map(|row| {
                Ok(KeyValue {
                    key: row.try_get("key")?,
                    value: Bytes::from(row.try_get::<Vec<u8>, _>("value")?),
                    create_revision: row.try_get("create_revision")?,
                    mod_revision: row.try_get("revision")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        Ok(ListResult {
            items,
            revision,
            more,
        })
    }
}

/// The latest live row of a key, inside a transaction.
async fn latest(tx: &mut sqlx::Transaction<'_, sqlx::Any>, key: &str) -> Result<Option<LatestRow>> {
    sqlx::query(
        "SELECT revision, deleted, create_revision, value FROM drover_log
         WHERE key = $1 ORDER BY revision DESC LIMIT 1",
    )
    .bind(key)
    .fetch_optional(&mut **tx)
    .await?
    .map(|row| -> Result<Option<LatestRow>> {
        let deleted: i64 = row.try_get("deleted")?;
        Ok((deleted == 0).then_some(LatestRow {
            revision: row.try_get("revision")?,
            create_revision: row.try_get("create_revision")?,
            value: row.try_get("value")?,
        }))
    })
    .transpose()
    .map(Option::flatten)
}

/// [`Op::Check`]: the key is at `revision` (`None`: absent).
async fn check_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    key: &str,
    revision: Option<Revision>,
) -> Result<()> {
    match (latest(tx, key).await?, revision) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(StoreError::AlreadyExists(key.to_owned())),
        (None, Some(_)) => Err(StoreError::NotFound(key.to_owned())),
        (Some(live), Some(expected)) if live.revision == expected => Ok(()),
        (Some(live), Some(expected)) => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected,
            current: live.revision,
        }),
    }
}

/// [`Op::Live`]: the key exists, created at `created`.
async fn check_live(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    key: &str,
    created: Revision,
) -> Result<()> {
    match latest(tx, key).await? {
        None => Err(StoreError::NotFound(key.to_owned())),
        Some(live) if live.create_revision == created => Ok(()),
        Some(live) => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected: created,
            current: live.create_revision,
        }),
    }
}

/// [`Op::Unchanged`]: no row under `prefix` after `since`.
async fn check_unchanged(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    prefix: &str,
    since: Revision,
) -> Result<()> {
    let end = prefix_end(prefix).unwrap_or_else(|| KEY_MAX.to_owned());
    let later = sqlx::query(
        "SELECT revision FROM drover_log
         WHERE key >= $1 AND key < $2 AND revision > $3 LIMIT 1",
    )
    .bind(prefix)
    .bind(end.as_str())
    .bind(since)
    .fetch_optional(&mut **tx)
    .await?;
    match later {
        None => Ok(()),
        Some(_) => Err(StoreError::PrefixChanged {
            prefix: prefix.to_owned(),
            since,
        }),
    }
}

/// One write inside a transaction.
async fn write_one(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    op: &Op,
    at: i64,
) -> Result<KeyValue> {
    let revision: i64 = sqlx::query_scalar(
        "UPDATE drover_meta SET revision = revision + 1 WHERE id = 1 RETURNING revision",
    )
    .fetch_one(&mut **tx)
    .await?;
    let key = op.key();
    let latest = latest(tx, key).await?;

    let check = |expected: Revision, live: &LatestRow| {
        if live.revision == expected {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                key: key.to_owned(),
                expected,
                current: live.revision,
            })
        }
    };
    let not_found = || StoreError::NotFound(key.to_owned());
    let (created, deleted, create_revision, value) = match op {
        Op::Create { value, .. } => {
            if latest.is_some() {
                return Err(StoreError::AlreadyExists(key.to_owned()));
            }
            (1, 0, revision, value.clone())
        }
        Op::Update {
            value, expected, ..
        } => {
            let live = latest.ok_or_else(not_found)?;
            check(*expected, &live)?;
            (0, 0, live.create_revision, value.clone())
        }
        Op::Delete { expected, .. } => {
            let live = latest.ok_or_else(not_found)?;
            if let Some(expected) = expected {
                check(*expected, &live)?;
            }
            (0, 1, live.create_revision, Bytes::from(live.value))
        }
        Op::Check { .. } | Op::Live { .. } | Op::Unchanged { .. } => {
            unreachable!("conditions write nothing")
        }
    };
    sqlx::query(
        "INSERT INTO drover_log (revision, key, created, deleted, create_revision, value, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(revision)
    .bind(key)
    .bind(created as i64)
    .bind(deleted as i64)
    .bind(create_revision)
    .bind(&value[..])
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(KeyValue {
        key: key.to_owned(),
        value,
        create_revision,
        mod_revision: revision,
    })
}

/// Fail early, with the directory's name, when the data directory is not
/// writable (SQLite would only say "unable to open database file").
fn check_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".drover-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|source| StoreError::DataDir {
            path: dir.display().to_string(),
            source,
        })
}

fn connect_error(dialect: Dialect, source: sqlx::Error) -> StoreError {
    StoreError::Connect {
        backend: dialect.name(),
        source,
    }
}

fn event_from_row(row: &AnyRow) -> Result<Event> {
    let created: i64 = row.try_get("created")?;
    let deleted: i64 = row.try_get("deleted")?;
    let kind = if deleted != 0 {
        EventType::Deleted
    } else if created != 0 {
        EventType::Added
    } else {
        EventType::Modified
    };
    Ok(Event {
        kind,
        kv: KeyValue {
            key: row.try_get("key")?,
            value: Bytes::from(row.try_get::<Vec<u8>, _>("value")?),
            create_revision: row.try_get("create_revision")?,
            mod_revision: row.try_get("revision")?,
        },
    })
}

/// Follow PostgreSQL notifications and wake the watch pump on each; after a
/// lost connection, wake it anyway so it re-reads whatever it missed.
async fn listen(opts: sqlx::postgres::PgConnectOptions, wake: Arc<Notify>) {
    use sqlx::postgres::PgListener;
    loop {
        let mut listener =
            match PgListener::connect_with(&sqlx::PgPool::connect_lazy_with(opts.clone())).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "datastore listener cannot connect; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
        if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
            tracing::warn!(error = %e, "datastore LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => wake.notify_one(),
                Ok(None) => wake.notify_one(), // reconnected: resynchronise
                Err(e) => {
                    tracing::warn!(error = %e, "datastore listener failed; reconnecting");
                    wake.notify_one();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

impl Drop for SqlBackend {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

impl Backend for SqlBackend {
    fn name(&self) -> &'static str {
        self.dialect.name()
    }

    fn revisions(&self) -> BoxFuture<'_, Result<Revisions>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT revision, compacted FROM drover_meta WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
            Ok(Revisions {
                current: row.try_get("revision")?,
                compacted: row.try_get("compacted")?,
            })
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        Box::pin(async move {
            let row = sqlx::query(&format!(
                "SELECT {LOG_COLUMNS} FROM drover_log WHERE key = $1 ORDER BY revision DESC LIMIT 1"
            ))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
            match row {
                Some(row) => {
                    let event = event_from_row(&row)?;
                    Ok((event.kind != EventType::Deleted).then_some(event.kv))
                }
                None => Ok(None),
            }
        })
    }

    fn count<'a>(&'a self, opts: &'a ListOptions) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async move {
            let before = self.revisions().await?;
            let revision = opts.revision.unwrap_or(before.current);
            let end = prefix_end(&opts.prefix).unwrap_or_else(|| KEY_MAX.to_owned());
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM drover_log l
                 WHERE l.key >= $1 AND l.key < $2 AND l.key > $3
                   AND l.revision <= $4 AND l.deleted = 0
                   AND NOT EXISTS (SELECT 1 FROM drover_log m
                                   WHERE m.key = l.key AND m.revision > l.revision
                                     AND m.revision <= $4
                                     AND m.key >= $1 AND m.key < $2 AND m.key > $3)",
            )
            .bind(opts.prefix.as_str())
            .bind(end.as_str())
            .bind(opts.start_after.as_deref().unwrap_or(""))
            .bind(revision)
            .fetch_one(&self.pool)
            .await?;
            // Rows read after a compaction past the revision may be short.
            self.check_not_compacted(revision).await?;
            Ok(count)
        })
    }

    fn list<'a>(&'a self, opts: &'a ListOptions) -> BoxFuture<'a, Result<ListResult>> {
        Box::pin(async move {
            // Compaction may run between reading the revision and the rows;
            // re-check afterwards and, for "current" lists, try again.
            for _ in 0..3 {
                let before = self.revisions().await?;
                let revision = opts.revision.unwrap_or(before.current);
                if revision < before.compacted {
                    return Err(StoreError::TooOld {
                        requested: revision,
                        compacted: before.compacted,
                    });
                }
                let result = self.list_at(opts, revision).await?;
                let after = self.revisions().await?;
                if after.compacted <= revision {
                    return Ok(result);
                }
                if opts.revision.is_some() {
                    return Err(StoreError::TooOld {
                        requested: revision,
                        compacted: after.compacted,
                    });
                }
            }
            Err(StoreError::Query(sqlx::Error::Protocol(
                "list kept racing with compaction".into(),
            )))
        })
    }

    fn create<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<KeyValue>> {
        Box::pin(self.write(Op::create(key, value)))
    }

    fn create_all<'a>(
        &'a self,
        items: &'a [(String, Bytes)],
    ) -> BoxFuture<'a, Result<Vec<KeyValue>>> {
        Box::pin(async move {
            let ops: Vec<Op> = items
                .iter()
                .map(|(k, v)| Op::create(k.as_str(), v.clone()))
                .collect();
            self.write_all(&ops).await
        })
    }

    fn txn<'a>(&'a self, ops: &'a [Op]) -> BoxFuture<'a, Result<Vec<KeyValue>>> {
        Box::pin(self.write_all(ops))
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        expected: Revision,
    ) -> BoxFuture<'a, Result<KeyValue>> {
        Box::pin(self.write(Op::update(key, value, expected)))
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<Revision>,
    ) -> BoxFuture<'a, Result<KeyValue>> {
        Box::pin(self.write(Op::Delete {
            key: key.to_owned(),
            expected,
        }))
    }

    fn changes_since<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(async move {
            let end = prefix_end(prefix).unwrap_or_else(|| KEY_MAX.to_owned());
            let rows = sqlx::query(&format!(
                "SELECT {LOG_COLUMNS} FROM drover_log
                 WHERE revision > $1 AND key >= $2 AND key < $3
                 ORDER BY revision LIMIT $4"
            ))
            .bind(after)
            .bind(prefix)
            .bind(end.as_str())
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
            self.check_not_compacted(after).await?;
            rows.iter().map(event_from_row).collect()
        })
    }

    fn compact(&self, keep: i64, ceiling: Option<Revision>) -> BoxFuture<'_, Result<Revision>> {
        Box::pin(async move {
            let _local = match self.dialect {
                Dialect::Sqlite => Some(self.write_lock.lock().await),
                Dialect::Postgres => None,
            };
            let mut tx = self.pool.begin().await?;
            // Lock the counter row first so compaction and writers serialise.
            let row = sqlx::query(
                "UPDATE drover_meta SET revision = revision WHERE id = 1 RETURNING revision, compacted",
            )
            .fetch_one(&mut *tx)
            .await?;
            let current: i64 = row.try_get("revision")?;
            let compacted: i64 = row.try_get("compacted")?;
            let mut target = current - keep.max(0);
            if let Some(ceiling) = ceiling {
                target = target.min(ceiling);
            }
            if target <= compacted {
                return Ok(compacted);
            }
            // Drop rows superseded at or before the target, and tombstones
            // (their predecessors are superseded by them, so they go too).
            sqlx::query(
                "DELETE FROM drover_log WHERE revision <= $1 AND (deleted = 1 OR EXISTS (
                    SELECT 1 FROM drover_log n WHERE n.key = drover_log.key
                      AND n.revision > drover_log.revision AND n.revision <= $1))",
            )
            .bind(target)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE drover_meta SET compacted = $1 WHERE id = 1")
                .bind(target)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(target)
        })
    }

    fn wait_for_change(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match self.dialect {
                Dialect::Postgres => self.remote_change.notified().await,
                // Other processes writing the same SQLite file are caught by polling.
                Dialect::Sqlite => futures::future::pending().await,
            }
        })
    }

    fn poll_interval(&self) -> Duration {
        self.poll
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(listener) = &self.listener {
                listener.abort();
            }
            self.pool.close().await;
        })
    }
    fn snapshot(&self, batch: usize, out: mpsc::Sender<Snapshot>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            if self.dialect == Dialect::Postgres {
                // One snapshot for every read below, however long it takes.
                tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?;
                tx.execute("SET LOCAL statement_timeout = 0").await?;
                tx.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
                    .await?;
            }
            // SQLite's read transaction takes its snapshot at this first read.
            let at = contents(&mut tx).await?;
            let begin = Snapshot::Begin {
                revision: at.revision,
                objects: at.objects,
            };
            if out.send(begin).await.is_err() {
                return Ok(());
            }
            let query = format!(
                "SELECT l.revision, l.key, l.deleted, l.create_revision, l.value, l.at
                 {LIVE_ROWS} ORDER BY l.key"
            );
            let mut rows = sqlx::query(&query).fetch(&mut *tx);
            let mut pending = Vec::with_capacity(batch);
            while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
                pending.push(log_row(&row)?);
                if pending.len() >= batch {
                    let full = std::mem::replace(&mut pending, Vec::with_capacity(batch));
                    if out.send(Snapshot::Rows(full)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            drop(rows);
            if !pending.is_empty() {
                let _ = out.send(Snapshot::Rows(pending)).await;
            }
            tx.rollback().await?;
            Ok(())
        })
    }

    fn log_since(&self, after: Revision, limit: usize) -> BoxFuture<'_, Result<Vec<LogRow>>> {
        Box::pin(async move {
            let rows = sqlx::query(&format!(
                "SELECT {ROW_COLUMNS} FROM drover_log WHERE revision > $1
                 ORDER BY revision LIMIT $2"
            ))
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
            self.check_not_compacted(after).await?;
            rows.iter().map(log_row).collect()
        })
    }

    fn contents(&self) -> BoxFuture<'_, Result<Contents>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            contents(&mut conn).await
        })
    }

    fn load(
        &self,
        replace: bool,
        mut rows: mpsc::Receiver<Load>,
    ) -> BoxFuture<'_, Result<Contents>> {
        Box::pin(async move {
            let _local = match self.dialect {
                Dialect::Sqlite => Some(self.write_lock.lock().await),
                Dialect::Postgres => None,
            };
            let mut tx = self.pool.begin().await?;
            if self.dialect == Dialect::Postgres {
                tx.execute("SET LOCAL statement_timeout = 0").await?;
                tx.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
                    .await?;
            }
            // Hold the writers' lock for the whole load.
            sqlx::query("UPDATE drover_meta SET revision = revision WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            let before = contents(&mut tx).await?;
            if !before.is_empty() {
                if !replace {
                    return Err(StoreError::NotEmpty {
                        revision: before.revision,
                        objects: before.objects,
                    });
                }
                tx.execute("DELETE FROM drover_log").await?;
            }
            loop {
                match rows.recv().await {
                    Some(Load::Rows(batch)) => {
                        for chunk in batch.chunks(LOAD_CHUNK) {
                            insert_rows(&mut tx, chunk).await?;
                        }
                    }
                    Some(Load::Commit {
                        revision,
                        compacted,
                    }) => {
                        sqlx::query(
                            "UPDATE drover_meta SET revision = $1, compacted = $2 WHERE id = 1",
                        )
                        .bind(revision)
                        .bind(compacted)
                        .execute(&mut *tx)
                        .await?;
                        let after = contents(&mut tx).await?;
                        tx.commit().await?;
                        return Ok(after);
                    }
                    // Dropping the transaction rolls it back.
                    None => return Err(StoreError::LoadAborted),
                }
            }
        })
    }
}

/// A raw log row, from [`ROW_COLUMNS`].
fn log_row(row: &AnyRow) -> Result<LogRow> {
    let deleted: i64 = row.try_get("deleted")?;
    Ok(LogRow {
        revision: row.try_get("revision")?,
        key: row.try_get("key")?,
        create_revision: row.try_get("create_revision")?,
        deleted: deleted != 0,
        value: Bytes::from(row.try_get::<Vec<u8>, _>("value")?),
        at_micros: row.try_get("at")?,
    })
}

/// The revision and number of live objects, on one connection.
async fn contents(conn: &mut sqlx::AnyConnection) -> Result<Contents> {
    let revision: i64 = sqlx::query_scalar("SELECT revision FROM drover_meta WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let objects: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) {LIVE_ROWS}"))
        .fetch_one(&mut *conn)
        .await?;
    Ok(Contents {
        revision,
        objects: objects.max(0) as u64,
    })
}

/// Insert rows as they are, revisions included, in one statement.
async fn insert_rows(tx: &mut sqlx::Transaction<'_, sqlx::Any>, rows: &[LogRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut sql = String::from(
        "INSERT INTO drover_log (revision, key, created, deleted, create_revision, value, at) VALUES ",
    );
    for i in 0..rows.len() {
        let n = i * 7;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${},${},${},${},${},${},${})",
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6,
            n + 7
        ));
    }
    let mut query = sqlx::query(&sql);
    for row in rows {
        query = query
            .bind(row.revision)
            .bind(row.key.as_str())
            .bind(row.created() as i64)
            .bind(row.deleted as i64)
            .bind(row.create_revision)
            .bind(&row.value[..])
            .bind(row.at_micros);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}
