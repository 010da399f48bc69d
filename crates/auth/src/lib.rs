//! Drover's identities and their rights.
//!
//! # Layout
//! - [`password`]: argon2id hashing and the password rules.
//! - [`token`]: API tokens (`token-xxxxx:SECRET`, only a hash stored).
//! - [`authn`]: a bearer token → an [`authn::Identity`].
//! - [`login`]: `POST /v1-public/login`, with lockout after failures.
//! - [`authconfigs`]: the AuthConfig kind, its write-only secrets.
//! - [`providers`]: LDAP / Active Directory and OIDC logins, built from the
//!   AuthConfig objects at run time.
//! - [`principals`]: provider principals, the Users they are linked to, and
//!   their groups as last read.
//! - [`policy`]: the RBAC authorizer of the management API and the built-in
//!   global roles and role templates.
//! - [`kinds`]: User, Token, GlobalRole(Binding), RoleTemplate and the
//!   role-template bindings as API kinds (validation, no escalation).
//! - [`users`]: setting a password.
//! - [`bootstrap`]: the first start's `admin` and the built-in roles.
//!
//! Secrets live outside the API objects: password hashes under
//! `/drover/passwords/{user}`, token hashes under `/drover/tokens/{name}`,
//! login names under `/drover/usernames/{username}`, provider secrets under
//! `/drover/authsecrets/{name}`, principal links under
//! `/drover/principals/{hash}`, provider users' groups under
//! `/drover/usergroups/{user}`.

pub mod authconfigs;
pub mod authn;
pub mod bootstrap;
pub mod kinds;
pub mod login;
pub mod password;
pub mod policy;
pub mod principals;
pub mod providers;
pub mod token;
pub mod users;

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
