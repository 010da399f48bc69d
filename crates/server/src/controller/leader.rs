//! Background reconcilers of the management server. Each is level-based
//! and idempotent, so any replica may run it and a restart loses nothing.
//!
//! - Token expiry: every minute, delete expired Tokens and their hash
//!   records. (An expired token is already refused at authentication; this
//!   keeps the list and the store clean.)

use std::time::Duration;

use drover_auth::token;
use drover_core::api;
use drover_store::{ListOptions, Store, StoreError};
use serde_json::Value;
use tracing::Instrument;

/// How often expired tokens are swept.
const TOKEN_SWEEP: Duration = Duration::from_secs(60);

/// Run the token-expiry reconciler until the task is dropped.
pub(crate) fn spawn_token_expiry(store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(
        async move {
            let mut tick = tokio::time::interval(TOKEN_SWEEP);
            loop {
                tick.tick().await;
                match sweep_expired_tokens(&store).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "removed expired tokens"),
                    Err(StoreError::Closed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "token expiry sweep failed; retrying later")
                    }
                }
            }
        }
        .instrument(tracing::info_span!("token-expiry")),
    )
}

/// Delete every expired Token (and its record); returns how many.
pub(crate) async fn sweep_expired_tokens(store: &Store) -> Result<usize, StoreError> {
    let prefix = drover_core::keys::prefix(api::GROUP, "tokens", None);
    let page = store
        .list(&ListOptions {
            prefix,
            ..Default::default()
        })
        .await?;
    let mut deleted = 0;
    for kv in page.items {
        let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if !token::expired(obj.pointer("/status/expiresAt").and_then(Value::as_str)) {
            continue;
        }
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // The Token and its record go together, or not at all.
        let mut ops = vec![drover_store::Op::delete(kv.key.clone(), kv.mod_revision)];
        if let Some(record) = store.get(&token::record_key(name)).await? {
            ops.push(drover_store::Op::delete(record.key, record.mod_revision));
        }
        match store.txn(&ops).await {
            Ok(_) => deleted += 1,
            Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expired_tokens_are_removed_with_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &format!("sqlite://{}/s.db", dir.path().display()),
            Default::default(),
        )
        .await
        .unwrap();
        let live = token::mint(
            "admin",
            None,
            None,
            Some(Duration::from_secs(3600)),
            Duration::ZERO,
        );
        let mut old = token::mint(
            "admin",
            None,
            None,
            Some(Duration::from_secs(3600)),
            Duration::ZERO,
        );
        old.object["status"]["expiresAt"] = "2001-01-01T00:00:00Z".into();
        for t in [&live, &old] {
            store.create_all(&t.store_items()).await.unwrap();
        }
        assert_eq!(sweep_expired_tokens(&store).await.unwrap(), 1);
        assert!(store
            .get(&token::object_key(&old.name))
            .await
            .unwrap()
            .is_none());
        assert!(store
            .get(&token::record_key(&old.name))
            .await
            .unwrap()
            .is_none());
        assert!(store
            .get(&token::object_key(&live.name))
            .await
            .unwrap()
            .is_some());
        assert_eq!(sweep_expired_tokens(&store).await.unwrap(), 0, "idempotent");
    }
}
