//! OpenID Connect: the authorization code flow with PKCE.
//!
//! [`Oidc::start`] reads the provider's discovery document and returns the
//! provider's authorization URL with a state that Drover signs (HMAC-SHA256
//! with a key made once and kept in the store) and that carries the sign-in:
//! a random seed, when it started, the redirect URI, and whether the PKCE
//! verifier is the server's (the web UI: derived from the seed with the key)
//! or the client's (the CLI sends only its challenge, and proves the
//! verifier at the end). Starting a sign-in writes nothing. [`Oidc::finish`]
//! takes the code and the state the provider redirected back with, checks
//! the state's signature and age (ten minutes), exchanges the code with the
//! verifier and the client secret, verifies the ID token against the
//! provider's keys — signature, issuer, audience, expiry, and the nonce
//! derived from the seed — and records the seed as used, so a state works
//! once. The username and groups come from the verified token's claims.
//!
//! When the provider gives a refresh token (ask for `offline_access`), it
//! is kept as a server record (`/drover/oidc/refresh/{user}`, never shown),
//! and the scheduled group refresh uses it ([`Oidc::refresh`]): the new ID
//! token's groups replace the old, and a refresh the provider refuses
//! (`invalid_grant`: the user was disabled, deleted or signed out there)
//! ends the user's tokens. Without one, a user keeps the groups of their
//! last login.
//!
//! Every request goes through a client that refuses internal addresses
//! (unless allowed) and follows no redirects; the discovery document's
//! endpoints are checked before any is used.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use drover_core::api::OidcConfig;
use drover_store::{Op, Store, StoreError};
use hmac::{Hmac, Mac};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use rand::RngCore;
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;

use super::ProviderError;
use crate::principals::{self, Principal};

/// The key that signs sign-in states, made once.
const STATE_KEY: &str = "/drover/oidc/state-key";
/// Seeds of finished sign-ins, kept while their state is young enough to
/// be presented again.
const USED: &str = "/drover/oidc/used/";

/// The store key of a user's refresh token.
pub fn refresh_key(user: &str) -> String {
    format!("/drover/oidc/refresh/{user}")
}

/// The prefix of users' refresh tokens.
pub const REFRESH_TOKENS: &str = "/drover/oidc/refresh/";

/// How long a sign-in may take.
const STATE_TTL: Duration = Duration::from_secs(600);

/// A sign-in, as its signed state carries it.
struct SignIn {
    seed: String,
    created: u64,
    redirect_uri: String,
    /// The client holds the PKCE verifier (else the server derives it).
    client_verifier: bool,
}

/// A client built from discovery: authorization endpoint set, token and
/// user-info endpoints as the provider says.
type Client = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// A started sign-in.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// Where to send the user.
    pub url: String,
    /// The state the provider will send back.
    pub state: String,
}

/// A configured OIDC provider.
pub struct Oidc {
    config: OidcConfig,
    secret: Option<String>,
    http: reqwest::Client,
    allow_private: bool,
    metadata: tokio::sync::Mutex<Option<(CoreProviderMetadata, std::time::Instant)>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Refuse a URL whose host is an internal address literal (names are
/// checked by the client's resolver as they are looked up).
fn check_url(url: &str, allow_private: bool) -> Result<(), ProviderError> {
    drover_net::outbound::check_url(url, allow_private)
        .map(drop)
        .map_err(|e| ProviderError::Config(e.to_string()))
}

impl Oidc {
    /// A provider for `config`, with its client secret.
    pub fn new(
        config: OidcConfig,
        secret: Option<String>,
        allow_private: bool,
    ) -> Result<Self, ProviderError> {
        let tls = drover_net::client::client_config(config.certificate.as_deref(), false)
            .map_err(ProviderError::Config)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the name itself, past the outbound check.
            .no_proxy()
            .dns_resolver(Arc::new(drover_net::outbound::Resolver { allow_private }))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ProviderError::Config(e.to_string()))?;
        Ok(Self {
            config,
            secret,
            http,
            allow_private,
            metadata: tokio::sync::Mutex::new(None),
        })
    }

    /// The discovery document and the provider's keys, read at most every
    /// ten minutes. Every endpoint it names is checked against the outbound
    /// rule before any is used.
    async fn metadata(&self) -> Result<CoreProviderMetadata, ProviderError> {
        let mut cached = self.metadata.lock().await;
        if let Some((m, at)) = &*cached {
            if at.elapsed() < Duration::from_secs(600) {
                return Ok(m.clone());
            }
        }
        let issuer = self.config.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        check_url(&url, self.allow_private)?;
        let discovery = |e: &dyn std::fmt::Display| {
            ProviderError::unavailable(format!("discovery at {url}: {e}"))
        };
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| discovery(&e))?;
        if !resp.status().is_success() {
            return Err(discovery(&resp.status()));
        }
        let body = resp.bytes().await.map_err(|e| discovery(&e))?;
        let m: CoreProviderMetadata = serde_json::from_slice(&body).map_err(|e| discovery(&e))?;
        if m.issuer().as_str().trim_end_matches('/') != issuer {
            return Err(discovery(&format!(
                "it names another issuer, {}",
                m.issuer().as_str()
            )));
        }
        check_url(m.authorization_endpoint().as_str(), self.allow_private)?;
        check_url(m.jwks_uri().as_str(), self.allow_private)?;
        if let Some(t) = m.token_endpoint() {
            check_url(t.as_str(), self.allow_private)?;
        }
        if let Some(u) = m.userinfo_endpoint() {
            check_url(u.as_str(), self.allow_private)?;
        }
        let keys = CoreJsonWebKeySet::fetch_async(m.jwks_uri(), &self.http)
            .await
            .map_err(|e| ProviderError::unavailable(format!("the provider's keys: {e}")))?;
        let m = m.set_jwks(keys);
        *cached = Some((m.clone(), std::time::Instant::now()));
        Ok(m)
    }

