//! `drover backup …`: `create` and `ls` ask the server (Backups are
//! management objects); `verify` and `restore` work on files, offline —
//! restore writes into a datastore no server is running on.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use drover_backup::{Key, Progress, RestoreOptions, Target};
use serde_json::{json, Value};

use crate::client::MGMT;
use crate::output::{self, Output};
use crate::CliError;

/// `drover backup …`.
#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// Back up the server now (a one-shot Backup), or on a schedule
    ///
    /// Examples:
    ///   drover backup create --wait
    ///   drover backup create --location s3://backups/drover --encrypt --wait
    ///   drover backup create --name nightly --schedule "0 3 * * *" --retention 14
    #[command(verbatim_doc_comment)]
    Create {
        /// Where the file goes: file:///DIR on the server, or
        /// s3://BUCKET/PREFIX (default: the server's DATA_DIR/backups).
        #[arg(long)]
        location: Option<String>,
        /// The Backup's name (default: backup-TIME).
        #[arg(long)]
        name: Option<String>,
        /// A cron schedule (UTC); without it, one backup now.
        #[arg(long)]
        schedule: Option<String>,
        /// How many files to keep (default 10).
        #[arg(long)]
        retention: Option<u32>,
        /// Encrypt with the server's backup key.
        #[arg(long)]
        encrypt: bool,
        /// Wait until the backup is written (or failed).
        #[arg(long, conflicts_with = "schedule")]
        wait: bool,
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// List Backups and their state; with a location, the files there
    ///
    /// Examples:
    ///   drover backup ls
    ///   drover backup ls s3://backups/drover
    #[command(verbatim_doc_comment)]
    #[command(alias = "list")]
    Ls {
        /// A location to list the files of (read from here, not through
        /// the server).
        location: Option<String>,
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Check a backup file whole (checksum, key, version) without
    /// restoring it.
    ///
    /// Example: drover backup verify s3://backups/drover/nightly-20261126T030000.000Z-r4242.drbk --key-file key
    Verify {
        /// A local file, or a file URL (file:///…, s3://…).
        source: String,
        /// The key file of an encrypted backup.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// How to print.
        #[command(flatten)]
        out: Output,
    },
    /// Restore a backup into an empty datastore (no server running on it), then start a server on it
    ///
    /// Examples:
    ///   drover backup restore ./nightly-…-r4242.drbk --data-dir /var/lib/drover
    ///   drover backup restore s3://backups/drover --datastore postgres://… --to-time 2026-11-26T10:15:00Z --log-archive s3://backups/drover-log
    #[command(verbatim_doc_comment)]
    Restore {
        /// A backup file (local, file:///…, s3://…), or a location to take
        /// the newest backup from (before --to-time / --to-revision).
        source: String,
        /// Restore into this server data directory (its SQLite datastore).
        #[arg(
            long,
            conflicts_with = "datastore",
            required_unless_present = "datastore"
        )]
        data_dir: Option<PathBuf>,
        /// Restore into this datastore (sqlite://…, postgres://…).
        #[arg(long)]
        datastore: Option<String>,
        /// The key file of an encrypted backup (and log archive).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Replace what the datastore holds.
        #[arg(long)]
        force: bool,
        /// Restore the state as of this time (RFC 3339), replaying the log
        /// archive after the newest backup before it.
        #[arg(long)]
        to_time: Option<String>,
        /// Restore the state as of this revision.
        #[arg(long)]
        to_revision: Option<i64>,
        /// Where the server archived its log (--backup-log-archive).
        #[arg(long)]
        log_archive: Option<String>,
    },
}

