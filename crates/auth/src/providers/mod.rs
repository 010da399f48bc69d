//! Authentication providers configured at run time by AuthConfig objects:
//! [`ldap`] (LDAP and Active Directory) and [`oidc`].
//!
//! [`Providers`] reads a provider's object and write-only secrets from the
//! store when asked, and keeps the client built from them (an LDAP
//! connection pool, an OIDC discovery cache) until either changes, so an
//! admin's edit takes effect on the next login, with no restart. A
//! provider whose object is missing or has `spec.enabled: false` logs
//! nobody in.

pub mod ldap;
pub mod oidc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use drover_core::{api, keys};
use drover_store::{Revision, Store};
use serde::Serialize;
use serde_json::Value;

use crate::authconfigs;
use crate::principals::Principal;

/// Why a provider refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Wrong or unknown credentials, a disabled account, a bad code: the
    /// caller hears only "invalid username or password".
    #[error("invalid credentials")]
    Invalid,
    /// No such provider, or it is disabled.
    #[error("the provider {0:?} is not enabled")]
    Disabled(String),
    /// The provider cannot be reached or failed (detail for the log).
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider's configuration cannot work (detail for the log).
    #[error("the provider's configuration is unusable: {0}")]
    Config(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] drover_store::StoreError),
    /// Reading a user's records failed.
    #[error(transparent)]
    Auth(#[from] crate::AuthError),
}

impl ProviderError {
    /// The provider cannot be reached or failed, for this reason.
    pub fn unavailable(reason: impl std::fmt::Display) -> Self {
        Self::Unavailable(reason.to_string())
    }
}

/// A user or group a search found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    /// The principal id.
    pub id: String,
    /// `user` or `group`.
    pub kind: &'static str,
    /// Login or group name.
    pub name: String,
    /// The name people see.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// What a provider says of a user now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// There, with these groups.
    Found(Principal),
    /// Gone or disabled there.
    Gone,
    /// The provider cannot say (an OIDC user without a refresh token).
    Unknown,
}

/// A configured provider.
#[derive(Debug, Clone)]
pub enum Provider {
    /// LDAP or Active Directory.
    Directory(Arc<ldap::Directory>),
    /// OpenID Connect.
    Oidc(Arc<oidc::Oidc>),
}

/// The store key of a provider's AuthConfig.
pub fn config_key(name: &str) -> String {
    keys::object(api::GROUP, "authconfigs", None, name)
}

/// Whether a provider's AuthConfig exists and is enabled.
pub async fn enabled(store: &Store, name: &str) -> Result<bool, drover_store::StoreError> {
    Ok(store.get(&config_key(name)).await?.is_some_and(|kv| {
        serde_json::from_slice::<Value>(&kv.value)
            .ok()
            .and_then(|v| v.pointer("/spec/enabled").and_then(Value::as_bool))
            == Some(true)
    }))
}

/// Built providers by name, with the revisions of the object and secrets
/// each was built from.
type Built = HashMap<String, ((Revision, Revision), Provider)>;

/// The providers, built from their objects as they are now.
#[derive(Debug)]
pub struct Providers {
    store: Store,
    allow_private: bool,
    built: Mutex<Built>,
}

impl Providers {
    /// Providers over `store`; `allow_private` lets them reach internal
    /// addresses (`--allow-private-outbound`).
    pub fn new(store: Store, allow_private: bool) -> Arc<Self> {
        Arc::new(Self {
            store,
            allow_private,
            built: Mutex::new(HashMap::new()),
        })
    }

