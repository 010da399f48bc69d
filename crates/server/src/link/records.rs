//! Which replica holds which cluster's agent link, as the store records it:
//! `/drover/links/{cluster}` → [`LinkRecord`]. A replica that takes an
//! agent's connection claims the record with the next generation — unless
//! another link was claimed after this one was accepted, which is then the
//! newer one; when the link ends it releases the record, only if the record
//! is still the one it wrote, by leaving it without a holder (and with when
//! the agent was last heard from), so generations only grow. A stale
//! holder can therefore neither overwrite nor remove a newer link's record.
//!
//! A record is only as alive as its holder: a link is usable while the
//! replica named in it is alive (see [`crate::replicas`]). A holder that
//! dies takes its links with it within the replicas' TTL, and no record
//! needs renewing of its own.

use drover_core::meta;
use drover_store::{Op, Revision, Store, StoreError};
use serde::{Deserialize, Serialize};

/// Where the records live.
pub const PREFIX: &str = "/drover/links/";

/// One cluster's link, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkRecord {
    /// The replica holding the agent's connection; empty once released.
    pub replica: String,
    /// The link's id on that replica.
    pub link: u64,
    /// One more than the record it replaced: which link is newest.
    pub generation: u64,
    /// When the link was made (RFC 3339).
    pub since: String,
    /// Once released: when the agent was last heard from (RFC 3339,
    /// microseconds) — the end of the link, or earlier if it fell silent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

impl LinkRecord {
    /// Whether a replica holds the link (it is not released).
    pub fn is_held(&self) -> bool {
        !self.replica.is_empty()
    }
}

/// Why a claim was not made.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another link was claimed after this one was accepted: it is the
    /// agent's newer connection.
    #[error("a newer link for the cluster was recorded meanwhile")]
    Superseded,
    /// The datastore failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key of a cluster's record.
pub fn key(cluster: &str) -> String {
    format!("{PREFIX}{cluster}")
}

/// The cluster a record's key names.
pub fn cluster_of(key: &str) -> &str {
    key.strip_prefix(PREFIX).unwrap_or(key)
}

/// Parse a stored record.
pub fn parse(bytes: &[u8]) -> Option<LinkRecord> {
    serde_json::from_slice(bytes).ok()
}

/// Record that `replica` now holds `cluster`'s link `link`, accepted when
/// the store was at revision `accepted`: the next generation after
/// whatever was there. Returns the record and its revision, to release it
/// by later.
pub async fn claim(
    store: &Store,
    cluster: &str,
    replica: &str,
    link: u64,
    accepted: Revision,
) -> Result<(LinkRecord, Revision), ClaimError> {
    let key = key(cluster);
    loop {
        let current = store.get(&key).await?;
        let previous = current.as_ref().and_then(|kv| parse(&kv.value));
        if let (Some(kv), Some(p)) = (&current, &previous) {
            let mine = p.replica == replica && p.link == link;
            if p.is_held() && !mine && kv.mod_revision > accepted {
                return Err(ClaimError::Superseded);
            }
        }
        let record = LinkRecord {
            replica: replica.to_owned(),
            link,
            generation: previous.map_or(1, |r| r.generation + 1),
            since: meta::now_rfc3339(),
            last_seen: None,
        };
        let bytes = serde_json::to_vec(&record).expect("plain data");
        let op = match &current {
            Some(kv) => Op::update(key.clone(), bytes, kv.mod_revision),
            None => Op::create(key.clone(), bytes),
        };
        match store.txn(&[op]).await {
            Ok(kvs) => return Ok((record, kvs[0].mod_revision)),
            Err(
                StoreError::Conflict { .. }
                | StoreError::AlreadyExists(_)
                | StoreError::NotFound(_),
            ) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Release a cluster's record if it is still `record`, written at
/// `revision`: it stays, without a holder, saying when the agent was last
/// heard from. A datastore failure is tried again a few times (the
/// holder's own sweep catches what is left). Whether it was released.
pub async fn release(
    store: &Store,
    cluster: &str,
    record: &LinkRecord,
    revision: Revision,
    last_seen: std::time::SystemTime,
) -> bool {
    let released = LinkRecord {
        replica: String::new(),
        link: 0,
        generation: record.generation,
        since: record.since.clone(),
        last_seen: Some(meta::rfc3339_micro(last_seen)),
    };
    let bytes = serde_json::to_vec(&released).expect("plain data");
    for attempt in 0..5u32 {
        match store
            .txn(&[Op::update(key(cluster), bytes.clone(), revision)])
            .await
        {
            Ok(_) => return true,
            Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => return false,
            Err(e) => {
                tracing::warn!(%cluster, error = %e, "cannot release the link's record; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_holder_cannot_touch_a_newer_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &format!("sqlite://{}/s.db", dir.path().display()),
            Default::default(),
        )
        .await
        .unwrap();
        let now = std::time::SystemTime::now();
        let at = |s: &Store| {
            let s = s.clone();
            async move { s.revisions().await.unwrap().current }
        };
        // A link accepted on replica a, then the agent's newer one on b.
        let accepted_a = at(&store).await;
        let accepted_b = at(&store).await;
        let (second, second_rev) = claim(&store, "c-1", "b", 7, accepted_b).await.unwrap();
        // a's claim comes late (it was frozen): b's record is newer than
        // a's link, so a gives way.
        assert!(matches!(
            claim(&store, "c-1", "a", 1, accepted_a).await,
            Err(ClaimError::Superseded)
        ));
        assert_eq!(second.generation, 1);
        // A stale holder's release changes nothing.
        let stale = LinkRecord {
            replica: "a".into(),
            ..second.clone()
        };
        assert!(!release(&store, "c-1", &stale, second_rev - 1, now).await);
        let kv = store.get(&key("c-1")).await.unwrap().unwrap();
        assert_eq!(parse(&kv.value).unwrap().replica, "b");
        // b's release leaves the record without a holder, generation kept.
        assert!(release(&store, "c-1", &second, second_rev, now).await);
        let released = parse(&store.get(&key("c-1")).await.unwrap().unwrap().value).unwrap();
        assert!(!released.is_held());
        assert_eq!(released.generation, 1);
        let seen = released
            .last_seen
            .as_deref()
            .and_then(meta::parse_rfc3339)
            .unwrap();
        assert!(
            seen <= now && now.duration_since(seen).unwrap() < std::time::Duration::from_millis(1)
        );
        // The agent's next link, on a: the next generation.
        let accepted = at(&store).await;
        let (third, _) = claim(&store, "c-1", "a", 2, accepted).await.unwrap();
        assert_eq!(third.generation, 2);
        assert_eq!(cluster_of(&key("c-1")), "c-1");
    }
}
