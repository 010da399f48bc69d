//! Backups, on the leader only:
//!
//! - the backup controller: each Backup runs once (no schedule) or at each
//!   time of its cron schedule (UTC), writes its file
//!   (`{name}-{time}-r{revision}.drbk`) to its location, deletes the
//!   oldest of its files beyond `retentionCount`, and records in its status
//!   the files kept, the last success, the next run and a `Ready`
//!   condition whose message says why a backup failed. Status writes are
//!   fenced by the leader lease. A schedule whose time passed while no
//!   leader ran is run once, not once per missed time.
//! - the log archiver (`--backup-log-archive`): the store's log copied in
//!   segments every few seconds; compaction never passes what it archived.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use drover_backup::archive::Archiver;
use drover_backup::{BackupError, Key, Location};
use drover_core::{api, keys, meta};
use drover_store::{ListOptions, Store, StoreError};
use serde_json::Value;

use super::lease::{Held, Updated};
use super::{set_condition, Action, Ctx};
use crate::kinds::backups::{parse_schedule, DEFAULT_RETENTION};

/// What the server was told about backups.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// `--backup-encryption-key-file`.
    pub key: Option<Key>,
    /// `--backup-log-archive`.
    pub log_archive: Option<String>,
    /// How long archived log segments are kept.
    pub log_retention: Duration,
    /// Where files are staged before upload.
    pub scratch: PathBuf,
}

/// The longest a backup controller waits between looks.
const IDLE: Duration = Duration::from_secs(60);

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupsError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The leader lease is gone.
    #[error("the leader lease changed hands")]
    LostLease,
    /// The Backup kept changing under the status write.
    #[error("{0} kept changing; its status was not written")]
    Contended(String),
}

fn backups_prefix() -> String {
    keys::prefix(api::GROUP, "backups", None)
}

/// Look at every Backup; run those due. Returns when to look again.
pub async fn reconcile(
    ctx: &Ctx,
    held: &Held,
    config: &BackupConfig,
) -> Result<Action, BackupsError> {
    let page = ctx
        .store
        .list(&ListOptions {
            prefix: backups_prefix(),
            ..Default::default()
        })
        .await?;
    let now = SystemTime::now();
    let mut next_look = IDLE;
    for kv in page.items {
        let Ok(backup) = serde_json::from_slice::<api::Backup>(&kv.value) else {
            continue;
        };
        if backup.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let created = serde_json::from_slice::<Value>(&kv.value)
            .ok()
            .and_then(|v| {
                v.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .and_then(meta::parse_rfc3339)
            });
        let status = backup.status.clone().unwrap_or_default();
        let due = match due_at(backup.spec.schedule.as_deref(), created, &status) {
            Due::Never => continue,
            Due::At(t) => t,
        };
        if due > now {
            next_look = next_look.min(due.duration_since(now).unwrap_or_default());
            if status.next_backup_time.as_deref() != Some(&meta::rfc3339_micro(due)) {
                write_status(ctx, held, &kv.key, |s| {
                    s.next_backup_time = Some(meta::rfc3339_micro(due));
                })
                .await?;
            }
            continue;
        }
        run_one(ctx, held, config, &kv.key, &backup).await?;
        // The next time is worked out from this run on the next pass.
        next_look = Duration::ZERO;
    }
    Ok(Action::Requeue(next_look.max(Duration::from_millis(200))))
}

enum Due {
    Never,
    At(SystemTime),
}

/// When a Backup should next run: a one-shot once, a schedule at its next
/// time after the last attempt (or the Backup's creation).
fn due_at(schedule: Option<&str>, created: Option<SystemTime>, status: &api::BackupStatus) -> Due {
    let last = status
        .last_attempt_time
        .as_deref()
        .and_then(meta::parse_rfc3339);
    let Some(schedule) = schedule else {
        return match last {
            None => Due::At(SystemTime::UNIX_EPOCH),
            Some(_) => Due::Never,
        };
    };
    let Ok(cron) = parse_schedule(schedule) else {
        return Due::Never;
    };
    let from = last.or(created).unwrap_or_else(SystemTime::now);
    let from: chrono::DateTime<chrono::Utc> = from.into();
    match cron.find_next_occurrence(&from, false) {
        Ok(next) => Due::At(next.into()),
        Err(_) => Due::Never,
    }
}

/// Take one backup for `backup`, apply its retention, record the outcome.
async fn run_one(
    ctx: &Ctx,
    held: &Held,
    config: &BackupConfig,
    key: &str,
    backup: &api::Backup,
) -> Result<(), BackupsError> {
    let name = backup.metadata.name.clone().unwrap_or_default();
    let started = SystemTime::now();
    // The attempt is recorded first: a leader that dies mid-backup does
    // not leave a one-shot Backup to run again and again.
    write_status(ctx, held, key, |s| {
        s.last_attempt_time = Some(meta::rfc3339_micro(started));
    })
    .await?;
    let outcome = take(ctx, config, backup).await;
    match outcome {
        Ok((created, kept)) => {
            tracing::info!(backup = %name, file = %created.name, revision = created.revision,
                objects = created.objects, bytes = created.size, "backup written");
            write_status(ctx, held, key, |s| {
                let known = std::mem::take(&mut s.files);
                s.files = kept
                    .iter()
                    .map(|f| {
                        let mut f = f.clone();
                        if f.name == created.name {
                            f.objects = created.objects;
                        } else if let Some(old) = known.iter().find(|k| k.name == f.name) {
                            f.objects = old.objects;
                        }
                        f
                    })
                    .collect();
                s.last_backup_time = Some(meta::rfc3339_micro(created.at));
                let written = format!("{} written", created.name);
                set_condition(
                    &mut s.conditions,
                    "Ready",
                    "True",
                    "BackupSucceeded",
                    &written,
                );
            })
            .await?;
        }
        Err(e) => {
            tracing::warn!(backup = %name, error = %e, "backup failed");
            write_status(ctx, held, key, |s| {
                let why: String = e.to_string().chars().take(1024).collect();
                set_condition(&mut s.conditions, "Ready", "False", "BackupFailed", &why);
            })
            .await?;
        }
    }
    Ok(())
}

