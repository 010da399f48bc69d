//! Authentication of API requests: a bearer token becomes an [`Identity`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use drover_core::{api, keys};
use drover_rbac::UserInfo;
use drover_store::Store;
use serde_json::Value;

use crate::token::{self, TokenRecord};
use crate::AuthError;

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";

/// Who a request comes from, and through which token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user.
    pub user: UserInfo,
    /// The token's name.
    pub token: String,
    /// The only cluster the token may reach, if scoped.
    pub cluster_scope: Option<String>,
    /// The user must change their password first.
    pub must_change_password: bool,
    /// When the token was made, if known.
    pub issued_at: Option<SystemTime>,
    /// Whether the token was made for a downloaded kubeconfig.
    pub for_kubeconfig: bool,
}

/// Why a token was refused (all answer 401; the reason is for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not `token-xxxxx:SECRET`.
    Malformed,
    /// No such token, or a wrong secret.
    Unknown,
    /// Past its expiry.
    Expired,
    /// The user is gone or disabled.
    UserDisabled,
}

/// The store key of a User object.
pub fn user_key(name: &str) -> String {
    keys::object(api::GROUP, "users", None, name)
}

/// A token that checked out against the store: what the cache keeps.
#[derive(Debug)]
struct Verified {
    identity: Identity,
    /// The token's hash, to check each presented secret against.
    hash: String,
    /// When it expires (an unreadable expiry counts as long past).
    expires_at: Option<SystemTime>,
}

impl Verified {
    fn expired(&self) -> bool {
        self.expires_at.is_some_and(|at| at <= SystemTime::now())
    }
}

/// Check a bearer token against the store (all but its expiry, which the
/// caller checks on every use, cached or not).
async fn verify(
    store: &Store,
    name: &str,
    secret: &str,
) -> Result<Result<Verified, Refusal>, AuthError> {
    let Some(kv) = store.get(&token::record_key(name)).await? else {
        // Spend the time a hash comparison would take.
        let _ = token::secret_matches(secret, &"0".repeat(64));
        return Ok(Err(Refusal::Unknown));
    };
    let record: TokenRecord = match serde_json::from_slice(&kv.value) {
        Ok(r) => r,
        Err(_) => return Ok(Err(Refusal::Unknown)),
    };
    if !token::secret_matches(secret, &record.hash) {
        return Ok(Err(Refusal::Unknown));
    }
    // Deleting the Token object revokes it at once.
    let Some(object) = store.get(&token::object_key(name)).await? else {
        return Ok(Err(Refusal::Unknown));
    };
    let object: Value = serde_json::from_slice(&object.value).unwrap_or_default();
    let issued_at = object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(drover_core::meta::parse_rfc3339);
    let for_kubeconfig = object
        .pointer("/spec/description")
        .and_then(Value::as_str)
        .is_some_and(|d| d.starts_with(token::KUBECONFIG_DESCRIPTION));
    let Some(user_kv) = store.get(&user_key(&record.user_name)).await? else {
        return Ok(Err(Refusal::UserDisabled));
    };
    let user: Value = serde_json::from_slice(&user_kv.value).unwrap_or_default();
    if user.pointer("/spec/enabled") == Some(&Value::Bool(false)) {
        return Ok(Err(Refusal::UserDisabled));
    }
    let uid = user
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let Some(groups) = standing(store, &record.user_name, &user).await? else {
        return Ok(Err(Refusal::UserDisabled));
    };
    Ok(Ok(Verified {
        identity: Identity {
            user: UserInfo {
                name: record.user_name,
                uid,
                groups,
                extra: Default::default(),
            },
            token: name.to_owned(),
            cluster_scope: record.cluster_name,
            must_change_password: user.pointer("/spec/mustChangePassword")
                == Some(&Value::Bool(true)),
            issued_at,
            for_kubeconfig,
        },
        hash: record.hash,
        expires_at: record
            .expires_at
            .as_deref()
            .map(|t| drover_core::meta::parse_rfc3339(t).unwrap_or(SystemTime::UNIX_EPOCH)),
    }))
}

/// A user's groups, or `None` when a provider user may not act now: their
/// provider is disabled or gone, or it no longer knows them, or they have no
/// recorded membership. Local users are in [`AUTHENTICATED`] only.
async fn standing(
    store: &Store,
    name: &str,
    user: &Value,
) -> Result<Option<Vec<String>>, AuthError> {
    let from_provider = user
        .pointer("/spec/principalIds")
        .and_then(Value::as_array)
        .is_some_and(|ids| !ids.is_empty());
    if !from_provider {
        return Ok(Some(vec![AUTHENTICATED.to_owned()]));
    }
    let Some((membership, _)) = crate::principals::membership(store, name).await? else {
        return Ok(None);
    };
    if membership.disabled || !crate::providers::enabled(store, &membership.provider).await? {
        return Ok(None);
    }
    let mut groups = vec![AUTHENTICATED.to_owned()];
    groups.extend(membership.groups);
    Ok(Some(groups))
}

