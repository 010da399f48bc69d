//! Outbound connections to addresses users supply (directory servers,
//! identity providers, alert notifiers): they must not reach the server's
//! own network — loopback, private, link-local and other internal ranges,
//! the cloud metadata address among them — unless the admin started the
//! server with `--allow-private-outbound`.
//!
//! Names are resolved here and the addresses checked, so a name that
//! resolves to an internal address is refused like the address itself:
//! [`resolve`] for raw connections, [`Resolver`] for a reqwest client (every
//! name it looks up), [`check_url`] for a URL's address literal before a
//! request (a literal is never looked up, so the resolver never sees it),
//! and [`check_destination`] for both at once, when a URL is accepted.
//!
//! Errors name the host, never the whole URL: a URL's path or query may
//! carry a token (a Slack webhook's path does).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether an address is on the server's own side: loopback, private
/// (RFC 1918, RFC 4193), link-local, carrier-grade NAT, unspecified,
/// multicast or broadcast, or an IPv4 address mapped into IPv6 that is.
pub fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_v4(v4);
            }
            internal_v6(v6)
        }
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || a >= 240 // reserved
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| internal_v4(Ipv4Addr::from(((hi as u32) << 16) | lo as u32));
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::/96): the IPv4
        // address inside decides; 6to4 (2002::/16) carries one too.
        || (s[..6] == [0; 6] && embedded(s[6], s[7]))
        || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && embedded(s[6], s[7]))
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64
        || (s[0] == 0x2002 && embedded(s[1], s[2]))
}

/// Why an outbound address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The name does not resolve.
    #[error("cannot resolve {0}")]
    Unresolved(String),
    /// It is (or resolves to) an internal address.
    #[error("{0} is a loopback or private address; the server refuses it unless started with --allow-private-outbound")]
    Internal(String),
    /// The URL does not parse, has no host, or is not `http(s)`.
    #[error("{0}")]
    Url(String),
}

/// Resolve `host:port` and refuse it when any address is internal (unless
/// `allow_private`). Returns the addresses to connect to.
pub async fn resolve(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, OutboundError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|_| OutboundError::Unresolved(host.to_owned()))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(OutboundError::Unresolved(host.to_owned()));
    }
    if !allow_private && addrs.iter().any(|a| internal(a.ip())) {
        return Err(OutboundError::Internal(host.to_owned()));
    }
    Ok(addrs)
}

/// Resolves names for a reqwest client ([`reqwest::ClientBuilder::dns_resolver`]),
/// refusing internal addresses unless `allow_private`. Address literals in
/// URLs are not looked up: check them with [`check_url`].
#[derive(Debug, Clone, Copy)]
pub struct Resolver {
    /// Let names resolve to internal addresses.
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let addrs = resolve(name.as_str(), 0, allow).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Parse an `http(s)` URL and refuse it when its host is an internal
/// address literal (unless `allow_private`). Names are not looked up here:
/// a client with a [`Resolver`] checks them as it connects, and
/// [`check_destination`] checks them at once.
pub fn check_url(url: &str, allow_private: bool) -> Result<url::Url, OutboundError> {
    // The parse error alone: the text may hold a token.
    let parsed =
        url::Url::parse(url).map_err(|e| OutboundError::Url(format!("invalid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(OutboundError::Url(format!(
            "a {} URL; only http and https are allowed",
            parsed.scheme()
        )));
    }
    let internal = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => internal(ip.into()),
        Some(url::Host::Ipv6(ip)) => internal(ip.into()),
        Some(url::Host::Domain(_)) => false,
        None => return Err(OutboundError::Url("the URL has no host".into())),
    };
    if internal && !allow_private {
        let host = parsed.host_str().unwrap_or_default().to_owned();
        return Err(OutboundError::Internal(host));
    }
    Ok(parsed)
}

/// Check a URL as it is accepted (a Notifier's, say): [`check_url`], then
/// its host name resolved with [`resolve`], so a name of an internal
/// address is refused now rather than at the first send. A name that does
/// not resolve (yet) is [`OutboundError::Unresolved`]; the caller decides
/// whether that is fatal.
pub async fn check_destination(url: &str, allow_private: bool) -> Result<(), OutboundError> {
    let parsed = check_url(url, allow_private)?;
    if let Some(url::Host::Domain(name)) = parsed.host() {
        let port = parsed.port_or_known_default().unwrap_or(443);
        resolve(name, port, allow_private).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a00:1::1",
            "fec0::1",
            "64:ff9b:1::a00:1",
            "198.18.0.1",
            "240.0.0.1",
        ] {
            assert!(internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "100.128.0.1",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn names_resolving_inside_are_refused() {
        assert!(matches!(
            resolve("localhost", 389, false).await,
            Err(OutboundError::Internal(_))
        ));
        assert!(resolve("localhost", 389, true).await.is_ok());
        assert!(matches!(
            resolve("[::1]", 389, false).await,
            Err(OutboundError::Internal(_))
        ));
    }

    #[test]
    fn urls_with_internal_literals_are_refused() {
        for url in [
            "http://127.0.0.1:5556/dex",
            "http://10.0.0.1/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:8080/",
            "https://[::ffff:10.0.0.1]/",
            "http://2130706433/", // 127.0.0.1, as WHATWG parses it
            "http://0x7f.1/",
            "http://0.0.0.0/",
        ] {
            assert!(
                matches!(check_url(url, false), Err(OutboundError::Internal(_))),
                "{url}"
            );
            assert!(check_url(url, true).is_ok(), "{url} with allow_private");
        }
        for url in [
            "https://accounts.example.com",
            "https://hooks.slack.com/services/T0/B0/x",
            "http://8.8.8.8:8080/x",
            "https://[2606:4700::1111]/",
            // A name is the resolver's to check.
            "http://localhost/",
        ] {
            assert!(check_url(url, false).is_ok(), "{url}");
        }
    }

    #[test]
    fn urls_that_are_not_http_are_refused() {
        for url in [
            "file:///etc/passwd",
            "ftp://example.com/x",
            "gopher://example.com/",
            "not a url",
            "/relative/path",
            "",
        ] {
            for allow in [false, true] {
                assert!(
                    matches!(check_url(url, allow), Err(OutboundError::Url(_))),
                    "{url} ({allow})"
                );
            }
        }
    }

    #[test]
    fn refusals_name_the_host_not_the_url() {
        let e = check_url("http://10.0.0.1/hook/s3cr3t?token=t0k3n", false).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("10.0.0.1 "), "{text}");
        assert!(
            !text.contains("s3cr3t") && !text.contains("t0k3n"),
            "{text}"
        );
        let e = check_url("http://[::1]:9/?token=t0k3n", false).unwrap_err();
        assert!(!e.to_string().contains("t0k3n"), "{e}");
    }

    #[tokio::test]
    async fn destinations_resolving_inside_are_refused() {
        assert!(matches!(
            check_destination("http://localhost:9/hook", false).await,
            Err(OutboundError::Internal(_))
        ));
        assert!(check_destination("http://localhost:9/hook", true)
            .await
            .is_ok());
        assert!(matches!(
            check_destination("http://10.1.2.3/hook", false).await,
            Err(OutboundError::Internal(_))
        ));
        assert!(matches!(
            check_destination("smtp://mail.example.com", false).await,
            Err(OutboundError::Url(_))
        ));
    }
}
