//! `POST /v1-public/login`: username and password for a token.
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
use crate::{password, token, AuthError};

/// Failures allowed within [`WINDOW`].
pub const MAX_FAILURES: usize = 5;
/// The failure window.
pub const WINDOW: Duration = Duration::from_secs(300);

/// The login body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Token lifetime (default: the server's login TTL).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// What the token is for.
    #[serde(default)]
    pub description: Option<String>,
}

/// A successful login.
#[derive(Debug)]
pub struct LoggedIn {
    /// `token-xxxxx:SECRET`.
    pub token: String,
    /// RFC 3339, if the token expires.
    pub expires_at: Option<String>,
    /// The user's object name.
    pub user: String,
}

/// Why a login failed.
#[derive(Debug)]
pub enum LoginError {
    /// Wrong username or password, or a disabled user (401).
    Invalid,
    /// Too many failures (429), retry after this many seconds.
    Locked(u64),
    /// The store failed.
    Store(AuthError),
}

/// The store key mapping a login name to its user object's name.
pub fn username_key(username: &str) -> String {
    format!("/drover/usernames/{username}")
}

/// Logins and their failure counts.
#[derive(Debug)]
pub struct Login {
    store: Store,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
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
    pub fn new(store: Store, login_ttl: Duration, max_ttl: Duration) -> Self {
        let _ = dummy_hash();
        Self {
            store,
            failures: Mutex::new(HashMap::new()),
            login_ttl,
            max_ttl,
        }
    }

    fn locked_for(&self, username: &str) -> Option<u64> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let list = failures.get_mut(username)?;
        while list.front().is_some_and(|t| t.elapsed() > WINDOW) {
            list.pop_front();
        }
        (list.len() >= MAX_FAILURES)
            .then(|| WINDOW.saturating_sub(list[0].elapsed()).as_secs().max(1))
    }

    fn record_failure(&self, username: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 100_000 {
            failures.retain(|_, l| l.back().is_some_and(|t| t.elapsed() < WINDOW));
        }
        let list = failures.entry(username.to_owned()).or_default();
        list.push_back(Instant::now());
        if list.len() == MAX_FAILURES {
            tracing::warn!(
                username,
                "login locked for 5 minutes after 5 failed attempts"
            );
        }
    }

    /// Check the password and mint a token.
    pub async fn login(&self, req: &LoginRequest) -> Result<LoggedIn, LoginError> {
        if let Some(secs) = self.locked_for(&req.username) {
            tracing::warn!(username = %req.username, "login refused: too many failed attempts");
            return Err(LoginError::Locked(secs));
        }
        let found = self.find(&req.username).await.map_err(LoginError::Store)?;
        let ok = match &found {
            Some((user, hash, enabled)) => {
                password::verify(&req.password, hash) && *enabled && !user.is_empty()
            }
            None => {
                let _ = password::verify(&req.password, dummy_hash());
                false
            }
        };
        let Some((user, _, _)) = found.filter(|_| ok) else {
            self.record_failure(&req.username);
            return Err(LoginError::Invalid);
        };
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&req.username);
        let ttl = Some(
            req.ttl_seconds
                .map(Duration::from_secs)
                .unwrap_or(self.login_ttl),
        );
        let minted = token::mint(
            &user,
            Some(req.description.as_deref().unwrap_or("login")),
            None,
            ttl,
            self.max_ttl,
        );
        let records = [
            (
                token::object_key(&minted.name),
                minted.object.to_string().into_bytes(),
            ),
            (
                token::record_key(&minted.name),
                serde_json::to_vec(&minted.record).expect("JSON"),
            ),
        ];
        self.store
            .create_all(&records)
            .await
            .map_err(|e| LoginError::Store(e.into()))?;
        tracing::info!(user = %user, token = %minted.name, "login");
        Ok(LoggedIn {
            token: minted.bearer,
            expires_at: minted.record.expires_at,
            user,
        })
    }

    /// (user object name, password hash, enabled) for a login name.
    async fn find(&self, username: &str) -> Result<Option<(String, String, bool)>, AuthError> {
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
        )))
    }
}
