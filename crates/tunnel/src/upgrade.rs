//! HTTP upgrades across the tunnel (exec, attach, port-forward): both the
//! server's proxy and the agent tell an upgrade request by its headers and,
//! once each side has switched protocols, splice the two connections into
//! one byte pipe.

use hyper::header::{HeaderMap, CONNECTION, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Whether the headers ask for a protocol upgrade.
pub fn requested(headers: &HeaderMap) -> bool {
    headers
        .get(CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
        && headers.contains_key(UPGRADE)
}

/// Once both sides have switched, copy bytes between them until either
/// closes, or until `until` resolves (the right to the connection was
/// revoked): then both are closed. Runs in a task of its own.
pub fn splice(
    a: OnUpgrade,
    b: OnUpgrade,
    until: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tokio::spawn(async move {
        let pipe = async move {
            match tokio::try_join!(a, b) {
                Ok((a, b)) => {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b))
                            .await;
                }
                Err(e) => tracing::debug!(error = %e, "an upgraded connection failed"),
            }
        };
        tokio::select! {
            () = pipe => {}
            () = until => tracing::debug!("an upgraded connection was ended: its right to it was revoked"),
        }
    });
}