    /// The client for the provider as discovered, redirecting to
    /// `redirect_uri` if given.
    async fn client(&self, redirect_uri: Option<&str>) -> Result<Client, ProviderError> {
        let client = CoreClient::from_provider_metadata(
            self.metadata().await?,
            ClientId::new(self.config.client_id.clone()),
            self.secret.clone().map(ClientSecret::new),
        );
        Ok(match redirect_uri {
            Some(uri) => client.set_redirect_uri(
                RedirectUrl::new(uri.to_owned())
                    .map_err(|e| ProviderError::Config(e.to_string()))?,
            ),
            None => client,
        })
    }

    fn scopes(&self) -> Vec<String> {
        if self.config.scopes.is_empty() {
            ["profile", "email", "groups"].map(str::to_owned).to_vec()
        } else {
            self.config
                .scopes
                .iter()
                .filter(|s| *s != "openid")
                .cloned()
                .collect()
        }
    }

    /// Start a sign-in that will come back to `redirect_uri`. A client
    /// that keeps its own PKCE verifier gives its S256 challenge.
    pub async fn start(
        &self,
        store: &Store,
        redirect_uri: &str,
        code_challenge: Option<&str>,
    ) -> Result<Started, ProviderError> {
        if code_challenge.is_some_and(|c| {
            c.len() != 43
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }) {
            return Err(ProviderError::Invalid);
        }
        let client = self.client(Some(redirect_uri)).await?;
        let key = state_key(store).await?;
        let mut seed = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut seed);
        let sign_in = SignIn {
            seed: hex::encode(seed),
            created: now_secs(),
            redirect_uri: redirect_uri.to_owned(),
            client_verifier: code_challenge.is_some(),
        };
        let state = sign_in.encode(&key);
        let nonce = derive(&key, "nonce", &sign_in.seed);
        let (csrf, nonce_value) = (state.clone(), nonce);
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(csrf),
            move || Nonce::new(nonce_value),
        );
        let scopes = self.scopes();
        // OIDC Core §11: offline access is granted only with consent.
        if scopes.iter().any(|s| s == "offline_access") {
            request = request.add_prompt(openidconnect::core::CoreAuthPrompt::Consent);
        }
        for s in scopes {
            request = request.add_scope(Scope::new(s));
        }
        let request = match code_challenge {
            Some(challenge) => request
                .add_extra_param("code_challenge", challenge.to_owned())
                .add_extra_param("code_challenge_method", "S256"),
            None => request.set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(
                &PkceCodeVerifier::new(derive(&key, "pkce", &sign_in.seed)),
            )),
        };
        let (url, _, _) = request.url();
        Ok(Started {
            url: url.to_string(),
            state,
        })
    }

    /// Finish a sign-in: the principal the verified ID token names, and
    /// the refresh token if the provider gave one. `code_verifier` is the
    /// client's, when it kept its own.
    pub async fn finish(
        &self,
        store: &Store,
        code: &str,
        state: &str,
        code_verifier: Option<&str>,
    ) -> Result<(Principal, Option<String>), ProviderError> {
        let key = state_key(store).await?;
        let sign_in = SignIn::decode(&key, state).ok_or(ProviderError::Invalid)?;
        if now_secs().saturating_sub(sign_in.created) > STATE_TTL.as_secs() {
            return Err(ProviderError::Invalid);
        }
        let verifier = match (sign_in.client_verifier, code_verifier) {
            (true, Some(v)) => v.to_owned(),
            (false, None) => derive(&key, "pkce", &sign_in.seed),
            _ => return Err(ProviderError::Invalid),
        };
        let client = self.client(Some(&sign_in.redirect_uri)).await?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| ProviderError::Config(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                tracing::info!(error = %e, "OIDC code exchange refused");
                ProviderError::Invalid
            })?;
        let id_token = response.id_token().ok_or(ProviderError::Invalid)?;
        let nonce = Nonce::new(derive(&key, "nonce", &sign_in.seed));
        let claims = id_token
            .claims(&client.id_token_verifier(), &nonce)
            .map_err(|e| {
                tracing::info!(error = %e, "OIDC ID token refused");
                ProviderError::Invalid
            })?;
        // Once only: the seed is recorded (and old ones dropped).
        forget_used(store).await;
        match store
            .create(
                &format!("{USED}{}", sign_in.seed),
                sign_in.created.to_string(),
            )
            .await
        {
            Ok(_) => {}
            Err(StoreError::AlreadyExists(_)) => return Err(ProviderError::Invalid),
            Err(e) => return Err(e.into()),
        }
        let principal = self.principal(&id_token.to_string(), claims.subject().as_str())?;
        let refresh = response.refresh_token().map(|r| r.secret().clone());
        Ok((principal, refresh))
    }

    /// A user as the provider has them now, by their refresh token:
    /// `Ok(None)` when the provider refuses it (the user is gone or
    /// disabled there, or signed out); else the principal and the refresh
    /// token to keep (a new one if the provider rotates them).
    pub async fn refresh(
        &self,
        refresh_token: &str,
        principal_id: &str,
    ) -> Result<Option<(Principal, String)>, ProviderError> {
        let client = self.client(None).await?;
        let response = match client
            .exchange_refresh_token(&openidconnect::RefreshToken::new(refresh_token.to_owned()))
            .map_err(|e| ProviderError::Config(e.to_string()))?
            .request_async(&self.http)
            .await
        {
            Ok(r) => r,
            Err(openidconnect::RequestTokenError::ServerResponse(e))
                if *e.error() == openidconnect::core::CoreErrorResponseType::InvalidGrant =>
            {
                return Ok(None);
            }
            Err(e) => return Err(ProviderError::unavailable(format!("refresh: {e}"))),
        };
        let id_token = response
            .id_token()
            .ok_or_else(|| ProviderError::unavailable("the provider's refresh gave no ID token"))?;
        // No nonce on a refresh (OIDC Core §12.2).
        let claims = id_token
            .claims(&client.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
            .map_err(|e| ProviderError::unavailable(format!("refreshed ID token refused: {e}")))?;
        let principal = self.principal(&id_token.to_string(), claims.subject().as_str())?;
        if principal.id != principal_id {
            return Ok(None);
        }
        let next = response
            .refresh_token()
            .map_or_else(|| refresh_token.to_owned(), |r| r.secret().clone());
        Ok(Some((principal, next)))
    }

    /// The principal a verified ID token (`raw`, whose subject is `sub`)
    /// names, with the configured username and groups claims.
    fn principal(&self, raw: &str, sub: &str) -> Result<Principal, ProviderError> {
        let payload = raw
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .ok_or(ProviderError::Invalid)?;
        let username_claim = self
            .config
            .username_claim
            .as_deref()
            .unwrap_or("preferred_username");
        let login = payload
            .get(username_claim)
            .and_then(Value::as_str)
            .unwrap_or(sub)
            .to_owned();
        let groups_claim = self.config.groups_claim.as_deref().unwrap_or("groups");
        let mut groups: Vec<String> = match payload.get(groups_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(|g| principals::group_id("oidc", g))
                .collect(),
            Some(Value::String(g)) => vec![principals::group_id("oidc", g)],
            _ => Vec::new(),
        };
        groups.sort();
        groups.dedup();
        Ok(Principal {
            provider: "oidc".into(),
            id: principals::user_id("oidc", sub),
            login: principals::printable(&login),
            display_name: payload
                .get("name")
                .and_then(Value::as_str)
                .map(principals::printable),
            groups,
            issuer: Some(self.config.issuer.trim_end_matches('/').to_owned()),
        })
    }
}