/// How long a cached token is trusted before it is checked against the
/// store again, whatever the watch says.
const CACHE_MAX_AGE: Duration = Duration::from_secs(60);
/// Most tokens cached; when full, the cache starts again empty.
const CACHE_MAX_ENTRIES: usize = 10_000;

/// Checks bearer tokens, from memory when it safely can.
///
/// Checking a token against the store takes three reads; the proxy would
/// spend most of its time on them. So a token that checked out is cached
/// (its hash, expiry and identity; never the secret), and each presented
/// secret is compared with the cached hash in constant time.
///
/// The cache is used only while [`Authenticator::follow`] keeps it current
/// from the store's watch, and only once the watch has delivered every
/// write this process committed: a token deleted, or a user disabled or
/// changed, through this server is refused or seen changed by the very next
/// request. Such an event drops the entries it touches. A write by another
/// replica takes effect here as soon as its watch event arrives, and no
/// entry lives longer than a minute.
#[derive(Debug)]
pub struct Authenticator {
    store: Store,
    cache: Mutex<Cache>,
    /// The last store revision `follow` has applied to the cache.
    applied: AtomicI64,
    prefixes: Prefixes,
}

#[derive(Debug, Default)]
struct Cache {
    /// Whether `follow` keeps the entries current; otherwise none are used.
    live: bool,
    /// Bumped on every change that may make an entry stale, so that a check
    /// that read the store before the change does not cache what it read.
    epoch: u64,
    entries: HashMap<String, (Arc<Verified>, Instant)>,
}

impl Authenticator {
    /// An authenticator over `store`; without [`Self::follow`] every check
    /// reads the store.
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self {
            store,
            cache: Mutex::new(Cache::default()),
            applied: AtomicI64::new(0),
            prefixes: Prefixes {
                records: token::record_key(""),
                tokens: keys::prefix(api::GROUP, "tokens", None),
                users: keys::prefix(api::GROUP, "users", None),
                memberships: crate::principals::MEMBERSHIPS.to_owned(),
                providers: keys::prefix(api::GROUP, "authconfigs", None),
            },
        })
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Check a bearer token.
    pub async fn authenticate(&self, bearer: &str) -> Result<Result<Identity, Refusal>, AuthError> {
        let Some((name, secret)) = token::parse_bearer(bearer) else {
            return Ok(Err(Refusal::Malformed));
        };
        let (verified, epoch) = match self.cached(name) {
            Ok(hit) if token::secret_matches(secret, &hit.hash) => (hit, None),
            Ok(_) => return Ok(Err(Refusal::Unknown)),
            Err(epoch) => match verify(&self.store, name, secret).await? {
                Ok(v) => (Arc::new(v), epoch),
                Err(refusal) => return Ok(Err(refusal)),
            },
        };
        if verified.expired() {
            return Ok(Err(Refusal::Expired));
        }
        let identity = verified.identity.clone();
        if let Some(epoch) = epoch {
            let mut cache = self.cache();
            if cache.live && cache.epoch == epoch {
                if cache.entries.len() >= CACHE_MAX_ENTRIES {
                    cache.entries.clear();
                }
                cache
                    .entries
                    .insert(name.to_owned(), (verified, Instant::now()));
            }
        }
        Ok(Ok(identity))
    }

    /// Whether the token an identity came from still stands: not deleted,
    /// not expired, its user still there (the same one) and enabled, and, for
    /// a provider's user, their provider enabled, still vouching for them,
    /// and every group they had when the connection opened still theirs.
    /// Read from the store, for connections opened with the token, which
    /// must end when it no longer does.
    pub async fn still_valid(&self, identity: &Identity) -> Result<bool, AuthError> {
        let Some(kv) = self.store.get(&token::record_key(&identity.token)).await? else {
            return Ok(false);
        };
        let Ok(record) = serde_json::from_slice::<TokenRecord>(&kv.value) else {
            return Ok(false);
        };
        if record.user_name != identity.user.name
            || token::expired(record.expires_at.as_deref())
            || self
                .store
                .get(&token::object_key(&identity.token))
                .await?
                .is_none()
        {
            return Ok(false);
        }
        let Some(user_kv) = self.store.get(&user_key(&record.user_name)).await? else {
            return Ok(false);
        };
        let user: Value = serde_json::from_slice(&user_kv.value).unwrap_or_default();
        if user.pointer("/spec/enabled") == Some(&Value::Bool(false))
            || user.pointer("/metadata/uid").and_then(Value::as_str)
                != Some(identity.user.uid.as_str())
        {
            return Ok(false);
        }
        // A provider user's groups as when the connection opened: losing
        // one ends it (it reconnects with what is left).
        let groups = standing(&self.store, &record.user_name, &user).await?;
        Ok(groups.is_some_and(|g| identity.user.groups.iter().all(|have| g.contains(have))))
    }

    /// When the token an identity came from expires (`None`: never, or it
    /// is gone).
    pub async fn expiry(&self, identity: &Identity) -> Result<Option<SystemTime>, AuthError> {
        let Some(kv) = self.store.get(&token::record_key(&identity.token)).await? else {
            return Ok(None);
        };
        let record: Option<TokenRecord> = serde_json::from_slice(&kv.value).ok();
        Ok(record
            .and_then(|r| r.expires_at)
            .map(|t| drover_core::meta::parse_rfc3339(&t).unwrap_or(SystemTime::UNIX_EPOCH)))
    }

    /// Whether the cache is in use (the watch that keeps it current is up).
    #[cfg(test)]
    fn caching(&self) -> bool {
        self.cache().live
    }

    /// The cached token `name`, or the cache's epoch to check against when
    /// storing what the store says (`None`: do not store it).
    fn cached(&self, name: &str) -> Result<Arc<Verified>, Option<u64>> {
        let cache = self.cache();
        if !cache.live {
            return Err(None);
        }
        // The watch has not yet delivered one of this process's own writes,
        // which may be the revocation of this very token.
        if self.applied.load(Ordering::Acquire) < self.store.last_local_write() {
            return Err(None);
        }
        match cache.entries.get(name) {
            Some((v, at)) if at.elapsed() < CACHE_MAX_AGE => Ok(Arc::clone(v)),
            _ => Err(Some(cache.epoch)),
        }
    }

    /// Keep the cache current from the store's watch of every write until
    /// the store closes. While the watch is down the cache is not used.
    pub fn follow(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        self.store.follow("", self.clone())
    }
}

