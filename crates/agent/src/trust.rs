//! Which CAs the agent trusts: the SHA-256 checksums of the `/cacerts`
//! PEMs it accepts, from `--ca-checksum` (comma-separated) and from the
//! server during a CA rotation.
//!
//! The server sends the checksums to trust down the tunnel — which the
//! agent opened and verified against a CA it already trusted — as
//! `PUT /drover-agent/v1/trust`: the current CA's with the new ones during
//! a rotation, the current one alone if the rotation is undone. The agent
//! trusts exactly that list from then on and (with
//! `DROVER_TRUST_SECRET=namespace/name`, which the import manifest sets)
//! writes it into the Secret its `DROVER_CA_CHECKSUM` comes from, so that
//! it still trusts the new CA after a restart; it answers whether it could.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use base64::Engine;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use crate::Downstream;

/// Most checksums in one list.
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

    fn replace(&self, new: &[String]) -> Vec<String> {
        let mut list = self.checksums.lock().unwrap_or_else(|e| e.into_inner());
        list.clear();
        for c in new {
            if !list.contains(c) {
                list.push(c.clone());
            }
        }
        list.clone()
    }

    /// Answer the server's `PUT /drover-agent/v1/trust`: the checksums to
    /// trust from now on (the whole list: the server sends the current
    /// CA's with the new ones, and the current ones alone to undo). The
    /// answer says whether they were kept for a restart (`persisted`).
    pub async fn handle(&self, req: Request<Body>, downstream: &Downstream) -> Response<Body> {
        let reply = |code: StatusCode, message: &str, persisted: bool| {
            let body = json!({"message": message, "persisted": persisted});
            let mut resp = Response::new(Body::from(body.to_string()));
            *resp.status_mut() = code;
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            resp
        };
        if req.method() != hyper::Method::PUT {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "use PUT", false);
        }
        let Ok(body) = axum::body::to_bytes(req.into_body(), 16 * 1024).await else {
            return reply(
                StatusCode::BAD_REQUEST,
                "the body is unreadable or too large",
                false,
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
                false,
            );
        }
        let list = self.replace(&new);
        tracing::info!(trusted = ?list, "the server sent new CA checksums; trusting them");
        let Some((ns, name)) = &self.secret else {
            return reply(
                StatusCode::OK,
                "trusted, but not kept for a restart: the agent runs without DROVER_TRUST_SECRET",
                false,
            );
        };
        match self.persist(downstream, ns, name, &list.join(",")).await {
            Ok(()) => reply(
                StatusCode::OK,
                &format!("trusted, and written to secret {ns}/{name}"),
                true,
            ),
            Err(e) => {
                tracing::warn!(secret = %format!("{ns}/{name}"), error = %e, "cannot keep the new CA checksums for a restart");
                reply(
                    StatusCode::OK,
                    &format!(
                        "trusted, but not kept for a restart: writing secret {ns}/{name}: {e}"
                    ),
                    false,
                )
            }
        }
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
    fn checksums_are_checked_and_replaced_whole() {
        assert!(Trust::new("nope", None).is_err());
        assert!(Trust::new("", Some("no-slash")).is_err());
        let a = "a".repeat(64);
        let t = Trust::new(&format!("{a}, {}", "B".repeat(64)), None).unwrap();
        assert!(t.accepts(&a) && t.accepts(&"b".repeat(64)));
        // Rotations tried and undone again and again never grow the list
        // nor lose what the server says is current.
        for _ in 0..5 {
            t.replace(&[a.clone(), "c".repeat(64), "d".repeat(64)]);
            t.replace(std::slice::from_ref(&a));
        }
        assert_eq!(t.list(), [a]);
    }
}
