//! The client's address, for the limits that are per address.
//!
//! The accept loop puts the TCP peer on every request ([`PeerAddr`]). Behind a load balancer the
//! peer is the proxy, so `--client-ip-header` names the header the proxy sets; its last entry is
//! the one the proxy added, so a client cannot choose it. That entry may be a bare address,
//! `address:port`, `[v6]:port` or an RFC 7239 `for=` element, as proxies write them. A request
//! whose header is missing or names no address counts under the TCP peer, that is the proxy:
//! all such requests share one address's limits, so the proxy must set the header on every
//! request. Requests that reach the router without a peer (in-process tests) have no address and
//! no per-address limit.

use std::net::{IpAddr, SocketAddr};

use axum::http::{Extensions, HeaderMap};
use sha2::{Digest, Sha256};

/// The TCP peer of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The address limits apply to, if any.
pub fn client_ip(
    header: Option<&str>,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Option<IpAddr> {
    let forwarded = header
        .and_then(|name| headers.get_all(name).iter().next_back())
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .and_then(forwarded_ip);
    forwarded.or_else(|| extensions.get::<PeerAddr>().map(|peer| peer.0.ip()))
}

/// The address in one entry of a proxy's header: `192.0.2.1`, `192.0.2.1:5678`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`, or RFC 7239 `for=...` (quoted or not, beside other
/// pairs). `None` for anything else, such as an obfuscated `for=_hidden`.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let entry = if entry.contains('=') {
        entry.split(';').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("for")
                .then_some(value.trim())
        })?
    } else {
        entry
    };
    let entry = entry.trim_matches('"');
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|v6| v6.parse::<IpAddr>().ok())
        })
}

/// The key an address is counted under: IPv6 by its /64 (what one client usually holds), hashed
/// so the database keeps no address in clear.
pub fn client_key(ip: IpAddr) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"mend-relay client v1\0");
    match ip {
        IpAddr::V4(v4) => hasher.update(v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => hasher.update(v4.octets()),
            None => hasher.update(&v6.octets()[..8]),
        },
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn takes_the_last_forwarded_entry_or_the_peer() {
        let mut headers = HeaderMap::new();
        let mut extensions = Extensions::new();
        extensions.insert(PeerAddr(SocketAddr::from(([10, 0, 0, 1], 4000))));
        assert_eq!(
            client_ip(None, &headers, &extensions),
            Some(IpAddr::from([10, 0, 0, 1]))
        );
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 192.0.2.7"),
        );
        assert_eq!(
            client_ip(Some("x-forwarded-for"), &headers, &extensions),
            Some(IpAddr::from([192, 0, 2, 7]))
        );
        assert_eq!(
            client_ip(None, &headers, &extensions),
            Some(IpAddr::from([10, 0, 0, 1])),
            "the header counts only when configured"
        );
        assert_eq!(client_ip(None, &headers, &Extensions::new()), None);
    }

    /// The forms proxies write the client in all name it, so clients behind the proxy do not
    /// all fall back to the proxy's own address and share its limits.
    #[test]
    fn reads_the_forms_proxies_write() {
        let mut extensions = Extensions::new();
        extensions.insert(PeerAddr(SocketAddr::from(([10, 0, 0, 1], 4000))));
        let v4 = IpAddr::from([192, 0, 2, 7]);
        let v6: IpAddr = "2001:db8::1".parse().unwrap_or(IpAddr::from([0; 4]));
        for (header, value, expected) in [
            ("x-forwarded-for", "192.0.2.7:5678", v4),
            ("x-forwarded-for", "1.2.3.4, 192.0.2.7:5678", v4),
            ("x-forwarded-for", "[2001:db8::1]:443", v6),
            ("x-forwarded-for", "[2001:db8::1]", v6),
            ("forwarded", "for=192.0.2.7", v4),
            ("forwarded", "for=192.0.2.7;proto=https", v4),
            ("forwarded", "proto=https;For=\"[2001:db8::1]:443\"", v6),
            (
                "forwarded",
                "for=1.2.3.4, for=\"192.0.2.7:80\";by=10.0.0.1",
                v4,
            ),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header, HeaderValue::from_static(value));
            assert_eq!(
                client_ip(Some(header), &headers, &extensions),
                Some(expected),
                "{value}"
            );
        }
        for unusable in ["for=_hidden", "unknown", "by=192.0.2.7"] {
            let mut headers = HeaderMap::new();
            headers.insert("forwarded", HeaderValue::from_static(unusable));
            assert_eq!(
                client_ip(Some("forwarded"), &headers, &extensions),
                Some(IpAddr::from([10, 0, 0, 1])),
                "{unusable}: the proxy's own address"
            );
        }
    }

    #[test]
    fn one_ipv6_client_is_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap_or(IpAddr::from([0; 4]));
        let b: IpAddr = "2001:db8:1:2:ffff::9"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
    }
}