/// The cache follows every write, so that `applied` tells how far it has
/// read; token and user changes drop the entries they touch.
impl drover_store::Follower for Authenticator {
    fn reset(&self, revision: drover_store::Revision) -> futures::future::BoxFuture<'_, bool> {
        let mut cache = self.cache();
        cache.entries.clear();
        cache.epoch += 1;
        cache.live = true;
        self.applied.store(revision, Ordering::Release);
        Box::pin(async { true })
    }

    fn apply(&self, event: &drover_store::Event) {
        let key = event.kv.key.as_str();
        let token = key
            .strip_prefix(self.prefixes.records.as_str())
            .or_else(|| key.strip_prefix(self.prefixes.tokens.as_str()));
        if let Some(token) = token {
            let mut cache = self.cache();
            cache.epoch += 1;
            cache.entries.remove(token);
        } else if key.starts_with(self.prefixes.providers.as_str()) {
            // A provider enabled or disabled: every entry may be stale.
            let mut cache = self.cache();
            cache.epoch += 1;
            cache.entries.clear();
        } else if let Some(user) = key
            .strip_prefix(self.prefixes.users.as_str())
            .or_else(|| key.strip_prefix(self.prefixes.memberships.as_str()))
        {
            let mut cache = self.cache();
            cache.epoch += 1;
            cache
                .entries
                .retain(|_, (v, _)| v.identity.user.name != user);
        }
        self.applied.store(event.revision(), Ordering::Release);
    }

    fn lost(&self) {
        let mut cache = self.cache();
        cache.live = false;
        cache.entries.clear();
        cache.epoch += 1;
    }
}

/// The keys whose changes touch cached tokens.
#[derive(Debug)]
struct Prefixes {
    /// Token hash records.
    records: String,
    /// Token objects.
    tokens: String,
    /// User objects.
    users: String,
    /// Provider users' groups.
    memberships: String,
    /// AuthConfig objects.
    providers: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn store_at(dir: &std::path::Path) -> Store {
        Store::open(
            &format!("sqlite://{}/s.db", dir.display()),
            Default::default(),
        )
        .await
        .unwrap()
    }

