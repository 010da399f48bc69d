//! `POST /v1-public/login`: username and password for a token — a local
//! user's, or a directory user's (`"provider": "ldap" | "activedirectory"`);
//! or, with `"provider": "oidc"`, the code and state an OIDC provider
//! redirected back with ([`crate::providers::oidc`]). A provider's user is
//! linked to their Drover User (made on first login) and their groups are
//! recorded with the token, in one transaction ([`crate::principals`]).
//!
//! An unknown user, a wrong password and a disabled user get the same answer
//! in about the same time (an unknown user is checked against a dummy hash).
//! After 5 failures for one username within 5 minutes, further attempts get
//! 429 until the oldest failure is 5 minutes old; this is logged. The count
//! is per server process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use drover_store::Store;
use serde::Deserialize;
use serde_json::Value;

use crate::authn::user_key;
use crate::principals::{self, Principal};
use crate::providers::{ProviderError, Providers};
use crate::{password, token, AuthError};

/// Failures allowed within [`WINDOW`].
pub const MAX_FAILURES: usize = 5;
/// The failure window.
pub const WINDOW: Duration = Duration::from_secs(300);

/// The login body: `username` and `password` (local and directory
/// accounts), or `code` and `state` (OIDC).
#[derive(Deserialize)]
#[serde(try_from = "RawLogin")]
pub struct LoginRequest {
    /// `local` (the default), `ldap`, `activedirectory` or `oidc`.
    pub provider: Option<String>,
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
    /// OIDC: the code the provider redirected back with.
    pub code: Option<String>,
    /// OIDC: the state it came back with.
    pub state: Option<String>,
    /// OIDC: the PKCE verifier, when the client kept its own.
    pub code_verifier: Option<String>,
    /// Token lifetime (default: the server's login TTL).
    pub ttl_seconds: Option<u64>,
    /// What the token is for.
    pub description: Option<String>,
}

/// The login body as sent, before the fields its provider needs are
/// checked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawLogin {
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    code_verifier: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    description: Option<String>,
}

impl TryFrom<RawLogin> for LoginRequest {
    type Error = String;

    fn try_from(raw: RawLogin) -> Result<Self, String> {
        let oidc = raw.provider.as_deref() == Some("oidc");
        match raw.provider.as_deref() {
            None | Some("local" | "ldap" | "activedirectory" | "oidc") => {}
            Some(_) => return Err("provider must be local, ldap, activedirectory or oidc".into()),
        }
        let (username, password) = if oidc {
            if raw.code.is_none() || raw.state.is_none() {
                return Err("an oidc login needs the code and state".into());
            }
            if raw.username.is_some() || raw.password.is_some() {
                return Err("an oidc login takes no username or password".into());
            }
            (String::new(), String::new())
        } else {
            match (raw.username, raw.password) {
                (Some(u), Some(p)) => (u, p),
                _ => return Err("username and password are required".into()),
            }
        };
        Ok(Self {
            provider: raw.provider,
            username,
            password,
            code: raw.code,
            state: raw.state,
            code_verifier: raw.code_verifier,
            ttl_seconds: raw.ttl_seconds,
            description: raw.description,
        })
    }
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("provider", &self.provider)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// A successful login.
pub struct LoggedIn {
    /// `token-xxxxx:SECRET`.
    pub token: String,
    /// RFC 3339, if the token expires.
    pub expires_at: Option<String>,
    /// The user's object name.
    pub user: String,
    /// The provider's principal, for a provider's user.
    pub principal: Option<Principal>,
}

impl std::fmt::Debug for LoggedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedIn")
            .field("user", &self.user)
            .field("token", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// Why a login failed.
#[derive(Debug)]
pub enum LoginError {
    /// Wrong username or password, or a disabled user (401).
    Invalid,
    /// Too many failures (429), retry after this many seconds.
    Locked(u64),
    /// The provider cannot be reached or is misconfigured (503; the detail
    /// is logged, not answered).
    Unavailable,
    /// The store failed.
    Store(AuthError),
}

/// The store key mapping a login name to its user object's name.
pub fn username_key(username: &str) -> String {
    format!("/drover/usernames/{username}")
}

/// Recent failures and running attempts for one username.
#[derive(Debug, Default)]
struct Attempts {
    failures: VecDeque<Instant>,
    in_flight: usize,
}

/// Logins and their failure counts.
#[derive(Debug)]
pub struct Login {
    store: Store,
    providers: std::sync::Arc<Providers>,
    failures: Mutex<HashMap<String, Attempts>>,
    /// Default token lifetime for a login.
    pub login_ttl: Duration,
    /// Longest token lifetime allowed (zero: no limit).
    pub max_ttl: Duration,
}

fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| password::hash("not a password anyone has").expect("hashing works"))
}

