//! What per-client limits key on (a leaf: both the pages and the sign-in
//! service use it).

use std::net::{IpAddr, Ipv6Addr};

/// The key per-address limits count under: an IPv4 address (also one seen
/// on a dual-stack socket) as it is, an IPv6 address by its /64. One
/// subscriber gets a whole /64 and its hosts pick addresses in it at will,
/// so a full IPv6 address would give each client 2^64 fresh allowances.
pub fn rate_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", Ipv6Addr::from(network))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn rate_keys_group_ipv6_by_its_64() {
        assert_eq!(rate_key(ip("203.0.113.9")), "203.0.113.9");
        assert_ne!(rate_key(ip("203.0.113.9")), rate_key(ip("203.0.113.10")));
        // An IPv4 client on a dual-stack socket is still keyed by its address.
        let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 9).to_ipv6_mapped());
        assert_eq!(rate_key(mapped), "203.0.113.9");
        let a = rate_key(ip("2001:db8:1:2::1"));
        assert_eq!(a, "2001:db8:1:2::/64");
        for same in [
            "2001:db8:1:2:ffff:ffff:ffff:ffff",
            "2001:0db8:0001:0002:abcd::9",
            "2001:db8:1:2:aaaa::1",
        ] {
            assert_eq!(rate_key(ip(same)), a, "{same}");
        }
        for other in ["2001:db8:1:3::1", "2001:db8:2:2::1", "::1"] {
            assert_ne!(rate_key(ip(other)), a, "{other}");
        }
    }
}
