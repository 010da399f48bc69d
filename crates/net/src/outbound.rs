//! Outbound connections to addresses users supply (directory servers,
//! identity providers): they must not reach the server's own network —
//! loopback, private, link-local and other internal ranges — unless the
//! admin started the server with `--allow-private-outbound`.
//!
//! Names are resolved here and the addresses checked, so a name that
//! resolves to an internal address is refused like the address itself.

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
}