    async fn add_user(store: &Store, name: &str) {
        let user = json!({"metadata": {"name": name, "uid": format!("uid-{name}")},
                          "spec": {"username": name, "enabled": true}});
        store
            .create(&user_key(name), user.to_string())
            .await
            .unwrap();
    }

    async fn set_user(store: &Store, name: &str, field: &str, value: bool) {
        let kv = store.get(&user_key(name)).await.unwrap().unwrap();
        let mut user: Value = serde_json::from_slice(&kv.value).unwrap();
        user["spec"][field] = json!(value);
        store
            .update(&user_key(name), user.to_string(), kv.mod_revision)
            .await
            .unwrap();
    }

    async fn add_token(store: &Store, user: &str) -> token::Minted {
        let t = token::mint(user, None, None, None, Duration::ZERO);
        store.create_all(&t.store_items()).await.unwrap();
        t
    }

    async fn until_caching(authn: &Authenticator) {
        for _ in 0..500 {
            if authn.caching() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the token cache never went live");
    }

    #[tokio::test]
    async fn writes_here_take_effect_on_the_next_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path()).await;
        let authn = Authenticator::new(store.clone());
        let _follow = authn.follow();
        until_caching(&authn).await;
        add_user(&store, "alice").await;
        add_user(&store, "bob").await;
        let a = add_token(&store, "alice").await;
        let b = add_token(&store, "bob").await;
        for _ in 0..3 {
            let id = authn.authenticate(&a.bearer).await.unwrap().unwrap();
            assert_eq!(id.user.name, "alice");
            assert_eq!(id.user.uid, "uid-alice");
            assert!(!id.must_change_password);
            assert!(authn.authenticate(&b.bearer).await.unwrap().is_ok());
        }
        // A cached token with a wrong secret is refused.
        let forged = format!("{}:{}", a.name, "x".repeat(54));
        assert_eq!(
            authn.authenticate(&forged).await.unwrap(),
            Err(Refusal::Unknown)
        );

        // Every change is seen by the very next check, without waiting.
        set_user(&store, "alice", "mustChangePassword", true).await;
        let id = authn.authenticate(&a.bearer).await.unwrap().unwrap();
        assert!(id.must_change_password);
        set_user(&store, "alice", "enabled", false).await;
        assert_eq!(
            authn.authenticate(&a.bearer).await.unwrap(),
            Err(Refusal::UserDisabled)
        );
        assert!(
            authn.authenticate(&b.bearer).await.unwrap().is_ok(),
            "other users' tokens still work"
        );
        store
            .delete(&token::object_key(&b.name), None)
            .await
            .unwrap();
        assert_eq!(
            authn.authenticate(&b.bearer).await.unwrap(),
            Err(Refusal::Unknown)
        );
        set_user(&store, "alice", "enabled", true).await;
        assert!(authn.authenticate(&a.bearer).await.unwrap().is_ok());
        store.delete(&user_key("alice"), None).await.unwrap();
        assert_eq!(
            authn.authenticate(&a.bearer).await.unwrap(),
            Err(Refusal::UserDisabled)
        );
    }

    #[tokio::test]
    async fn another_replicas_revocation_arrives_by_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let here = store_at(dir.path()).await;
        let there = store_at(dir.path()).await;
        let authn = Authenticator::new(here.clone());
        let _follow = authn.follow();
        until_caching(&authn).await;
        add_user(&there, "carol").await;
        let t = add_token(&there, "carol").await;
        assert!(authn.authenticate(&t.bearer).await.unwrap().is_ok());
        there
            .delete(&token::record_key(&t.name), None)
            .await
            .unwrap();
        let started = Instant::now();
        while authn.authenticate(&t.bearer).await.unwrap().is_ok() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the other replica's revocation never arrived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            authn.authenticate(&t.bearer).await.unwrap(),
            Err(Refusal::Unknown)
        );
    }

    #[tokio::test]
    async fn without_the_watch_every_check_reads_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path()).await;
        let authn = Authenticator::new(store.clone());
        add_user(&store, "dave").await;
        let t = add_token(&store, "dave").await;
        assert!(authn.authenticate(&t.bearer).await.unwrap().is_ok());
        assert!(!authn.caching());
        store
            .delete(&token::object_key(&t.name), None)
            .await
            .unwrap();
        assert_eq!(
            authn.authenticate(&t.bearer).await.unwrap(),
            Err(Refusal::Unknown)
        );
        assert_eq!(
            authn.authenticate("nonsense").await.unwrap(),
            Err(Refusal::Malformed)
        );
    }
}