impl Login {
    /// A login service over `store`.
    pub fn new(
        store: Store,
        providers: std::sync::Arc<Providers>,
        login_ttl: Duration,
        max_ttl: Duration,
    ) -> Self {
        let _ = dummy_hash();
        Self {
            store,
            providers,
            failures: Mutex::new(HashMap::new()),
            login_ttl,
            max_ttl,
        }
    }

    /// Start an attempt: refused (with seconds to wait) when recorded
    /// failures plus attempts still running reach the limit, so parallel
    /// guesses cannot slip past the count.
    fn begin(&self, username: &str) -> Result<(), u64> {
        let mut all = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() > 100_000 {
            all.retain(|_, a| {
                a.in_flight > 0 || a.failures.back().is_some_and(|t| t.elapsed() < WINDOW)
            });
            if all.len() > 100_000 {
                return Err(WINDOW.as_secs()); // under attack from many names: refuse new ones for a while
            }
        }
        let a = all.entry(username.to_owned()).or_default();
        while a.failures.front().is_some_and(|t| t.elapsed() > WINDOW) {
            a.failures.pop_front();
        }
        if a.failures.len() + a.in_flight >= MAX_FAILURES {
            let oldest = a.failures.front().map(|t| t.elapsed()).unwrap_or_default();
            return Err(WINDOW.saturating_sub(oldest).as_secs().max(1));
        }
        a.in_flight += 1;
        Ok(())
    }

    /// End an attempt started with [`Self::begin`].
    fn end(&self, username: &str, failed: bool) {
        let mut all = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let Some(a) = all.get_mut(username) else {
            return;
        };
        a.in_flight = a.in_flight.saturating_sub(1);
        if failed {
            a.failures.push_back(Instant::now());
            if a.failures.len() == MAX_FAILURES {
                tracing::warn!(
                    username,
                    "login locked for 5 minutes after 5 failed attempts"
                );
            }
        } else {
            a.failures.clear();
        }
        if a.failures.is_empty() && a.in_flight == 0 {
            all.remove(username);
        }
    }

    /// Log in: check the credentials and mint a token.
    pub async fn login(&self, req: &LoginRequest) -> Result<LoggedIn, LoginError> {
        match req.provider.as_deref() {
            None | Some("local") => self.local(req).await,
            Some(provider) => self.through_provider(provider, req).await,
        }
    }

