//! Restore, offline: a backup (and, for point-in-time recovery, the
//! archived log after it up to a time or a revision) is fetched into a
//! scratch directory and checked whole — version, key, checksum, that the
//! log has no gap — before the target datastore is even opened. Then it is
//! written in one transaction that commits only after the files were read
//! to their end again and matched their checksums. A refused restore
//! writes nothing.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use drover_store::{Contents, Load, LogRow, Revision, Store, StoreOptions};
use tokio::sync::mpsc;

use crate::archive::{parse_segment_name, SEGMENT_PREFIX};
use crate::format::{FileKind, Manifest, Reader};
use crate::{BackupError, Key, Location, Progress, ProgressFn, BACKUP_EXT};

/// Rows per batch sent to the datastore.
const BATCH: usize = 500;
/// Log rows fetched past `--to-revision`, so that a transaction that
/// straddles it is restored whole.
const TXN_MARGIN: Revision = 1000;

/// The datastore to restore into.
#[derive(Debug, Clone)]
pub enum Target {
    /// A server's data directory: its SQLite datastore.
    DataDir(PathBuf),
    /// A datastore URL (`sqlite://…`, `postgres://…`).
    Datastore(String),
}

impl Target {
    /// The datastore URL.
    pub fn url(&self) -> String {
        match self {
            Target::DataDir(dir) => format!("sqlite://{}", dir.join("state.db").display()),
            Target::Datastore(url) => url.clone(),
        }
    }
}

/// How to restore.
pub struct RestoreOptions<'a> {
    /// Where to.
    pub target: Target,
    /// Replace a datastore that holds data.
    pub force: bool,
    /// The key, for an encrypted backup.
    pub key: Option<Key>,
    /// Restore the state as of this time (needs `log_archive`).
    pub to_time: Option<SystemTime>,
    /// Restore the state as of this revision (needs `log_archive` unless it
    /// is a backup's own).
    pub to_revision: Option<Revision>,
    /// Where the log was archived (`--backup-log-archive` of the server).
    pub log_archive: Option<String>,
    /// A directory for downloads.
    pub scratch: PathBuf,
    /// Progress, for a terminal.
    pub progress: Option<ProgressFn<'a>>,
    /// Told what a `force` restore replaces, before it does.
    pub replacing: Option<&'a (dyn Fn(Contents) + Send + Sync)>,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The backup restored.
    pub backup: String,
    /// Its revision.
    pub backup_revision: Revision,
    /// The datastore's revision after the restore.
    pub revision: Revision,
    /// Objects in the datastore after the restore.
    pub objects: u64,
    /// Log rows replayed after the backup.
    pub replayed: u64,
    /// The time of the last row replayed.
    pub last_write: Option<SystemTime>,
}

/// Check a backup file whole (version, key, checksum, counts) without
/// restoring it; returns its manifest.
pub async fn verify(
    source: &str,
    key: Option<&Key>,
    scratch: &Path,
) -> Result<Manifest, BackupError> {
    let dir = tempfile::tempdir_in(ensure(scratch)?)?;
    let (path, _) = fetch_backup(source, None, None, dir.path()).await?;
    let key = key.cloned();
    tokio::task::spawn_blocking(move || check_file(&path, key.as_ref(), None))
        .await
        .map_err(|e| BackupError::Refused(e.to_string()))?
}

fn ensure(dir: &Path) -> Result<&Path, BackupError> {
    std::fs::create_dir_all(dir)?;
    Ok(dir)
}

/// Read a file to its end, checking everything; `rows` sees each row.
fn check_file(
    path: &Path,
    key: Option<&Key>,
    mut rows: Option<&mut dyn FnMut(LogRow) -> Result<(), BackupError>>,
) -> Result<Manifest, BackupError> {
    let file = std::fs::File::open(path)?;
    let mut reader = Reader::open(BufReader::with_capacity(256 * 1024, file), key)?;
    while let Some(row) = reader.next_row()? {
        if let Some(f) = rows.as_mut() {
            f(row)?;
        }
    }
    let header = reader.header().clone();
    let trailer = reader
        .trailer()
        .cloned()
        .ok_or_else(|| BackupError::Corrupt("no trailer".into()))?;
    Ok(Manifest { header, trailer })
}

