//! Network settings: listen addresses, the public URL and trusted proxies.

use std::net::{IpAddr, SocketAddr};

use super::error::ConfigError;
use super::layers::Sourced;

pub(crate) fn socket_addr(
    set: Sourced<String>,
    expected: &'static str,
) -> Result<SocketAddr, ConfigError> {
    set.value.parse().map_err(|_| set.invalid(expected))
}

/// A socket address other than `bind` (one port cannot serve both).
pub(crate) fn metrics_bind(
    set: Sourced<String>,
    bind: SocketAddr,
) -> Result<SocketAddr, ConfigError> {
    match set.value.parse::<SocketAddr>() {
        Ok(addr) if addr == bind && addr.port() != 0 => {
            Err(set.invalid("an address other than bind"))
        }
        Ok(addr) => Ok(addr),
        Err(_) => Err(set.invalid("a socket address such as 127.0.0.1:9090")),
    }
}

pub(crate) fn public_url(set: Sourced<String>) -> Result<String, ConfigError> {
    let url = set.value.as_str();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| set.invalid("a URL starting with http:// or https://"))?;
    if url.contains(['?', '#']) {
        return Err(set.invalid("a URL without a query (?) or fragment (#)"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(set.invalid("a URL without spaces or control characters"));
    }
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    if authority.is_empty() {
        return Err(set.invalid("a URL with a host, such as https://messages.example.com"));
    }
    if authority.contains('@') {
        return Err(set.invalid("a URL without user info (user@)"));
    }
    // Stored without the slash so `format!("{public_url}/p/{token}")` is right.
    Ok(url.trim_end_matches('/').to_owned())
}

/// The reverse proxies whose `X-Forwarded-For` header is believed
/// (`trusted_proxies`). Empty means none: the socket peer is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// From addresses (`192.0.2.7`, `::1`) and CIDR ranges (`10.0.0.0/8`).
    pub fn new(ranges: Vec<ipnet::IpNet>) -> TrustedProxies {
        TrustedProxies(ranges.into_iter().map(|r| r.trunc()).collect())
    }

    pub(crate) fn parse(set: Sourced<Vec<String>>) -> Result<TrustedProxies, ConfigError> {
        let ranges = set
            .value
            .iter()
            .map(|entry| entry.trim())
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| {
                        entry
                            .parse::<IpAddr>()
                            .map(|ip| ipnet::IpNet::from(ip.to_canonical()))
                    })
                    .map_err(|_| {
                        set.invalid("IP addresses or CIDR ranges, such as 10.0.0.0/8 or 192.0.2.7")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies::new(ranges))
    }

    pub fn ranges(&self) -> &[ipnet::IpNet] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of the proxies. IPv4-mapped IPv6 addresses
    /// (`::ffff:10.0.0.1`, as a dual-stack socket reports IPv4 peers) count
    /// as the IPv4 address they carry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|range| range.contains(&ip))
    }
}
