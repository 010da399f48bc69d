//! The client behind a load balancer: with `--trusted-proxies`, a request
//! whose peer is one of them has its client address taken from
//! `X-Forwarded-For` and its scheme from `X-Forwarded-Proto`; from any other
//! peer both are ignored, so a client cannot forge the address the audit
//! log and the server log record. The headers never go further (to a
//! cluster through the proxy, say).
//!
//! `X-Forwarded-For` is read from the right: the first address that is not
//! itself a trusted proxy is the client (a client can prepend anything, but
//! only the balancer appends). A trusted balancer that says the client used
//! plain `http` gets a redirect to the same path under `--server-url`,
//! except for health checks and ACME challenges.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

const FORWARDED_FOR: &str = "x-forwarded-for";
const FORWARDED_PROTO: &str = "x-forwarded-proto";
const STRIPPED: [&str; 5] = [
    FORWARDED_FOR,
    FORWARDED_PROTO,
    "x-forwarded-host",
    "x-forwarded-port",
    "forwarded",
];

fn trusted(proxies: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    proxies.iter().any(|net| net.contains(&ip))
}

/// The client's address from `X-Forwarded-For`, read from the right: the
/// first hop that is not a trusted proxy. A hop that cannot be read ends
/// the walk at the nearest trusted one before it (what a client wrote left
/// of the balancer's own entry never counts).
fn client(headers: &HeaderMap, proxies: &[ipnet::IpNet]) -> Option<IpAddr> {
    // Split as bytes: a hop that is not text spoils itself, not the
    // balancer's entry after it on the same line.
    let mut hops = Vec::new();
    for value in headers.get_all(FORWARDED_FOR) {
        hops.extend(
            value
                .as_bytes()
                .split(|b| *b == b',')
                .map(|h| std::str::from_utf8(h).ok().map(|h| h.trim().to_owned())),
        );
    }
    let mut found = None;
    for hop in hops.into_iter().rev() {
        // Accept "1.2.3.4", "1.2.3.4:port", "[::1]:port", "::1".
        let Some(ip) = hop.and_then(|h| {
            h.parse::<IpAddr>()
                .ok()
                .or_else(|| h.parse::<SocketAddr>().ok().map(|s| s.ip()))
        }) else {
            break;
        };
        found = Some(ip);
        if !trusted(proxies, ip) {
            break;
        }
    }
    found
}

/// Middleware: set the client address (as `ConnectInfo`) from a trusted
/// balancer's headers, and drop the headers.
pub(crate) async fn resolve(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let from_balancer = peer.is_some_and(|p| trusted(&state.trusted_proxies, p.ip()));
    if from_balancer {
        if let Some(ip) = client(req.headers(), &state.trusted_proxies) {
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(ip, 0)));
        }
        let plain = req
            .headers()
            .get(FORWARDED_PROTO)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("http"));
        let path = req.uri().path();
        let exempt = matches!(path, "/ping" | "/healthz") || path.starts_with("/.well-known/");
        if plain && !exempt {
            let target = format!(
                "{}{}",
                state.import.server_url,
                req.uri().path_and_query().map_or(path, |p| p.as_str())
            );
            return (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, target)]).into_response();
        }
    }
    for name in STRIPPED {
        req.headers_mut().remove(name);
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(FORWARDED_FOR, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        use axum::http::HeaderValue;
        let proxies = nets(&["10.0.0.0/8"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // A client prepending a forged address gets its own.
        assert_eq!(
            client(&headers(&["6.6.6.6, 203.0.113.7"]), &proxies),
            Some(ip("203.0.113.7"))
        );
        // Hops through inner balancers are skipped.
        assert_eq!(
            client(&headers(&["203.0.113.7", "10.1.1.1"]), &proxies),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            client(&headers(&["[2001:db8::1]:443"]), &proxies),
            Some(ip("2001:db8::1"))
        );
        // Junk left of the balancer's entry does not hide the client.
        assert_eq!(
            client(&headers(&["not-an-ip, 203.0.113.7"]), &proxies),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            client(&headers(&["unknown", "203.0.113.7"]), &proxies),
            Some(ip("203.0.113.7"))
        );
        let mut latin = HeaderMap::new();
        latin.append(
            FORWARDED_FOR,
            HeaderValue::from_bytes(b"caf\xe9, 203.0.113.7").unwrap(),
        );
        assert_eq!(client(&latin, &proxies), Some(ip("203.0.113.7")));
        // Behind two balancers, junk stops at the inner one.
        assert_eq!(
            client(&headers(&["junk, 10.1.1.1"]), &proxies),
            Some(ip("10.1.1.1"))
        );
        assert_eq!(client(&headers(&["not-an-ip"]), &proxies), None);
        assert_eq!(client(&HeaderMap::new(), &proxies), None);
        assert!(trusted(&proxies, ip("::ffff:10.2.3.4")));
        assert!(!trusted(&proxies, ip("11.0.0.1")));
    }
}
