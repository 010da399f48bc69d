//! Which replica holds which cluster's agent link, as the store records it:
//! `/drover/links/{cluster}` → [`LinkRecord`]. A replica that takes an
//! agent's connection claims the record with the next generation; it
//! releases it, when the link ends, only if the record is still the one it
//! wrote — so a stale holder can never overwrite or remove a newer one.
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
    /// The replica holding the agent's connection.
    pub replica: String,
    /// The link's id on that replica.
    pub link: u64,
    /// One more than the record it replaced: which link is newest.
    pub generation: u64,
    /// When the link was made (RFC 3339).
    pub since: String,
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

/// Record that `replica` now holds `cluster`'s link `link`: the next
/// generation after whatever was there. Returns the record and its
/// revision, to release it by later.
pub async fn claim(
    store: &Store,
    cluster: &str,
    replica: &str,
    link: u64,
) -> Result<(LinkRecord, Revision), StoreError> {
    let key = key(cluster);
    loop {
        let current = store.get(&key).await?;
        let generation = current
            .as_ref()
            .and_then(|kv| parse(&kv.value))
            .map_or(1, |r| r.generation + 1);
        let record = LinkRecord {
            replica: replica.to_owned(),
            link,
            generation,
            since: meta::now_rfc3339(),
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
            Err(e) => return Err(e),
        }
    }
}

/// Remove a cluster's record if it is still the one written at `revision`;
/// whether it was.
pub async fn release(store: &Store, cluster: &str, revision: Revision) -> bool {
    store
        .txn(&[Op::delete(key(cluster), revision)])
        .await
        .is_ok()
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
        let (first, first_rev) = claim(&store, "c-1", "a", 1).await.unwrap();
        let (second, second_rev) = claim(&store, "c-1", "b", 7).await.unwrap();
        assert_eq!((first.generation, second.generation), (1, 2));
        assert!(!release(&store, "c-1", first_rev).await, "a stale holder");
        let kv = store.get(&key("c-1")).await.unwrap().unwrap();
        assert_eq!(parse(&kv.value).unwrap().replica, "b");
        assert!(release(&store, "c-1", second_rev).await);
        assert!(store.get(&key("c-1")).await.unwrap().is_none());
        assert_eq!(cluster_of(&key("c-1")), "c-1");
    }
}