/// `drover backup …`.
pub async fn run(cmd: BackupCommand) -> Result<(), CliError> {
    match cmd {
        BackupCommand::Create {
            location,
            name,
            schedule,
            retention,
            encrypt,
            wait,
            out,
        } => create(location, name, schedule, retention, encrypt, wait, out).await,
        BackupCommand::Ls {
            location: Some(url),
            out,
        } => ls_location(&url, out).await,
        BackupCommand::Ls {
            location: None,
            out,
        } => {
            let (_, client) = crate::resources::current_client()?;
            crate::resources::list(&client, &format!("{MGMT}/backups"), out).await
        }
        BackupCommand::Verify {
            source,
            key_file,
            out,
        } => {
            let key = key_of(key_file.as_deref())?;
            let manifest = drover_backup::verify(&source, key.as_ref(), &scratch())
                .await
                .map_err(failed)?;
            let v = serde_json::to_value(&manifest).expect("plain data");
            if !output::document(out, &v)? {
                crate::outln!(
                    "{source}: OK\n  written by Drover {} at {}\n  revision {}, {} objects, {} bytes, {}\n  sha256 {}",
                    manifest.header.drover_version,
                    manifest.header.created_at,
                    manifest.header.revision,
                    manifest.trailer.rows,
                    manifest.trailer.bytes,
                    if manifest.header.encryption.is_some() { "encrypted" } else { "not encrypted" },
                    manifest.trailer.sha256
                );
            }
            Ok(())
        }
        BackupCommand::Restore {
            source,
            data_dir,
            datastore,
            key_file,
            force,
            to_time,
            to_revision,
            log_archive,
        } => {
            let target = match (data_dir, datastore) {
                (Some(dir), _) => Target::DataDir(dir),
                (None, Some(url)) => Target::Datastore(url),
                (None, None) => {
                    return Err(CliError::Usage(
                        "give --data-dir DIR or --datastore URL".into(),
                    ))
                }
            };
            let to_time = to_time
                .map(|t| {
                    drover_backup::parse_rfc3339(&t).ok_or_else(|| {
                        CliError::Usage(format!(
                            "--to-time {t:?} is not an RFC 3339 time such as 2026-11-26T10:15:00Z"
                        ))
                    })
                })
                .transpose()?;
            let key = key_of(key_file.as_deref())?;
            let progress = progress_printer();
            let replacing = |c: drover_store::Contents| {
                eprintln!(
                    "--force: replacing what the datastore holds (revision {}, {} objects)",
                    c.revision, c.objects
                );
            };
            let restored = drover_backup::restore(
                &source,
                RestoreOptions {
                    target: target.clone(),
                    force,
                    key,
                    to_time,
                    to_revision,
                    log_archive,
                    scratch: scratch(),
                    progress: progress.as_ref().map(|p| p as _),
                    replacing: Some(&replacing),
                },
            )
            .await
            .map_err(failed)?;
            if progress.is_some() {
                eprintln!();
            }
            crate::outln!(
                "Restored {} (revision {}) into {}: {} objects at revision {}{}.",
                restored.backup,
                restored.backup_revision,
                redact_url(&target.url()),
                restored.objects,
                restored.revision,
                if to_time.is_some() && restored.replayed == 0 {
                    ", the log archive holding no write after the backup up to that time".to_owned()
                } else if restored.replayed > 0 {
                    format!(
                        ", {} writes replayed from the log archive up to {}",
                        restored.replayed,
                        restored
                            .last_write
                            .map(drover_backup::rfc3339)
                            .unwrap_or_default()
                    )
                } else {
                    String::new()
                }
            );
            crate::outln!("Start the server on it now; agents reconnect on their own.");
            Ok(())
        }
    }
}

/// A datastore URL without its password.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

fn failed(e: drover_backup::BackupError) -> CliError {
    match e {
        drover_backup::BackupError::Store(drover_store::StoreError::NotEmpty { .. }) => {
            CliError::Config(format!(
                "{e}; nothing was written (--force replaces what it holds)"
            ))
        }
        e => CliError::Config(e.to_string()),
    }
}

/// Downloads go to a private directory made under the system's temporary
/// directory for each run.
fn scratch() -> PathBuf {
    std::env::temp_dir()
}

fn key_of(path: Option<&std::path::Path>) -> Result<Option<Key>, CliError> {
    path.map(Key::from_file).transpose().map_err(failed)
}

