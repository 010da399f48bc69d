//! Drover's backups: the datastore is what rebuilds a server anywhere, so
//! it is copied off the host on a schedule and can be put back, on the same
//! kind of datastore or the other one, or as of any moment the log archive
//! covers.
//!
//! - [`format`]: Drover's own file format (versioned, gzip, optionally
//!   encrypted with XChaCha20-Poly1305 STREAM, a SHA-256 trailer),
//!   independent of the datastore;
//! - [`key`]: the encryption secret and the per-file key derivation;
//! - [`location`]: `file:///DIR` or `s3://bucket/prefix`, via
//!   `object_store`;
//! - [`create`]: an online, consistent backup of a store: one read
//!   snapshot streamed into a file, then uploaded;
//! - [`archive`]: the store's log archived in segments for point-in-time
//!   recovery;
//! - [`restore`]: a backup (and the log after it, up to a time or a
//!   revision) written into an empty datastore in one transaction, after
//!   the files were checked whole.

pub mod archive;
pub mod create;
pub mod format;
pub mod key;
pub mod location;
pub mod restore;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use create::{create, Created};
pub use key::Key;
pub use location::Location;
pub use restore::{restore, verify, RestoreOptions, Restored, Target};

/// The file name extension of a backup.
pub const BACKUP_EXT: &str = ".drbk";
/// The file name extension of a log segment.
pub const SEGMENT_EXT: &str = ".drlog";

/// What can go wrong with a backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file does not start as a backup does.
    #[error("not a Drover backup file")]
    NotABackup,
    /// The file is damaged.
    #[error("the backup is damaged: {0}")]
    Corrupt(String),
    /// The checksum in the trailer does not match the file.
    #[error("the backup's checksum does not match: the file is damaged")]
    ChecksumMismatch,
    /// The file is encrypted and no key was given.
    #[error("the backup is encrypted: give its key (--key-file)")]
    KeyRequired,
    /// The key given is not the one the file was encrypted with.
    #[error("wrong key: the backup was encrypted with another key")]
    WrongKey,
    /// The file was written by a newer Drover.
    #[error(
        "the backup was written by Drover {0}, newer than this one ({current}): restore it with that version or later",
        current = env!("CARGO_PKG_VERSION")
    )]
    NewerDrover(String),
    /// The file uses a newer format.
    #[error("the backup uses format {format} (Drover {drover}); this Drover reads format 1")]
    NewerFormat {
        /// The file's format version.
        format: u64,
        /// The Drover that wrote it.
        drover: String,
    },
    /// The key file cannot be used.
    #[error("cannot use the key file {path}: {reason}")]
    KeyFile {
        /// Its path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A cipher operation failed.
    #[error("encryption: {0}")]
    Crypto(&'static str),
    /// The location is invalid or failed.
    #[error("backup location {url}: {reason}")]
    Location {
        /// The location.
        url: String,
        /// What failed.
        reason: String,
    },
    /// A named file does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request cannot be done as asked (no backup before the time,
    /// a gap in the log archive, …).
    #[error("{0}")]
    Refused(String),
    /// The datastore failed or refused.
    #[error(transparent)]
    Store(#[from] drover_store::StoreError),
    /// Reading or writing a local file failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Progress of long work, for a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// What is being done.
    pub stage: &'static str,
    /// Rows done.
    pub done: u64,
}

/// Something to report progress to.
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// A time as RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos((d.as_millis() as i128) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    dt.format(&format).unwrap_or_default()
}

/// Parse an RFC 3339 time.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let dt = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = dt.unix_timestamp_nanos();
    (nanos >= 0).then(|| UNIX_EPOCH + Duration::from_nanos(nanos as u64))
}

/// A time as it appears in file names: `20261126T172300.123Z`.
fn name_time(t: SystemTime) -> String {
    rfc3339(t).replace(['-', ':'], "")
}

/// The name of a backup file: `{prefix}-{time}-r{revision}.drbk`.
pub fn backup_name(prefix: &str, at: SystemTime, revision: drover_store::Revision) -> String {
    format!("{prefix}-{}-r{revision}{BACKUP_EXT}", name_time(at))
}

/// What a backup file's name says: its prefix, time and revision.
pub fn parse_backup_name(name: &str) -> Option<(String, SystemTime, drover_store::Revision)> {
    let stem = name.strip_suffix(BACKUP_EXT)?;
    let (rest, revision) = stem.rsplit_once("-r")?;
    let revision = revision.parse().ok()?;
    let (prefix, stamp) = rest.rsplit_once('-')?;
    // 20261126T172300.123Z → 2026-11-26T17:23:00.123Z
    if stamp.len() != 20 || !stamp.is_ascii() {
        return None;
    }
    let iso = format!(
        "{}-{}-{}T{}:{}:{}",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..]
    );
    Some((prefix.to_owned(), parse_rfc3339(&iso)?, revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_carry_time_and_revision() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let name = backup_name("nightly-prod", at, 4242);
        assert!(name.ends_with("-r4242.drbk"), "{name}");
        let (prefix, t, rev) = parse_backup_name(&name).unwrap();
        assert_eq!((prefix.as_str(), t, rev), ("nightly-prod", at, 4242));
        assert!(parse_backup_name("nightly.drbk").is_none());
        // Anyone who can write to the location can name files: no panic.
        assert!(parse_backup_name("nightly-éééééééééé-r1.drbk").is_none());
        assert!(parse_backup_name("x-2026112xT172300.123Z-r1.drbk").is_none());
    }
}
