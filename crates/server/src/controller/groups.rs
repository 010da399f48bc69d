//! Provider users' groups, kept fresh (on the leader): every
//! `--group-refresh-seconds`, each directory user who holds a token is
//! looked up again as the service account, and what changed is recorded —
//! new groups, lost groups, or the user gone or disabled in the directory.
//! The token checks and the revoker of open connections read that record,
//! so access a group gave ends with the next request, and the downstream
//! RBAC follows through the groups the proxy impersonates. A user gone or
//! disabled at their provider loses their tokens in the same transaction. An admin can
//! refresh one user at once ([`refresh_user`]).
//!
//! An OIDC user is looked up with the refresh token their provider gave at
//! login (when asked for `offline_access`); one without keeps the groups of
//! their last login.

use std::collections::BTreeSet;

use drover_auth::principals::{self, Membership};
use drover_auth::providers::{ProviderError, Providers, Standing};
use drover_core::{api, keys, meta};
use drover_store::{ListOptions, Store};
use serde_json::Value;

use super::{Action, Ctx};

/// What a refresh did to one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// Nothing changed.
    Unchanged,
    /// Their groups changed.
    Groups,
    /// The directory no longer knows them, or disabled them.
    Disabled,
    /// Not a provider's user, their provider is disabled, or it cannot say
    /// (an OIDC user without a refresh token).
    Skipped,
}

/// Refresh every provider user who holds a token.
pub async fn refresh_all(ctx: &Ctx) -> Result<Action, ProviderError> {
    let holders = token_holders(&ctx.store).await?;
    let mut changed = 0;
    for (user, membership) in principals::all_memberships(&ctx.store).await? {
        if !holders.contains(&user) {
            continue;
        }
        match refresh(&ctx.store, &ctx.providers, &user, membership).await {
            Ok(Refreshed::Groups | Refreshed::Disabled) => changed += 1,
            Ok(_) => {}
            Err(e) => tracing::warn!(user = %user, error = %e, "cannot refresh a user's groups"),
        }
    }
    if changed > 0 {
        tracing::info!(changed, "provider users' groups refreshed");
    }
    Ok(Action::Requeue(ctx.group_refresh))
}

/// Refresh one user now.
pub async fn refresh_user(
    store: &Store,
    providers: &Providers,
    user: &str,
) -> Result<Refreshed, ProviderError> {
    let Some((membership, _)) = principals::membership(store, user).await? else {
        return Ok(Refreshed::Skipped);
    };
    refresh(store, providers, user, membership).await
}

async fn refresh(
    store: &Store,
    providers: &Providers,
    user: &str,
    membership: Membership,
) -> Result<Refreshed, ProviderError> {
    let (standing, used_up) = match providers
        .refresh(user, &membership.provider, &membership.principal)
        .await
    {
        Ok(found) => found,
        Err(ProviderError::Disabled(_)) => return Ok(Refreshed::Skipped),
        Err(e) => return Err(e),
    };
    let now = match standing {
        // An OIDC subject of another issuer is not this user.
        Standing::Found(p) if membership.issuer.is_none() || p.issuer == membership.issuer => {
            Some(p)
        }
        Standing::Found(_) | Standing::Gone => None,
        Standing::Unknown => return Ok(Refreshed::Skipped),
    };
    // The record as it is now: a login may have written it while the
    // provider was asked.
    let Some((current, kv)) = principals::membership(store, user).await? else {
        return Ok(Refreshed::Skipped);
    };
    let next = Membership {
        groups: now
            .as_ref()
            .map_or_else(|| current.groups.clone(), |p| p.groups.clone()),
        disabled: now.is_none(),
        refreshed_at: meta::now_rfc3339(),
        ..current.clone()
    };
    let outcome = if next.disabled && !current.disabled {
        Refreshed::Disabled
    } else if current.differs(&next) {
        Refreshed::Groups
    } else {
        Refreshed::Unchanged
    };
    let mut ops = used_up.clone();
    ops.push(if outcome == Refreshed::Unchanged {
        drover_store::Op::live(&kv)
    } else {
        principals::write_membership(user, &next, Some(&kv))
    });
    // Gone at the provider: the user's tokens go too, so that a later
    // login (when the provider vouches again) does not bring them back.
    if outcome == Refreshed::Disabled {
        ops.extend(drover_auth::token::revoke_all_ops(store, user).await?);
    }
    // One transaction: what the lookup used up (a rotated refresh token)
    // with what it found. If the record changed meanwhile (a login), what
    // the login wrote stands, but a rotated token must still be kept: the
    // provider has retired the old one.
    match store.txn(&ops).await {
        Ok(_) => {}
        Err(e) if principals::raced(&e) => {
            if !used_up.is_empty() {
                let _ = store.txn(&used_up).await;
            }
            return Ok(Refreshed::Unchanged);
        }
        Err(e) => return Err(e.into()),
    }
    if outcome != Refreshed::Unchanged {
        tracing::info!(user, principal = %current.principal, groups = next.groups.len(),
            disabled = next.disabled, "a provider user's standing changed");
    }
    Ok(outcome)
}

/// The users who hold at least one token.
async fn token_holders(store: &Store) -> Result<BTreeSet<String>, ProviderError> {
    let tokens = store
        .list(&ListOptions {
            prefix: keys::prefix(api::GROUP, "tokens", None),
            ..Default::default()
        })
        .await?;
    Ok(tokens
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter_map(|t| {
            t.pointer("/spec/userName")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect())
}