    /// A provider's login: the principal it vouches for, then the user and
    /// the token.
    async fn through_provider(
        &self,
        provider: &str,
        req: &LoginRequest,
    ) -> Result<LoggedIn, LoginError> {
        let found = match provider {
            "ldap" | "activedirectory" => {
                // Names no directory login could match are refused
                // uncounted, as is any name while the provider is off, so
                // neither can grow the failure table.
                let name = req.username.trim();
                if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
                    return Err(LoginError::Invalid);
                }
                let directory = match self.providers.directory(provider).await {
                    Ok(d) => d,
                    Err(ProviderError::Disabled(_)) => return Err(LoginError::Invalid),
                    Err(e) => {
                        tracing::error!(provider, error = %e, "login through a provider failed");
                        return Err(LoginError::Unavailable);
                    }
                };
                // Directories match login names without case.
                let counted = format!("{provider}:{}", name.to_lowercase());
                if let Err(secs) = self.begin(&counted) {
                    tracing::warn!(provider, username = %name, "login refused: too many failed attempts");
                    return Err(LoginError::Locked(secs));
                }
                let found = directory.login(name, &req.password).await;
                // Only a refusal counts: an outage is no guess.
                self.end(&counted, matches!(found, Err(ProviderError::Invalid)));
                found.map(|p| (p, None))
            }
            "oidc" => match (&req.code, &req.state) {
                (Some(code), Some(state)) => match self.providers.oidc().await {
                    Ok(o) => {
                        o.finish(&self.store, code, state, req.code_verifier.as_deref())
                            .await
                    }
                    Err(e) => Err(e),
                },
                _ => Err(ProviderError::Invalid),
            },
            _ => Err(ProviderError::Invalid),
        };
        let (principal, refresh) = match found {
            Ok(found) => found,
            Err(ProviderError::Invalid | ProviderError::Disabled(_)) => {
                return Err(LoginError::Invalid)
            }
            Err(ProviderError::Store(e)) => return Err(LoginError::Store(e.into())),
            Err(e) => {
                tracing::error!(provider, error = %e, "login through a provider failed");
                return Err(LoginError::Unavailable);
            }
        };
        self.commit(principal, refresh, req).await
    }

    /// Link the principal to its user, record its groups, mint the token:
    /// one transaction, tried again if another login raced it.
    async fn commit(
        &self,
        principal: Principal,
        refresh: Option<String>,
        req: &LoginRequest,
    ) -> Result<LoggedIn, LoginError> {
        let store_err = |e: AuthError| LoginError::Store(e);
        for _ in 0..3 {
            let Some((user, mut ops)) = principals::user_for_login(&self.store, &principal)
                .await
                .map_err(store_err)?
            else {
                return Err(LoginError::Invalid);
            };
            let current = principals::membership(&self.store, &user)
                .await
                .map_err(store_err)?;
            let next = principals::found(&principal);
            match &current {
                // An OIDC subject is unique per issuer only: the user of
                // another issuer is not this one.
                Some((m, _)) if m.issuer.is_some() && m.issuer != next.issuer => {
                    tracing::warn!(user = %user, principal = %principal.id,
                        "login refused: the user signed in through another OIDC issuer; delete the user to let this one in");
                    return Err(LoginError::Invalid);
                }
                // Unchanged: no write, so open connections are not checked
                // again for nothing.
                Some((m, kv)) if !m.differs(&next) => ops.push(drover_store::Op::live(kv)),
                _ => ops.push(principals::write_membership(
                    &user,
                    &next,
                    current.as_ref().map(|(_, kv)| kv),
                )),
            }
            // The OIDC refresh token, for the scheduled group refresh.
            if let Some(token) = &refresh {
                let key = crate::providers::oidc::refresh_key(&user);
                ops.push(
                    match self
                        .store
                        .get(&key)
                        .await
                        .map_err(|e| store_err(e.into()))?
                    {
                        Some(kv) => drover_store::Op::update(key, token.clone(), kv.mod_revision),
                        None => drover_store::Op::create(key, token.clone()),
                    },
                );
            }
            let minted = self.mint(&user, req);
            ops.extend(minted.store_ops());
            match self.store.txn(&ops).await {
                Ok(_) => {
                    tracing::info!(user = %user, provider = %principal.provider, principal = %principal.id,
                        groups = principal.groups.len(), token = %minted.name, "login");
                    return Ok(LoggedIn {
                        token: minted.bearer,
                        expires_at: minted.record.expires_at,
                        user,
                        principal: Some(principal),
                    });
                }
                Err(e) if principals::raced(&e) => continue,
                Err(e) => return Err(LoginError::Store(e.into())),
            }
        }
        Err(LoginError::Unavailable)
    }

    fn mint(&self, user: &str, req: &LoginRequest) -> token::Minted {
        let ttl = Some(
            req.ttl_seconds
                .map(Duration::from_secs)
                .unwrap_or(self.login_ttl),
        );
        token::mint(
            user,
            Some(req.description.as_deref().unwrap_or("login")),
            None,
            ttl,
            self.max_ttl,
        )
    }

    /// A local user's login.
    async fn local(&self, req: &LoginRequest) -> Result<LoggedIn, LoginError> {
        // Names that cannot exist are refused without being counted, so
        // they cannot grow the failure table.
        if !crate::kinds::valid_username(&req.username) {
            let _ = password::verify_async(req.password.clone(), dummy_hash().to_owned()).await;
            return Err(LoginError::Invalid);
        }
        if let Err(secs) = self.begin(&req.username) {
            tracing::warn!(username = %req.username, "login refused: too many failed attempts");
            return Err(LoginError::Locked(secs));
        }
        let found = match self.find(&req.username).await {
            Ok(f) => f,
            Err(e) => {
                self.end(&req.username, false);
                return Err(LoginError::Store(e));
            }
        };
        let ok = match &found {
            Some((user, hash, enabled, _)) => {
                password::verify_async(req.password.clone(), hash.clone()).await
                    && *enabled
                    && !user.is_empty()
            }
            None => {
                let _ = password::verify_async(req.password.clone(), dummy_hash().to_owned()).await;
                false
            }
        };
        self.end(&req.username, !ok);
        let Some((user, _, _, user_kv)) = found.filter(|_| ok) else {
            return Err(LoginError::Invalid);
        };
        let minted = self.mint(&user, req);
        // Not for a user deleted (or made again) since the password check.
        let mut ops = minted.store_ops();
        ops.push(drover_store::Op::live(&user_kv));
        match self.store.txn(&ops).await {
            Ok(_) => {}
            Err(
                drover_store::StoreError::NotFound(_) | drover_store::StoreError::Conflict { .. },
            ) => return Err(LoginError::Invalid),
            Err(e) => return Err(LoginError::Store(e.into())),
        }
        tracing::info!(user = %user, token = %minted.name, "login");
        Ok(LoggedIn {
            token: minted.bearer,
            expires_at: minted.record.expires_at,
            user,
            principal: None,
        })
    }

    /// (user object name, password hash, enabled, the User as stored) for a
    /// login name.
    async fn find(
        &self,
        username: &str,
    ) -> Result<Option<(String, String, bool, drover_store::KeyValue)>, AuthError> {
        if username.is_empty() || drover_store::validate_key(&username_key(username)).is_err() {
            return Ok(None);
        }
        let Some(index) = self.store.get(&username_key(username)).await? else {
            return Ok(None);
        };
        let user = String::from_utf8_lossy(&index.value).into_owned();
        let Some(user_kv) = self.store.get(&user_key(&user)).await? else {
            return Ok(None);
        };
        let obj: Value = serde_json::from_slice(&user_kv.value).unwrap_or_default();
        if obj.pointer("/spec/username").and_then(Value::as_str) != Some(username) {
            return Ok(None); // a stale index entry
        }
        let Some(hash) = self
            .store
            .get(&drover_core::keys::password_hash(&user))
            .await?
        else {
            return Ok(None);
        };
        let enabled = obj.pointer("/spec/enabled") != Some(&Value::Bool(false));
        Ok(Some((
            user,
            String::from_utf8_lossy(&hash.value).into_owned(),
            enabled,
            user_kv,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn attempts_in_flight_count_toward_the_lockout() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &format!("sqlite://{}/s.db", dir.path().display()),
            Default::default(),
        )
        .await
        .unwrap();
        let providers = Providers::new(store.clone(), false);
        let login = Login::new(store, providers, Duration::from_secs(60), Duration::ZERO);
        for _ in 0..MAX_FAILURES {
            assert!(login.begin("bob").is_ok());
        }
        assert!(
            login.begin("bob").is_err(),
            "five running guesses fill the window"
        );
        login.end("bob", false);
        assert!(
            login.begin("bob").is_ok(),
            "a success clears the failures and frees a slot"
        );
        for _ in 0..MAX_FAILURES {
            login.end("bob", true);
        }
        assert!(login.begin("bob").is_err(), "five failures lock");
        assert!(login.begin("alice").is_ok(), "per username");
    }
}