    /// The enabled provider `name`.
    pub async fn get(&self, name: &str) -> Result<Provider, ProviderError> {
        let disabled = || ProviderError::Disabled(name.to_owned());
        let kv = self
            .store
            .get(&config_key(name))
            .await?
            .ok_or_else(disabled)?;
        let config: api::AuthConfig =
            serde_json::from_slice(&kv.value).map_err(|e| ProviderError::Config(e.to_string()))?;
        if !config.spec.enabled {
            return Err(disabled());
        }
        let (secrets, secrets_kv) = authconfigs::read_secrets(&self.store, name).await?;
        let at = (kv.mod_revision, secrets_kv.map_or(0, |k| k.mod_revision));
        if let Some((built_at, p)) = self
            .built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            if *built_at == at {
                return Ok(p.clone());
            }
        }
        let provider = match (name, config.spec.ldap, config.spec.oidc) {
            ("oidc", _, Some(o)) => Provider::Oidc(Arc::new(oidc::Oidc::new(
                o,
                secrets.client_secret,
                self.allow_private,
            )?)),
            ("ldap" | "activedirectory", Some(l), _) => {
                Provider::Directory(Arc::new(ldap::Directory::new(
                    name,
                    l,
                    secrets.service_account_password.unwrap_or_default(),
                    self.allow_private,
                )?))
            }
            _ => return Err(ProviderError::Config(format!("{name} has no settings"))),
        };
        self.built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), (at, provider.clone()));
        Ok(provider)
    }

    /// The enabled directory `name` (`ldap` or `activedirectory`).
    pub async fn directory(&self, name: &str) -> Result<Arc<ldap::Directory>, ProviderError> {
        match self.get(name).await? {
            Provider::Directory(d) => Ok(d),
            Provider::Oidc(_) => Err(ProviderError::Disabled(name.to_owned())),
        }
    }

    /// The enabled OIDC provider.
    pub async fn oidc(&self) -> Result<Arc<oidc::Oidc>, ProviderError> {
        match self.get("oidc").await? {
            Provider::Oidc(o) => Ok(o),
            Provider::Directory(_) => Err(ProviderError::Disabled("oidc".into())),
        }
    }

    /// User `user` (principal `principal_id`) as their provider has them
    /// now, with the steps that record what the lookup used up, to commit
    /// with what the caller records of it. A directory is searched as its
    /// service account; an OIDC provider is asked with the user's refresh
    /// token, if one was given (a rotated one replaces it, a refused one is
    /// dropped).
    pub async fn refresh(
        &self,
        user: &str,
        provider: &str,
        principal_id: &str,
    ) -> Result<(Standing, Vec<drover_store::Op>), ProviderError> {
        let Some((_, "user", id)) = crate::principals::parse(principal_id) else {
            return Ok((Standing::Unknown, Vec::new()));
        };
        match self.get(provider).await? {
            Provider::Directory(d) => Ok((
                match d.refresh(id).await? {
                    Some(p) => Standing::Found(p),
                    None => Standing::Gone,
                },
                Vec::new(),
            )),
            Provider::Oidc(o) => {
                let key = oidc::refresh_key(user);
                let Some(kv) = self.store.get(&key).await? else {
                    return Ok((Standing::Unknown, Vec::new()));
                };
                let token = String::from_utf8_lossy(&kv.value).into_owned();
                Ok(match o.refresh(&token, principal_id).await? {
                    None => (
                        Standing::Gone,
                        vec![drover_store::Op::delete(key, kv.mod_revision)],
                    ),
                    Some((p, next)) if next != token => (
                        Standing::Found(p),
                        vec![drover_store::Op::update(key, next, kv.mod_revision)],
                    ),
                    Some((p, _)) => (Standing::Found(p), vec![drover_store::Op::live(&kv)]),
                })
            }
        }
    }

    /// Users and groups of every enabled directory whose names contain
    /// `query`.
    pub async fn search(&self, query: &str) -> Result<Vec<Found>, ProviderError> {
        let mut out = Vec::new();
        for name in ["ldap", "activedirectory"] {
            match self.directory(name).await {
                Ok(d) => out.extend(d.search_principals(query).await?),
                Err(ProviderError::Disabled(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The names of the enabled providers.
    pub async fn enabled_names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for name in crate::principals::PROVIDERS {
            if enabled(&self.store, name).await.unwrap_or(false) {
                out.push(name);
            }
        }
        out
    }
}
