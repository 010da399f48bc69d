//! The backup encryption key: a secret read from a file
//! (`--backup-encryption-key-file`), from which a file's cipher key is
//! derived with Argon2id and the salt in its header. The secret itself is
//! never written anywhere. Argon2id is slow on purpose, so a [`Key`]
//! remembers what it derived, and the files one process writes share one
//! random salt (each has its own random nonce): the log archive's segments
//! cost one derivation per process, not one per file.

use std::path::Path;

use crate::BackupError;

/// The shortest secret accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// A backup encryption secret.
#[derive(Clone)]
pub struct Key {
    secret: Vec<u8>,
    /// The salt of the files this process writes.
    write_salt: [u8; 16],
    /// Salt → derived key.
    derived: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Vec<u8>, [u8; 32]>>>,
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
        let mut write_salt = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut write_salt);
        Ok(Self {
            secret,
            write_salt,
            derived: Default::default(),
        })
    }

    /// The salt for files written now.
    pub(crate) fn write_salt(&self) -> [u8; 16] {
        self.write_salt
    }

    /// The 32-byte cipher key for a file with this salt.
    pub(crate) fn derive(&self, salt: &[u8]) -> Result<[u8; 32], BackupError> {
        if let Some(known) = self.derived.lock().expect("not poisoned").get(salt) {
            return Ok(*known);
        }
        let mut out = [0u8; 32];
        argon2::Argon2::default()
            .hash_password_into(&self.secret, salt, &mut out)
            .map_err(|_| BackupError::Crypto("key derivation failed"))?;
        let mut cache = self.derived.lock().expect("not poisoned");
        // A handful of salts at most (one per writing process); bounded
        // anyway.
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(salt.to_vec(), out);
        Ok(out)
    }
}
