//! Who the client is: the socket peer, or, when the peer is one of the
//! configured `trusted_proxies`, the address that proxy reports in
//! `X-Forwarded-For`. Everything keyed on the client (sign-in throttling,
//! pickup limits, audit IPs, loopback-only pages) goes through here.
//!
//! `X-Forwarded-For` is read from the right: each proxy appends the
//! address it received the request from, so the right-most entries were
//! written by our own proxies and anything further left may be made up by
//! the client. The client is the right-most address that is not a trusted
//! proxy. A header from a peer that is not a trusted proxy is ignored.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::config::{Config, TrustedProxies};

/// Headers that show a request passed through a proxy.
const FORWARDING_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

/// The client's address (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

/// Whether the client is this machine, connected directly: the peer is a
/// loopback address, is not a configured proxy, and the request carries no
/// forwarding header. A request that came through a proxy never counts,
/// even a proxy on this machine, or every visitor would look local.
#[derive(Clone, Copy, Debug)]
pub struct Loopback(pub bool);

/// Both extractors decide from the socket peer, the configured proxies
/// and the headers alone.
macro_rules! from_peer {
    ($extractor:ident, $decide:ident) => {
        impl<S: Send + Sync> FromRequestParts<S> for $extractor
        where
            Arc<Config>: FromRef<S>,
        {
            type Rejection = std::convert::Infallible;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                let config = Arc::<Config>::from_ref(state);
                let decided = $decide(peer(parts), &config.trusted_proxies, &parts.headers);
                Ok($extractor(decided))
            }
        }
    };
}

from_peer!(ClientIp, client_ip);
from_peer!(Loopback, is_direct_loopback);

/// The socket peer (`0.0.0.0` if the server was started without connect
/// info, as some tests do: it is neither loopback nor a proxy).
fn peer(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
        .to_canonical()
}

/// The client address for a request from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, trusted: &TrustedProxies, headers: &HeaderMap) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    // Several header lines are one list, in order (RFC 9110 §5.3).
    let entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|line| {
            // A line that is not text cannot be parsed; it ends the walk
            // like any other malformed entry.
            let text = line.to_str().unwrap_or("\u{0}");
            text.rsplit(',')
        });
    // The nearest address known to be genuine so far: the peer, then each
    // trusted proxy the chain passes through.
    let mut nearest = peer;
    for entry in entries {
        let Some(ip) = parse_entry(entry.trim()) else {
            // Garbage written (or passed on) by a trusted proxy: what lies
            // further left cannot be placed, so stop at the last good hop.
            return nearest;
        };
        if !trusted.contains(ip) {
            return ip;
        }
        nearest = ip;
    }
    // Every hop was a trusted proxy (or there was no header): the furthest
    // one seen is the best answer.
    nearest
}

/// An `X-Forwarded-For` entry: an IP address, optionally with a port as
/// some proxies write it (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    entry
        .parse::<SocketAddr>()
        .ok()
        .map(|addr| addr.ip().to_canonical())
}

fn is_direct_loopback(peer: IpAddr, trusted: &TrustedProxies, headers: &HeaderMap) -> bool {
    is_loopback(peer)
        && !trusted.contains(peer)
        && !FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h))
}

/// Loopback, including an IPv4 loopback address seen on a dual-stack socket
/// (`::ffff:127.0.0.1`).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        let range = |s: &&str| {
            s.parse()
                .ok()
                .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
        };
        let ranges: Vec<ipnet::IpNet> = list.iter().filter_map(range).collect();
        assert_eq!(ranges.len(), list.len(), "{list:?}");
        TrustedProxies::new(ranges)
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            if let Ok(v) = HeaderValue::from_str(line) {
                headers.append("x-forwarded-for", v);
            }
        }
        headers
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let headers = xff(&["203.0.113.9"]);
        let none = TrustedProxies::default();
        assert_eq!(
            client_ip(ip("198.51.100.4"), &none, &headers),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn a_spoofed_header_from_an_untrusted_peer_is_ignored() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let headers = xff(&["127.0.0.1, 10.0.0.5"]);
        // The peer itself is not a proxy: its header means nothing.
        assert_eq!(
            client_ip(ip("198.51.100.4"), &trusted, &headers),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn the_right_most_untrusted_address_wins() {
        let trusted = proxies(&["10.0.0.0/8", "192.0.2.7/32"]);
        // The client claims to be 127.0.0.1; the edge proxy appended the real
        // address, an inner proxy appended the edge proxy's.
        let headers = xff(&["127.0.0.1, 203.0.113.9, 10.1.2.3"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &trusted, &headers),
            ip("203.0.113.9")
        );
        // The same chain split over several header lines.
        let headers = xff(&["127.0.0.1", "203.0.113.9", "10.1.2.3"]);
        assert_eq!(
            client_ip(ip("192.0.2.7"), &trusted, &headers),
            ip("203.0.113.9")
        );
        // IPv6, with ports, and the peer seen as IPv4-mapped.
        let headers = xff(&["[2001:db8::1]:4711,10.9.9.9:80"]);
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(client_ip(mapped, &trusted, &headers), ip("2001:db8::1"));
    }

    #[test]
    fn malformed_entries_stop_at_the_last_good_hop() {
        let trusted = proxies(&["10.0.0.0/8"]);
        // Garbage left of the real client does not matter.
        let headers = xff(&["garbage, 203.0.113.9"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &trusted, &headers),
            ip("203.0.113.9")
        );
        // Garbage where a proxy's entry should be: the last trusted hop.
        for bad in [
            "unknown, 10.2.2.2",
            "203.0.113.9, , 10.2.2.2",
            "203.0.113.9,nonsense:x,10.2.2.2",
        ] {
            let headers = xff(&[bad]);
            assert_eq!(
                client_ip(ip("10.0.0.1"), &trusted, &headers),
                ip("10.2.2.2"),
                "{bad}"
            );
        }
        let headers = xff(&[""]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &trusted, &headers),
            ip("10.0.0.1")
        );
        // No header at all, or only proxies: the furthest proxy.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &trusted, &HeaderMap::new()),
            ip("10.0.0.1")
        );
        let headers = xff(&["10.3.3.3, 10.2.2.2"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &trusted, &headers),
            ip("10.3.3.3")
        );
    }

    #[test]
    fn only_direct_loopback_clients_are_local() {
        let none = TrustedProxies::default();
        let local_proxy = proxies(&["127.0.0.1"]);
        let empty = HeaderMap::new();
        assert!(is_direct_loopback(ip("127.0.0.1"), &none, &empty));
        assert!(is_direct_loopback(ip("::1"), &local_proxy, &empty));
        // A configured proxy on this machine is never the local user.
        assert!(!is_direct_loopback(ip("127.0.0.1"), &local_proxy, &empty));
        // Nor is anything that says it was forwarded, trusted or not.
        for header in FORWARDING_HEADERS {
            let mut headers = HeaderMap::new();
            headers.insert(header, HeaderValue::from_static("127.0.0.1"));
            assert!(
                !is_direct_loopback(ip("127.0.0.1"), &none, &headers),
                "{header}"
            );
        }
        assert!(!is_direct_loopback(ip("192.0.2.1"), &none, &empty));
    }

    #[test]
    fn loopback_addresses() {
        for yes in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(127, 8, 9, 10)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
        ] {
            assert!(is_loopback(yes), "{yes} refused");
        }
        for no in [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 127)),
            IpAddr::V4(Ipv4Addr::new(128, 0, 0, 1)),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()),
            ip("2001:db8::1"),
            ip("fe80::1"),
        ] {
            assert!(!is_loopback(no), "{no} accepted");
        }
    }
}
