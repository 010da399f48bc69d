//! Where backups and log segments are kept: a directory on the server
//! (`file:///…`) or an S3-compatible bucket (`s3://bucket/prefix`), both
//! through `object_store`.
//!
//! S3 credentials, region and endpoint come from the server's environment
//! in the usual AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL` for stores other than AWS), never from
//! the datastore being backed up, and never from a Backup object: a user
//! can name a bucket, not a host.

use std::path::Path as FsPath;
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::BackupError;

/// One file at a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name, relative to the location.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: std::time::SystemTime,
}

/// A parsed location.
#[derive(Clone)]
pub struct Location {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The directory of a `file://` location: files written there are
    /// made readable by the server's user only.
    dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// Check a location URL's form without opening it.
pub fn validate(url: &str) -> Result<(), String> {
    parse_url(url).map(|_| ())
}

enum Parsed {
    Dir(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
}

fn parse_url(url: &str) -> Result<Parsed, String> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err("a file location is an absolute path: file:///DIR".into());
        }
        if path.split('/').any(|s| s == "..") {
            return Err("a file location may not contain \"..\"".into());
        }
        return Ok(Parsed::Dir(path.into()));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid_bucket {
            return Err(format!("{bucket:?} is not an S3 bucket name"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == ".." || s == ".")
            || prefix.contains("//")
            || prefix.chars().any(|c| c.is_control())
        {
            return Err("the S3 prefix has an invalid segment".into());
        }
        return Ok(Parsed::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        });
    }
    Err("a location is file:///DIR or s3://BUCKET/PREFIX".into())
}

impl Location {
    /// Open the location named by `url` to write to (a directory is
    /// created if missing, mode 0700).
    pub fn open(url: &str) -> Result<Self, BackupError> {
        Self::open_as(url, true)
    }

    /// Open the location named by `url` to read from: a missing directory
    /// is an error, not made.
    pub fn open_existing(url: &str) -> Result<Self, BackupError> {
        Self::open_as(url, false)
    }

    fn open_as(url: &str, create: bool) -> Result<Self, BackupError> {
        let bad = |reason: String| BackupError::Location {
            url: url.to_owned(),
            reason,
        };
        match parse_url(url).map_err(bad)? {
            Parsed::Dir(dir) => {
                if !create && !dir.is_dir() {
                    return Err(BackupError::NotFound(url.to_owned()));
                }
                if !dir.exists() {
                    // Backups hold password and token hashes: only the
                    // server's user may read a directory Drover makes.
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&dir)
                        .map_err(|e| bad(e.to_string()))?;
                }
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| bad(e.to_string()))?;
                Ok(Self {
                    url: url.to_owned(),
                    store: Arc::new(store),
                    prefix: Path::default(),
                    dir: Some(dir),
                })
            }
            Parsed::S3 { bucket, prefix } => {
                let mut builder =
                    object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&bucket);
                let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
                    .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                    .unwrap_or_default();
                if endpoint.starts_with("http://") {
                    builder = builder.with_allow_http(true);
                }
                let store = builder.build().map_err(|e| bad(e.to_string()))?;
                Ok(Self {
                    url: url.to_owned(),
                    store: Arc::new(store),
                    prefix: Path::from(prefix),
                    dir: None,
                })
            }
        }
    }

    fn path(&self, name: &str) -> Path {
        self.prefix.clone().join(name)
    }

    fn failed(&self, e: impl std::fmt::Display) -> BackupError {
        BackupError::Location {
            url: self.url.clone(),
            reason: e.to_string(),
        }
    }

    /// Upload a local file as `name`, streamed (multipart on S3).
    pub async fn upload(&self, file: &FsPath, name: &str) -> Result<u64, BackupError> {
        let mut input = tokio::fs::File::open(file).await?;
        let mut out = object_store::buffered::BufWriter::new(self.store.clone(), self.path(name));
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = input.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if let Err(e) = out.write_all(&buf[..n]).await {
                let _ = out.abort().await;
                return Err(self.failed(e));
            }
        }
        out.shutdown().await.map_err(|e| self.failed(e))?;
        if let Some(dir) = &self.dir {
            // Backups hold password and token hashes (and, unencrypted,
            // the CA's key): only the server's user may read them.
            use std::os::unix::fs::PermissionsExt;
            let path = dir.join(name);
            tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).await?;
        }
        Ok(total)
    }

    /// Download `name` into a local file, streamed.
    pub async fn download(&self, name: &str, file: &FsPath) -> Result<u64, BackupError> {
        let got = self
            .store
            .get(&self.path(name))
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => {
                    BackupError::NotFound(format!("{}/{name}", self.url.trim_end_matches('/')))
                }
                other => self.failed(other),
            })?;
        let mut stream = got.into_stream();
        let mut out = tokio::fs::File::create(file).await?;
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.failed(e))?;
            total += chunk.len() as u64;
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        Ok(total)
    }

    /// The files directly at the location whose names start with
    /// `prefix`, sorted by name.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Entry>, BackupError> {
        let base = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let listed = self
            .store
            .list_with_delimiter(base)
            .await
            .map_err(|e| self.failed(e))?;
        let mut out: Vec<Entry> = listed
            .objects
            .into_iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?.to_owned();
                let millis = meta.last_modified.timestamp_millis().max(0) as u64;
                name.starts_with(prefix).then_some(Entry {
                    name,
                    size: meta.size,
                    modified: std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Delete `name`.
    pub async fn delete(&self, name: &str) -> Result<(), BackupError> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn locations_are_checked() {
        assert!(validate("file:///var/backups/drover").is_ok());
        assert!(validate("s3://drover-backups/prod/daily").is_ok());
        assert!(validate("s3://drover-backups").is_ok());
        for bad in [
            "file://relative/dir",
            "file:///a/../etc",
            "s3://UPPER/x",
            "s3://b/../x",
            "http://example.com/x",
            "s3://",
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}
