//! The backup encryption key: a secret read from a file
//! (`--backup-encryption-key-file`), from which each file's cipher key is
//! derived with Argon2id and the file's own salt. The secret itself is
//! never written anywhere.

use std::path::Path;

use crate::BackupError;

/// The shortest secret accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// A backup encryption secret.
#[derive(Clone)]
pub struct Key {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(redacted)")
    }
}

impl Key {
    /// Read the secret from a file (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self, BackupError> {
        let raw = std::fs::read(path).map_err(|e| BackupError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let trimmed = raw.trim_ascii().to_vec();
        Self::from_bytes(trimmed).map_err(|_| BackupError::KeyFile {
            path: path.display().to_string(),
            reason: format!("it holds fewer than {MIN_KEY_BYTES} bytes"),
        })
    }

    /// A secret given as bytes.
    pub fn from_bytes(secret: Vec<u8>) -> Result<Self, BackupError> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(BackupError::KeyFile {
                path: String::new(),
                reason: format!("it holds fewer than {MIN_KEY_BYTES} bytes"),
            });
        }
        Ok(Self { secret })
    }

    /// The 32-byte cipher key for a file with this salt.
    pub(crate) fn derive(&self, salt: &[u8]) -> Result<[u8; 32], BackupError> {
        let mut out = [0u8; 32];
        argon2::Argon2::default()
            .hash_password_into(&self.secret, salt, &mut out)
            .map_err(|_| BackupError::Crypto("key derivation failed"))?;
        Ok(out)
    }
}
