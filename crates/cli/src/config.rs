//! `~/.drover/config.yaml` (or `$DROVER_CONFIG`): the servers the user
//! logged in to, each a named entry with its URL, token, trusted CA and
//! current cluster/project; written with mode 0600 (it holds tokens).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::CliError;

/// The whole file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// The entry commands use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// One entry per server.
    #[serde(default)]
    pub servers: Vec<ServerEntry>,
}

/// One server.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerEntry {
    /// The entry's name.
    pub name: String,
    /// `https://host:port`.
    pub url: String,
    /// The API token (`token-xxxxx:SECRET`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// Who the token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The CA to trust (PEM), when not a public one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_data: Option<String>,
    /// Skip TLS verification (dangerous; only when asked for).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
    /// The current cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The current project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

impl std::fmt::Debug for ServerEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerEntry")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("token", &"[REDACTED]")
            .field("cluster", &self.cluster)
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

/// Where the file is.
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("DROVER_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".drover").join("config.yaml")
}

/// The directory for cached kubeconfigs, beside the config file.
pub fn cache_dir() -> PathBuf {
    path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
        .join("kube")
}

impl Config {
    /// Read the file (none yet: empty).
    pub fn load() -> Result<Self, CliError> {
        let p = path();
        match std::fs::read_to_string(&p) {
            Ok(text) => yaml_serde::from_str(&text)
                .map_err(|e| CliError::Config(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(CliError::Config(format!("{}: {e}", p.display()))),
        }
    }

    /// Write the file, readable by its owner only.
    pub fn save(&self) -> Result<(), CliError> {
        let text = yaml_serde::to_string(self).expect("plain data serialises");
        write_private(&path(), text.as_bytes())
    }

    /// The entry named, or the current one.
    pub fn server(&self, name: Option<&str>) -> Result<&ServerEntry, CliError> {
        let name = match name.or(self.current.as_deref()) {
            Some(n) => n,
            None => return Err(CliError::NotLoggedIn),
        };
        self.servers.iter().find(|s| s.name == name).ok_or_else(|| {
            CliError::Usage(format!(
                "no server named {name:?} in {}; run drover login",
                path().display()
            ))
        })
    }

    /// The entry named, or the current one, to change.
    pub fn server_mut(&mut self, name: Option<&str>) -> Result<&mut ServerEntry, CliError> {
        let name = match name.or(self.current.as_deref()) {
            Some(n) => n.to_owned(),
            None => return Err(CliError::NotLoggedIn),
        };
        self.servers
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or(CliError::NotLoggedIn)
    }

    /// Add or replace an entry and make it current.
    pub fn upsert(&mut self, entry: ServerEntry) {
        self.current = Some(entry.name.clone());
        match self.servers.iter_mut().find(|s| s.name == entry.name) {
            Some(s) => *s = entry,
            None => self.servers.push(entry),
        }
    }
}

/// Write a file only its owner can read, through a temporary file, so a
/// crash never leaves half of it.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::Config(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(bytes).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}
