//! An online, consistent backup: the store's snapshot at one revision is
//! streamed (in batches, over a bounded channel) into a file in a scratch
//! directory by a blocking writer, then uploaded to the location. Writes
//! go on meanwhile; none after the snapshot's revision is in the file.

use std::path::Path;
use std::time::SystemTime;

use drover_store::{Revision, Snapshot, Store};
use tokio::sync::mpsc;

use crate::format::{FileKind, Header, Trailer, Writer};
use crate::{BackupError, Key, Location};

/// Rows per batch read from the store.
const BATCH: usize = 500;

/// A backup made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The file's name at the location.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The store's revision it holds.
    pub revision: Revision,
    /// When the snapshot was taken.
    pub at: SystemTime,
    /// Objects in it.
    pub objects: u64,
}

/// Back up `store` to `location` as `{prefix}-{time}-r{revision}.drbk`,
/// encrypted when `key` is given, through a file in `scratch`.
pub async fn create(
    store: &Store,
    location: &Location,
    prefix: &str,
    key: Option<&Key>,
    scratch: &Path,
) -> Result<Created, BackupError> {
    std::fs::create_dir_all(scratch)?;
    let (tx, mut rx) = mpsc::channel::<Snapshot>(4);
    let reading = {
        let store = store.clone();
        tokio::spawn(async move { store.snapshot(BATCH, tx).await })
    };
    let Some(Snapshot::Begin { revision, objects }) = rx.recv().await else {
        return Err(match reading.await {
            Ok(Err(e)) => e.into(),
            _ => BackupError::Refused("the store's snapshot ended before it began".into()),
        });
    };
    let at = SystemTime::now();
    let name = crate::backup_name(prefix, at, revision);
    let file = tempfile::NamedTempFile::new_in(scratch)?;
    let out = std::io::BufWriter::with_capacity(256 * 1024, file.reopen()?);
    let header = Header::new(FileKind::Snapshot, 0, revision);
    let key = key.cloned();
    let writing = tokio::task::spawn_blocking(move || -> Result<Trailer, BackupError> {
        let mut w = Writer::new(out, header, key.as_ref())?;
        while let Some(msg) = rx.blocking_recv() {
            if let Snapshot::Rows(rows) = msg {
                for row in &rows {
                    w.write_row(row)?;
                }
            }
        }
        // Read back at once by the upload, then deleted: no fsync.
        let (trailer, out) = w.finish()?;
        out.into_inner().map_err(|e| e.into_error())?;
        Ok(trailer)
    });
    let trailer = writing
        .await
        .map_err(|e| BackupError::Refused(format!("the backup writer failed: {e}")))??;
    // A snapshot that failed half-way ends the writer early: its file
    // must not be kept.
    match reading.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(BackupError::Refused(format!("the snapshot failed: {e}"))),
    }
    if trailer.rows != objects {
        return Err(BackupError::Refused(format!(
            "the snapshot held {objects} objects but {} were read",
            trailer.rows
        )));
    }
    let size = location.upload(file.path(), &name).await?;
    Ok(Created {
        name,
        size,
        revision,
        at,
        objects,
    })
}
