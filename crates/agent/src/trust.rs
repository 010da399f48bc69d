//! Which CAs the agent trusts: the SHA-256 checksums of the `/cacerts`
//! PEMs it accepts, from `--ca-checksum` (comma-separated) and from the
//! server during a CA rotation.
//!
//! The server sends the new checksums down the tunnel — which the agent
//! opened and verified against a CA it already trusted — as
//! `PUT /drover-agent/v1/trust`. The agent adds them to what it trusts,
//! keeps the newest few, and (with `DROVER_TRUST_SECRET=namespace/name`,
//! which the import manifest sets) writes them into the Secret its
//! `DROVER_CA_CHECKSUM` comes from, so that it still trusts the new CA
//! after a restart.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use base64::Engine;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use crate::Downstream;

/// Most checksums kept (the newest win).
const KEEP: usize = 6;

/// The checksums trusted now, shared by every session.
#[derive(Debug, Clone)]
pub struct Trust {
    checksums: Arc<Mutex<Vec<String>>>,
    secret: Option<(String, String)>,
}

/// Whether `s` looks like a SHA-256 in hex.
fn is_checksum(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Trust {
    /// From `--ca-checksum` (empty: the server's certificate must be
    /// publicly trusted) and `DROVER_TRUST_SECRET`.
    pub fn new(flag: &str, secret: Option<&str>) -> Result<Self, String> {
        let mut checksums = Vec::new();
        for c in flag.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if !is_checksum(c) {
                return Err(format!(
                    "--ca-checksum {c:?} is not a SHA-256 checksum (64 hex digits)"
                ));
            }
            checksums.push(c.to_ascii_lowercase());
        }
        let secret = match secret.filter(|s| !s.is_empty()) {
            Some(s) => match s.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
                    Some((ns.to_owned(), name.to_owned()))
                }
                _ => return Err(format!("DROVER_TRUST_SECRET {s:?} is not namespace/name")),
            },
            None => None,
        };
        Ok(Self {
            checksums: Arc::new(Mutex::new(checksums)),
            secret,
        })
    }

    /// Whether any CA checksum was given (else: public certificates only).
    pub fn pinned(&self) -> bool {
        !self.list().is_empty()
    }

    /// The checksums trusted now.
    pub fn list(&self) -> Vec<String> {
        self.checksums
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the CA PEM with this checksum is trusted.
    pub fn accepts(&self, checksum: &str) -> bool {
        self.list().iter().any(|c| c == checksum)
    }

    fn add(&self, new: &[String]) -> Vec<String> {
        let mut list = self.checksums.lock().unwrap_or_else(|e| e.into_inner());
        for c in new {
            list.retain(|have| have != c);
            list.push(c.clone());
        }
        let excess = list.len().saturating_sub(KEEP);
        list.drain(..excess);
        list.clone()
    }

    /// Answer the server's `PUT /drover-agent/v1/trust`.
    pub async fn handle(&self, req: Request<Body>, downstream: &Downstream) -> Response<Body> {
        let reply = |code: StatusCode, message: &str| {
            let mut resp = Response::new(Body::from(json!({"message": message}).to_string()));
            *resp.status_mut() = code;
            resp
        };
        if req.method() != hyper::Method::PUT {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "use PUT");
        }
        let Ok(body) = axum::body::to_bytes(req.into_body(), 16 * 1024).await else {
            return reply(
                StatusCode::BAD_REQUEST,
                "the body is unreadable or too large",
            );
        };
        let new: Vec<String> = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => v["caChecksums"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str())
                        .map(str::to_ascii_lowercase)
                        .collect()
                })
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if new.is_empty() || new.len() > KEEP || !new.iter().all(|c| is_checksum(c)) {
            return reply(
                StatusCode::BAD_REQUEST,
                "caChecksums must list 1 to 6 SHA-256 checksums",
            );
        }
        let list = self.add(&new);
        tracing::info!(trusted = ?list, "the server sent new CA checksums; trusting them");
        let mut message = "trusted".to_owned();
        if let Some((ns, name)) = &self.secret {
            match self.persist(downstream, ns, name, &list.join(",")).await {
                Ok(()) => message = format!("trusted, and written to secret {ns}/{name}"),
                Err(e) => {
                    tracing::warn!(secret = %format!("{ns}/{name}"), error = %e, "cannot keep the new CA checksums for a restart");
                    message = format!("trusted; not written to secret {ns}/{name}: {e}");
                }
            }
        }
        reply(StatusCode::OK, &message)
    }

    /// Write the checksums into the Secret `DROVER_CA_CHECKSUM` comes from.
    async fn persist(
        &self,
        downstream: &Downstream,
        ns: &str,
        name: &str,
        value: &str,
    ) -> Result<(), String> {
        let patch = json!({"data": {
            "ca-checksum": base64::engine::general_purpose::STANDARD.encode(value)
        }});
        let req = Request::patch(format!(
            "{}/api/v1/namespaces/{ns}/secrets/{name}",
            downstream.base
        ))
        .header("content-type", "application/merge-patch+json")
        .header("authorization", format!("Bearer {}", downstream.token()))
        .body(Body::from(patch.to_string()))
        .map_err(|e| e.to_string())?;
        let resp = downstream
            .client
            .request(req)
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("the cluster answered {}", resp.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_checked_and_the_newest_kept() {
        assert!(Trust::new("nope", None).is_err());
        assert!(Trust::new("", Some("no-slash")).is_err());
        let a = "a".repeat(64);
        let t = Trust::new(&format!("{a}, {}", "B".repeat(64)), None).unwrap();
        assert!(t.accepts(&a) && t.accepts(&"b".repeat(64)));
        let many: Vec<String> = (0..8).map(|i| format!("{i}").repeat(64)).collect();
        let kept = t.add(&many);
        assert_eq!(kept.len(), KEEP);
        assert!(!t.accepts(&a));
        assert!(t.accepts(&many[7]));
    }
}