/// [`check_file`] on a blocking thread, reporting progress; also says
/// whether a row was written after `to_time` (microseconds).
async fn check_async(
    path: PathBuf,
    key: Option<Key>,
    to_time: Option<i64>,
    stage: &'static str,
    progress: Option<ProgressFn<'_>>,
) -> Result<(Manifest, bool), BackupError> {
    let (ptx, mut prx) = mpsc::unbounded_channel::<u64>();
    let task = tokio::task::spawn_blocking(move || {
        let mut n = 0u64;
        let mut past = false;
        let manifest = check_file(
            &path,
            key.as_ref(),
            Some(&mut |row: LogRow| {
                n += 1;
                if n % 5000 == 0 {
                    let _ = ptx.send(n);
                }
                past |= to_time.is_some_and(|t| row.at_micros > t);
                Ok(())
            }),
        )?;
        Ok::<_, BackupError>((manifest, past))
    });
    while let Some(done) = prx.recv().await {
        if let Some(report) = progress {
            report(Progress { stage, done });
        }
    }
    task.await
        .map_err(|e| BackupError::Refused(format!("checking failed: {e}")))?
}

/// Fetch the backup `source` names into `dir`: a local file, a file URL
/// (`file:///…/x.drbk`, `s3://bucket/prefix/x.drbk`), or a location
/// (directory or prefix), from which the newest backup at or before the
/// time or revision asked for is taken.
async fn fetch_backup(
    source: &str,
    to_time: Option<SystemTime>,
    to_revision: Option<Revision>,
    dir: &Path,
) -> Result<(PathBuf, String), BackupError> {
    let (location, name) = if source.contains("://") {
        let trimmed = source.trim_end_matches('/');
        match trimmed.rsplit_once('/') {
            Some((base, name)) if name.ends_with(BACKUP_EXT) => {
                (Location::open_existing(base)?, Some(name.to_owned()))
            }
            _ => (Location::open_existing(trimmed)?, None),
        }
    } else {
        let path = Path::new(source);
        if path.is_file() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Ok((path.to_owned(), name));
        }
        if !path.is_dir() {
            return Err(BackupError::NotFound(source.to_owned()));
        }
        let abs = std::fs::canonicalize(path)?;
        (
            Location::open_existing(&format!("file://{}", abs.display()))?,
            None,
        )
    };
    let name = match name {
        Some(name) => name,
        None => {
            let mut candidates: Vec<(SystemTime, Revision, String)> = location
                .list("")
                .await?
                .into_iter()
                .filter_map(|e| {
                    let (_, at, rev) = crate::parse_backup_name(&e.name)?;
                    let fits =
                        to_time.is_none_or(|t| at <= t) && to_revision.is_none_or(|r| rev <= r);
                    fits.then_some((at, rev, e.name))
                })
                .collect();
            candidates.sort();
            candidates.pop().map(|(_, _, n)| n).ok_or_else(|| {
                BackupError::Refused(format!(
                    "{location} has no backup{}",
                    match (to_time, to_revision) {
                        (Some(t), _) => format!(" taken before {}", crate::rfc3339(t)),
                        (_, Some(r)) => format!(" at or before revision {r}"),
                        _ => String::new(),
                    }
                ))
            })?
        }
    };
    let path = dir.join(&name);
    location.download(&name, &path).await?;
    Ok((path, name))
}