impl SignIn {
    /// `seed.created.flag.redirect.mac`, each part URL-safe.
    fn encode(&self, key: &[u8]) -> String {
        let body = format!(
            "{}.{}.{}.{}",
            self.seed,
            self.created,
            if self.client_verifier { "c" } else { "s" },
            URL_SAFE_NO_PAD.encode(&self.redirect_uri)
        );
        let mac = URL_SAFE_NO_PAD.encode(mac(key).chain_update(&body).finalize().into_bytes());
        format!("{body}.{mac}")
    }

    /// A state this server signed (checked in constant time), or `None`.
    fn decode(key: &[u8], state: &str) -> Option<SignIn> {
        if state.len() > 2048 {
            return None;
        }
        let (body, tag) = state.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        mac(key).chain_update(body).verify_slice(&tag).ok()?;
        let mut parts = body.split('.');
        let (seed, created, flag, redirect) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        Some(SignIn {
            seed: seed.to_owned(),
            created: created.parse().ok()?,
            redirect_uri: String::from_utf8(URL_SAFE_NO_PAD.decode(redirect).ok()?).ok()?,
            client_verifier: flag == "c",
        })
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length")
}

/// A value derived from a sign-in's seed (its PKCE verifier, its nonce):
/// 43 URL-safe characters, as PKCE wants.
fn derive(key: &[u8], what: &str, seed: &str) -> String {
    URL_SAFE_NO_PAD.encode(
        mac(key)
            .chain_update(what)
            .chain_update(":")
            .chain_update(seed)
            .finalize()
            .into_bytes(),
    )
}

/// The key that signs states: made by the first sign-in, the same on every
/// replica.
async fn state_key(store: &Store) -> Result<Vec<u8>, ProviderError> {
    loop {
        if let Some(kv) = store.get(STATE_KEY).await? {
            return hex::decode(&kv.value)
                .map_err(|_| ProviderError::Config("the sign-in key is unreadable".into()));
        }
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        match store.create(STATE_KEY, hex::encode(key)).await {
            Ok(_) => return Ok(key.to_vec()),
            Err(StoreError::AlreadyExists(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Drop the seeds of sign-ins whose states have expired anyway.
async fn forget_used(store: &Store) {
    let Ok(list) = store
        .list(&drover_store::ListOptions {
            prefix: USED.to_owned(),
            ..Default::default()
        })
        .await
    else {
        return;
    };
    let now = now_secs();
    for kv in list.items {
        let created: u64 = String::from_utf8_lossy(&kv.value).parse().unwrap_or(0);
        if now.saturating_sub(created) > STATE_TTL.as_secs() {
            let _ = store
                .txn(&[Op::delete(kv.key.clone(), kv.mod_revision)])
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_signed_and_carry_the_sign_in() {
        let key = b"a key for the test, 32 bytes....";
        let s = SignIn {
            seed: "00ff".into(),
            created: 1_700_000_000,
            redirect_uri: "http://127.0.0.1:8000/callback".into(),
            client_verifier: true,
        };
        let state = s.encode(key);
        let back = SignIn::decode(key, &state).unwrap();
        assert_eq!(back.redirect_uri, s.redirect_uri);
        assert!(back.client_verifier);
        assert!(SignIn::decode(b"another key", &state).is_none());
        let forged = state.replacen(".c.", ".s.", 1);
        assert!(
            SignIn::decode(key, &forged).is_none(),
            "a changed state is refused"
        );
        assert_eq!(derive(key, "pkce", "00ff").len(), 43);
        assert_ne!(derive(key, "pkce", "00ff"), derive(key, "nonce", "00ff"));
    }

    #[test]
    fn internal_literals_are_refused() {
        assert!(check_url("http://127.0.0.1:5556/dex", false).is_err());
        assert!(check_url("http://127.0.0.1:5556/dex", true).is_ok());
        assert!(check_url("https://accounts.example.com", false).is_ok());
    }
}
