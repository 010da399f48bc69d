//! Drover's identities: local users, their password hashes and (later) API
//! tokens, global roles and bindings.
//!
//! # Layout
//! - [`password`]: argon2id hashing and verification, password rules.
//! - [`bootstrap`]: the first start's `admin` user.
//!
//! Password hashes live under `/drover/passwords/{user}`, apart from the
//! User object, so that no API response can ever carry one.

pub mod bootstrap;
pub mod password;

/// Why an auth operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A password breaks the rules.
    #[error("{0}")]
    WeakPassword(&'static str),
    /// Hashing failed (should not happen with valid parameters).
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] drover_store::StoreError),
}