/// Restore a backup as `opts` says.
pub async fn restore(source: &str, opts: RestoreOptions<'_>) -> Result<Restored, BackupError> {
    let dir = tempfile::tempdir_in(ensure(&opts.scratch)?)?;
    let pitr = opts.to_time.is_some() || opts.to_revision.is_some();
    if pitr && opts.log_archive.is_none() && opts.to_time.is_some() {
        return Err(BackupError::Refused(
            "--to-time needs the log archive (--log-archive URL)".into(),
        ));
    }
    let (backup, name) = fetch_backup(source, opts.to_time, opts.to_revision, dir.path()).await?;
    // 1. Everything is checked before the target is touched.
    let (manifest, _) = check_async(
        backup.clone(),
        opts.key.clone(),
        None,
        "checking",
        opts.progress,
    )
    .await?;
    if manifest.header.kind != FileKind::Snapshot {
        return Err(BackupError::Refused(format!(
            "{name} is a log segment, not a backup"
        )));
    }
    let base = manifest.header.revision;
    if let Some(t) = opts.to_time {
        if manifest.header.created().is_none_or(|created| created > t) {
            return Err(BackupError::Refused(format!(
                "{name} was taken at {}, after {}",
                manifest.header.created_at,
                crate::rfc3339(t)
            )));
        }
    }
    if let Some(r) = opts.to_revision {
        if r < base {
            return Err(BackupError::Refused(format!(
                "{name} is at revision {base}, after {r}"
            )));
        }
    }
    let mut segments = Vec::new();
    if pitr && opts.to_revision != Some(base) {
        let Some(archive) = &opts.log_archive else {
            return Err(BackupError::Refused(
                "--to-revision past the backup's own needs the log archive (--log-archive URL)"
                    .into(),
            ));
        };
        segments = fetch_segments(
            &Location::open_existing(archive)?,
            base,
            opts.to_time,
            opts.to_revision,
            opts.key.as_ref(),
            dir.path(),
        )
        .await?;
    }

    // 2. The target: empty, or replaced on request.
    let store = Store::open(&opts.target.url(), StoreOptions::default()).await?;
    let before = store.contents().await?;
    if !before.is_empty() {
        if !opts.force {
            store.close().await;
            return Err(drover_store::StoreError::NotEmpty {
                revision: before.revision,
                objects: before.objects,
            }
            .into());
        }
        if let Some(tell) = opts.replacing {
            tell(before);
        }
    }

    // 3. One transaction, committed once every file was read again whole.
    let (tx, rx) = mpsc::channel::<Load>(4);
    let key = opts.key.clone();
    let to_time = opts.to_time.map(crate::archive::micros);
    let to_revision = opts.to_revision;
    let (prog_tx, mut prog_rx) = mpsc::unbounded_channel::<u64>();
    let producer = tokio::task::spawn_blocking(
        move || -> Result<(u64, Revision, Option<i64>), BackupError> {
            let mut batch = Vec::with_capacity(BATCH);
            let mut sent = 0u64;
            let send = |batch: &mut Vec<LogRow>, sent: &mut u64| -> Result<(), BackupError> {
                *sent += batch.len() as u64;
                let full = std::mem::replace(batch, Vec::with_capacity(BATCH));
                tx.blocking_send(Load::Rows(full))
                    .map_err(|_| BackupError::Refused("the datastore stopped the load".into()))?;
                let _ = prog_tx.send(*sent);
                Ok(())
            };
            check_file(
                &backup,
                key.as_ref(),
                Some(&mut |row| {
                    batch.push(row);
                    if batch.len() >= BATCH {
                        send(&mut batch, &mut sent)?;
                    }
                    Ok(())
                }),
            )?;
            let mut applied = base;
            let mut replayed = 0u64;
            let mut last_at = None;
            let mut stopped = false;
            for seg in &segments {
                check_file(
                    seg,
                    key.as_ref(),
                    Some(&mut |row: LogRow| {
                        if stopped || row.revision <= applied {
                            return Ok(());
                        }
                        let past_time = to_time.is_some_and(|t| row.at_micros > t);
                        let past_rev = to_revision.is_some_and(|r| row.revision > r);
                        if past_time || past_rev {
                            stopped = true;
                            return Ok(());
                        }
                        if row.revision != applied + 1 {
                            return Err(BackupError::Refused(format!(
                                "the log archive has no revision {} (next is {})",
                                applied + 1,
                                row.revision
                            )));
                        }
                        applied = row.revision;
                        last_at = Some(row.at_micros);
                        replayed += 1;
                        batch.push(row);
                        if batch.len() >= BATCH {
                            send(&mut batch, &mut sent)?;
                        }
                        Ok(())
                    }),
                )?;
            }
            if !batch.is_empty() {
                send(&mut batch, &mut sent)?;
            }
            tx.blocking_send(Load::Commit {
                revision: applied,
                compacted: base,
            })
            .map_err(|_| BackupError::Refused("the datastore stopped the load".into()))?;
            Ok((replayed, applied, last_at))
        },
    );
    let loading = store.load(opts.force, rx);
    tokio::pin!(loading);
    let loaded = loop {
        tokio::select! {
            done = &mut loading => break done,
            Some(n) = prog_rx.recv(), if opts.progress.is_some() => {
                if let Some(progress) = opts.progress {
                    progress(Progress { stage: "restoring", done: n });
                }
            }
        }
    };
    let produced = producer
        .await
        .map_err(|e| BackupError::Refused(format!("the restore reader failed: {e}")))?;
    store.close().await;
    // Whichever side failed first says why: the datastore's own error, or
    // the reader's (which makes the load abandoned).
    let after = match loaded {
        Err(drover_store::StoreError::LoadAborted) => {
            produced?;
            return Err(drover_store::StoreError::LoadAborted.into());
        }
        other => other?,
    };
    let (replayed, revision, last_at) = produced?;
    Ok(Restored {
        backup: name,
        backup_revision: base,
        revision: after.revision.max(revision),
        objects: after.objects,
        replayed,
        last_write: last_at.map(crate::archive::from_micros),
    })
}

