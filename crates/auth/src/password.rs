//! Passwords: argon2id hashes in PHC string format, and the rules a new
//! password must meet.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use rand::distributions::{Alphanumeric, DistString};

use crate::AuthError;

/// Shortest password accepted.
pub const MIN_LENGTH: usize = 12;
/// Longest password accepted (argon2 takes any length; this bounds the work).
pub const MAX_LENGTH: usize = 256;

/// Check a new password against the rules: 12 to 256 characters, not the
/// username.
pub fn check_rules(username: &str, password: &str) -> Result<(), AuthError> {
    let len = password.chars().count();
    if len < MIN_LENGTH {
        return Err(AuthError::WeakPassword(
            "the password must be at least 12 characters long",
        ));
    }
    if len > MAX_LENGTH {
        return Err(AuthError::WeakPassword(
            "the password must be at most 256 characters long",
        ));
    }
    if password.eq_ignore_ascii_case(username) {
        return Err(AuthError::WeakPassword(
            "the password must not be the username",
        ));
    }
    Ok(())
}

/// Hash a password with argon2id (OWASP parameters: 19 MiB, 2 passes).
pub fn hash(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (the comparison inside
/// is constant-time). A malformed hash never matches.
pub fn verify(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// At most this many argon2 computations run at once (each takes 19 MiB).
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// [`verify`] off the async runtime's workers, at most 4 at a time.
pub async fn verify_async(password: String, hash: String) -> bool {
    let Ok(_permit) = HASHING.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || verify(&password, &hash))
        .await
        .unwrap_or(false)
}

/// [`hash`] off the async runtime's workers, at most 4 at a time.
pub async fn hash_async(password: String) -> Result<String, AuthError> {
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))?
}

/// A random password of 24 letters and digits (about 143 bits).
pub fn generate() -> String {
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterz", &h));
        assert!(!verify("anything", "not a hash"));
    }

    #[test]
    fn rules() {
        assert!(check_rules("admin", "short").is_err());
        assert!(check_rules("administrator", "Administrator").is_err());
        assert!(check_rules("admin", "long enough password").is_ok());
        assert_eq!(generate().len(), 24);
    }
}
