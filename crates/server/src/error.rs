//! Why the server could not start. Each variant names the step that failed;
//! the binary prints it as one line.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Flags that do not go together.
    #[error("{0}")]
    Flags(String),
    /// Opening the datastore failed.
    #[error(transparent)]
    Store(#[from] drover_store::StoreError),
    /// Creating the bootstrap admin failed.
    #[error("cannot create the admin user: {0}")]
    Bootstrap(#[from] drover_auth::AuthError),
    /// A TLS file could not be read or parsed.
    #[error("cannot use {flag} {path}: {reason}")]
    TlsFile {
        /// `--tls-cert`, `--tls-key` or `--tls-ca`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate and key do not form a usable pair.
    #[error("--tls-cert and --tls-key do not match: {0}")]
    TlsMismatch(String),
    /// Generating or loading the stored certificates failed.
    #[error("cannot prepare the server certificates: {0}")]
    Certificates(String),
    /// The replica-to-replica connection cannot be set up.
    #[error("cannot prepare the peer connection: {0}")]
    Peer(#[from] crate::link::peer::PeerError),
    /// The audit log cannot be opened.
    #[error("cannot open the audit log {path}: {reason}")]
    Audit {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The backup key file or log archive cannot be used.
    #[error("{0}")]
    Backup(#[from] drover_backup::BackupError),
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