/// Fetch and check the log segments after `base` up to the target, in
/// order, refusing a gap.
async fn fetch_segments(
    archive: &Location,
    base: Revision,
    to_time: Option<SystemTime>,
    to_revision: Option<Revision>,
    key: Option<&Key>,
    dir: &Path,
) -> Result<Vec<PathBuf>, BackupError> {
    let mut listed: Vec<(Revision, Revision, String)> = archive
        .list(SEGMENT_PREFIX)
        .await?
        .into_iter()
        .filter_map(|e| {
            let (first, last) = parse_segment_name(&e.name)?;
            (last > base).then_some((first, last, e.name))
        })
        .collect();
    listed.sort();
    let to_time = to_time.map(crate::archive::micros);
    let mut next = base + 1;
    let mut out = Vec::new();
    for (first, last, name) in listed {
        // Past the revision asked for, by enough to finish a transaction
        // that straddles it.
        if to_revision.is_some_and(|r| next > r.saturating_add(TXN_MARGIN)) {
            break;
        }
        if first > next {
            return Err(BackupError::Refused(format!(
                "the log archive {archive} has no segment with revisions {next} to {}",
                first - 1
            )));
        }
        let path = dir.join(&name);
        archive.download(&name, &path).await?;
        let (manifest, past_time) = check_async(
            path.clone(),
            key.cloned(),
            to_time,
            "checking the log",
            None,
        )
        .await?;
        if manifest.header.kind != FileKind::Log {
            return Err(BackupError::Corrupt(format!("{name} is not a log segment")));
        }
        out.push(path);
        next = next.max(last + 1);
        if past_time {
            break;
        }
    }
    if let Some(r) = to_revision {
        if next <= r {
            return Err(BackupError::Refused(format!(
                "the log archive {archive} ends at revision {}, before {r}",
                next - 1
            )));
        }
    }
    Ok(out)
}