/// A progress line on stderr, when it is a terminal.
fn progress_printer() -> Option<impl Fn(Progress) + Send + Sync> {
    std::io::stderr()
        .is_terminal()
        .then_some(|p: Progress| eprint!("\r{}: {} objects   ", p.stage, p.done))
}

async fn ls_location(url: &str, out: Output) -> Result<(), CliError> {
    let location = drover_backup::Location::open_existing(url).map_err(failed)?;
    let files = location.list("").await.map_err(failed)?;
    let rows: Vec<Value> = files
        .iter()
        .filter_map(|f| {
            let (backup, at, revision) = drover_backup::parse_backup_name(&f.name)?;
            Some(
                json!({"name": f.name, "backup": backup, "time": drover_backup::rfc3339(at),
                "revision": revision, "size": f.size}),
            )
        })
        .collect();
    if !output::document(out, &Value::Array(rows.clone()))? {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r["name"].as_str().unwrap_or_default().to_owned(),
                    r["time"].as_str().unwrap_or_default().to_owned(),
                    r["revision"].to_string(),
                    r["size"].to_string(),
                ]
            })
            .collect();
        crate::out!(
            "{}",
            output::table(&["NAME", "TIME", "REVISION", "SIZE"], &cells)
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn create(
    location: Option<String>,
    name: Option<String>,
    schedule: Option<String>,
    retention: Option<u32>,
    encrypt: bool,
    wait: bool,
    out: Output,
) -> Result<(), CliError> {
    let (_, client) = crate::resources::current_client()?;
    let name = name.unwrap_or_else(|| {
        let t = drover_backup::rfc3339(std::time::SystemTime::now());
        // 2026-11-26T17:23:00.123Z → backup-20261126-172300-123
        let digits: String = t.chars().filter(char::is_ascii_digit).collect();
        format!(
            "backup-{}-{}-{}",
            &digits[..8],
            &digits[8..14],
            &digits[14..]
        )
    });
    let mut spec = json!({"encrypt": encrypt});
    if let Some(l) = location {
        spec["location"] = json!(l);
    }
    if let Some(s) = &schedule {
        spec["schedule"] = json!(s);
    }
    if let Some(r) = retention {
        spec["retentionCount"] = json!(r);
    }
    let body = json!({"apiVersion": "management.drover.io/v1", "kind": "Backup",
        "metadata": {"name": name}, "spec": spec});
    let mut backup = client.post(&format!("{MGMT}/backups"), &body).await?;
    if wait {
        let deadline = Instant::now() + Duration::from_secs(30 * 60);
        let interactive = std::io::stderr().is_terminal();
        let started = Instant::now();
        loop {
            let ready = backup
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned());
            let attempted_after_create = backup.pointer("/status/lastAttemptTime").is_some();
            if let (Some(ready), true) = (ready, attempted_after_create) {
                if interactive {
                    eprintln!();
                }
                if ready["status"] != "True" {
                    return Err(CliError::Config(format!(
                        "backup {name} failed: {}",
                        ready["message"].as_str().unwrap_or("no reason given")
                    )));
                }
                break;
            }
            if Instant::now() > deadline {
                return Err(CliError::Config(format!(
                    "backup {name} did not finish within 30 minutes; see drover backup ls"
                )));
            }
            if interactive {
                eprint!("\rbacking up… {} s", started.elapsed().as_secs());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            backup = client.get(&format!("{MGMT}/backups/{name}")).await?;
        }
    }
    if !output::document(out, &backup)? {
        match backup
            .pointer("/status/files")
            .and_then(Value::as_array)
            .and_then(|f| f.last())
        {
            Some(file) if wait => crate::outln!(
                "Backup {name} written: {} ({} bytes, revision {}) at {}",
                file["name"].as_str().unwrap_or_default(),
                file["size"],
                file["revision"],
                backup["spec"]["location"].as_str().unwrap_or_default()
            ),
            _ => crate::outln!(
                "Backup {name} created{}.",
                schedule
                    .map(|s| format!(" on the schedule {s:?}"))
                    .unwrap_or_default()
            ),
        }
    }
    Ok(())
}
