//! OpenID Connect: the authorization code flow with PKCE.
//!
//! [`Oidc::start`] reads the provider's discovery document, makes a PKCE
//! verifier, a nonce and a state, keeps them under
//! `/drover/oidc/pending/{state}` for ten minutes, and returns the
//! provider's authorization URL. [`Oidc::finish`] takes the code and state
//! the provider redirected back with, uses up the pending record (once
//! only), exchanges the code with the verifier and the client secret, and
//! verifies the ID token against the provider's keys: signature, issuer,
//! audience, expiry and nonce. The username and groups come from the
//! verified token's claims.
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
//! (unless allowed) and follows no redirects.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use drover_core::api::OidcConfig;
use drover_store::{Op, Store};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ProviderError;
use crate::principals::{self, Principal};

/// Where pending sign-ins are kept.
pub const PENDING: &str = "/drover/oidc/pending/";

/// The store key of a user's refresh token.
pub fn refresh_key(user: &str) -> String {
    format!("/drover/oidc/refresh/{user}")
}
/// How long a sign-in may take.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// Most sign-ins under way at once: starts are unauthenticated, and each
/// keeps a record until it is used or expires.
const MAX_PENDING: usize = 10_000;

/// A sign-in under way.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pending {
    verifier: String,
    nonce: String,
    redirect_uri: String,
    created: u64,
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

fn unavailable(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable(e.to_string())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Resolves names for the provider's client, refusing internal addresses.
struct Resolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let addrs = drover_net::outbound::resolve(name.as_str(), 0, allow).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Refuse a URL whose host is an internal address literal (names are
/// checked by the resolver as they are looked up).
fn check_url(url: &str, allow_private: bool) -> Result<(), ProviderError> {
    let parsed = url::Url::parse(url).map_err(|e| ProviderError::Config(format!("{url}: {e}")))?;
    let internal = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => drover_net::outbound::internal(ip.into()),
        Some(url::Host::Ipv6(ip)) => drover_net::outbound::internal(ip.into()),
        Some(url::Host::Domain(_)) => false,
        None => true,
    };
    if internal && !allow_private {
        return Err(ProviderError::Config(
            drover_net::outbound::OutboundError::Internal(url.to_owned()).to_string(),
        ));
    }
    Ok(())
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
            .dns_resolver(Arc::new(Resolver { allow_private }))
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

    /// The discovery document, read at most every ten minutes.
    async fn metadata(&self) -> Result<CoreProviderMetadata, ProviderError> {
        let mut cached = self.metadata.lock().await;
        if let Some((m, at)) = &*cached {
            if at.elapsed() < Duration::from_secs(600) {
                return Ok(m.clone());
            }
        }
        check_url(&self.config.issuer, self.allow_private)?;
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| ProviderError::Config(e.to_string()))?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| unavailable(format!("discovery at {}: {e}", self.config.issuer)))?;
        check_url(m.authorization_endpoint().as_str(), self.allow_private)?;
        check_url(m.jwks_uri().as_str(), self.allow_private)?;
        if let Some(t) = m.token_endpoint() {
            check_url(t.as_str(), self.allow_private)?;
        }
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

    /// Start a sign-in that will come back to `redirect_uri`.
    pub async fn start(&self, store: &Store, redirect_uri: &str) -> Result<Started, ProviderError> {
        let client = self.client(Some(redirect_uri)).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        let scopes = self.scopes();
        // OIDC Core §11: offline access is granted only with consent.
        if scopes.iter().any(|s| s == "offline_access") {
            request = request.add_prompt(openidconnect::core::CoreAuthPrompt::Consent);
        }
        for s in scopes {
            request = request.add_scope(Scope::new(s));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let pending = Pending {
            verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
            redirect_uri: redirect_uri.to_owned(),
            created: now_secs(),
        };
        if prune(store).await >= MAX_PENDING {
            return Err(unavailable("too many sign-ins under way"));
        }
        store
            .create(
                &format!("{PENDING}{}", state.secret()),
                serde_json::to_vec(&pending).expect("JSON"),
            )
            .await
            .map_err(unavailable)?;
        Ok(Started {
            url: url.to_string(),
            state: state.secret().clone(),
        })
    }

    /// Finish a sign-in: the principal the verified ID token names, and
    /// the refresh token if the provider gave one.
    pub async fn finish(
        &self,
        store: &Store,
        code: &str,
        state: &str,
    ) -> Result<(Principal, Option<String>), ProviderError> {
        let pending = take_pending(store, state).await?;
        let client = self.client(Some(&pending.redirect_uri)).await?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| ProviderError::Config(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                tracing::info!(error = %e, "OIDC code exchange refused");
                ProviderError::Invalid
            })?;
        let id_token = response.id_token().ok_or(ProviderError::Invalid)?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &Nonce::new(pending.nonce))
            .map_err(|e| {
                tracing::info!(error = %e, "OIDC ID token refused");
                ProviderError::Invalid
            })?;
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
            Err(e) => return Err(unavailable(format!("refresh: {e}"))),
        };
        let id_token = response
            .id_token()
            .ok_or_else(|| unavailable("the provider's refresh gave no ID token"))?;
        // No nonce on a refresh (OIDC Core §12.2).
        let claims = id_token
            .claims(&client.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
            .map_err(|e| unavailable(format!("refreshed ID token refused: {e}")))?;
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
            login,
            display_name: payload
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            groups,
        })
    }
}

/// Use up a pending sign-in: it exists, is recent, and no other finish
/// took it first.
async fn take_pending(store: &Store, state: &str) -> Result<Pending, ProviderError> {
    if state.is_empty()
        || state.len() > 128
        || !state
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ProviderError::Invalid);
    }
    let key = format!("{PENDING}{state}");
    let kv = store
        .get(&key)
        .await
        .map_err(unavailable)?
        .ok_or(ProviderError::Invalid)?;
    store
        .txn(&[Op::delete(key, kv.mod_revision)])
        .await
        .map_err(|_| ProviderError::Invalid)?;
    let pending: Pending = serde_json::from_slice(&kv.value).map_err(|_| ProviderError::Invalid)?;
    if now_secs().saturating_sub(pending.created) > PENDING_TTL.as_secs() {
        return Err(ProviderError::Invalid);
    }
    Ok(pending)
}

/// Drop sign-ins never finished; how many are left under way.
async fn prune(store: &Store) -> usize {
    let Ok(list) = store
        .list(&drover_store::ListOptions {
            prefix: PENDING.to_owned(),
            ..Default::default()
        })
        .await
    else {
        return 0;
    };
    let mut left = list.items.len();
    let now = now_secs();
    for kv in list.items {
        let old = serde_json::from_slice::<Pending>(&kv.value).map_or(true, |p| {
            now.saturating_sub(p.created) > PENDING_TTL.as_secs()
        });
        if old {
            let _ = store
                .txn(&[Op::delete(kv.key.clone(), kv.mod_revision)])
                .await;
            left -= 1;
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_literals_are_refused() {
        assert!(check_url("http://127.0.0.1:5556/dex", false).is_err());
        assert!(check_url("http://127.0.0.1:5556/dex", true).is_ok());
        assert!(check_url("https://accounts.example.com", false).is_ok());
    }
}