/// The backup itself and the retention; returns the file made and the
/// files of this Backup kept at the location, oldest first.
async fn take(
    ctx: &Ctx,
    config: &BackupConfig,
    backup: &api::Backup,
) -> Result<(drover_backup::Created, Vec<api::BackupFile>), BackupError> {
    let name = backup.metadata.name.as_deref().unwrap_or_default();
    let location = Location::open(&backup.spec.location)?;
    let key = if backup.spec.encrypt {
        Some(config.key.as_ref().ok_or_else(|| {
            BackupError::Refused("the server has no --backup-encryption-key-file".into())
        })?)
    } else {
        None
    };
    let created = drover_backup::create(&ctx.store, &location, name, key, &config.scratch).await?;
    let mine = files_of(&location, name).await?;
    let keep = backup
        .spec
        .retention_count
        .unwrap_or(DEFAULT_RETENTION)
        .max(1) as usize;
    let excess = mine.len().saturating_sub(keep);
    for old in &mine[..excess] {
        location.delete(&old.name).await?;
    }
    Ok((created, mine[excess..].to_vec()))
}

/// The files at `location` that Backup `name` wrote, oldest first.
async fn files_of(location: &Location, name: &str) -> Result<Vec<api::BackupFile>, BackupError> {
    let mut files: Vec<(SystemTime, api::BackupFile)> = location
        .list(&format!("{name}-"))
        .await?
        .into_iter()
        .filter_map(|e| {
            let (prefix, at, revision) = drover_backup::parse_backup_name(&e.name)?;
            (prefix == name).then(|| {
                (
                    at,
                    api::BackupFile {
                        name: e.name,
                        time: meta::rfc3339_micro(at),
                        size: e.size,
                        revision,
                        objects: 0,
                    },
                )
            })
        })
        .collect();
    files.sort_by_key(|f| f.0);
    Ok(files.into_iter().map(|(_, f)| f).collect())
}

/// Change a Backup's status, fenced by the leader lease.
async fn write_status(
    ctx: &Ctx,
    held: &Held,
    key: &str,
    change: impl Fn(&mut api::BackupStatus),
) -> Result<(), BackupsError> {
    if !ctx.registry.may_act() {
        return Err(BackupsError::LostLease);
    }
    let updated = held
        .update(&ctx.store, key, |obj| {
            let mut status: api::BackupStatus =
                serde_json::from_value(obj["status"].clone()).unwrap_or_default();
            change(&mut status);
            obj["status"] = serde_json::to_value(&status).expect("plain data");
            true
        })
        .await?;
    match updated {
        Updated::Done | Updated::Gone => Ok(()),
        Updated::LostLease => Err(BackupsError::LostLease),
        Updated::Contended => Err(BackupsError::Contended(key.to_owned())),
    }
}

/// Archive the log once; `Ok` with when to run again.
pub async fn archive_step(archiver: &Archiver) -> Result<Action, BackupError> {
    let n = archiver.step().await?;
    if n > 0 {
        tracing::debug!(segments = n, "log archived");
    }
    Ok(Action::Requeue(drover_backup::archive::SEGMENT_EVERY))
}

/// Compact, keeping `keep` revisions, but never past what the archiver
/// (if any) has archived.
pub async fn compact(
    store: &Store,
    keep: i64,
    archived: Option<&Arc<AtomicI64>>,
) -> Result<(), StoreError> {
    let ceiling = match archived {
        None => None,
        Some(a) => match a.load(Ordering::SeqCst) {
            // Not known yet: wait for the archiver's first step.
            n if n < 0 => return Ok(()),
            n => Some(n),
        },
    };
    store.compact_at_most(keep, ceiling).await.map(|_| ())
}

/// The archiver for `config`, if the log is archived.
pub fn archiver(store: &Store, config: &BackupConfig) -> Result<Option<Archiver>, BackupError> {
    let Some(url) = &config.log_archive else {
        return Ok(None);
    };
    Ok(Some(Archiver::new(
        store.clone(),
        Location::open(url)?,
        config.key.clone(),
        config.scratch.clone(),
        config.log_retention,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: &str) -> Option<SystemTime> {
        meta::parse_rfc3339(t)
    }

    #[test]
    fn one_shots_run_once_and_schedules_after_the_last_attempt() {
        let created = at("2026-11-26T10:00:00Z");
        let mut status = api::BackupStatus::default();
        assert!(
            matches!(due_at(None, created, &status), Due::At(t) if t == SystemTime::UNIX_EPOCH)
        );
        status.last_attempt_time = Some("2026-11-26T10:00:01Z".into());
        assert!(matches!(due_at(None, created, &status), Due::Never));

        let hourly = Some("0 * * * *");
        let created = at("2026-11-26T10:20:00Z");
        let mut status = api::BackupStatus::default();
        let Due::At(t) = due_at(hourly, created, &status) else {
            panic!("a schedule is due")
        };
        assert_eq!(drover_backup::rfc3339(t), "2026-11-26T11:00:00.000Z");
        status.last_attempt_time = Some("2026-11-26T11:00:00.400Z".into());
        let Due::At(t) = due_at(hourly, created, &status) else {
            panic!("a schedule is due")
        };
        assert_eq!(drover_backup::rfc3339(t), "2026-11-26T12:00:00.000Z");
    }
}
