//! What per-client limits key on (a leaf: both the pages and the sign-in
//! service use it), and which addresses are on the public internet (what
//! outgoing webhooks may reach without an admin's opt-in).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// Whether `ip` is a public internet address: not loopback, private
/// (RFC 1918), shared (CGNAT, 100.64/10), link-local, unique-local,
/// multicast, unspecified, broadcast, documentation, benchmarking or
/// reserved, nor an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 form of
/// one of those. IPv6 must be global unicast (2000::/3) outside the
/// special-purpose blocks. Outgoing requests a stranger's data could steer
/// (webhooks) go only to such addresses, so they cannot reach the
/// installation's own network (SSRF).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    const NOT_PUBLIC: [([u8; 4], u32); 16] = [
        ([0, 0, 0, 0], 8),       // "this network", unspecified
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local (cloud metadata services)
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
        ([192, 31, 196, 0], 24), // AS112
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast (deprecated)
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
        ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, broadcast
    ];
    !NOT_PUBLIC
        .iter()
        .any(|&(net, prefix)| in_v4(ip, net, prefix))
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    // IPv4-mapped (::ffff:a.b.c.d) and the deprecated IPv4-compatible
    // (::a.b.c.d) forms: judged as the IPv4 address they carry (the
    // unspecified and loopback addresses fall in the second and are refused).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    if bits >> 32 == 0 {
        return false;
    }
    let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap_or(Ipv6Addr::UNSPECIFIED);
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they embed.
    if in_v6(ip, v6("64:ff9b::"), 96) {
        return is_public_v4(Ipv4Addr::from((bits & 0xffff_ffff) as u32));
    }
    if in_v6(ip, v6("2002::"), 16) {
        return is_public_v4(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    // Global unicast only (this excludes link-local fe80::/10, unique-local
    // fc00::/7, multicast ff00::/8, site-local and the rest) …
    if !in_v6(ip, v6("2000::"), 3) {
        return false;
    }
    // … outside its special-purpose blocks.
    const NOT_PUBLIC: [(&str, u32); 4] = [
        ("2001::", 23),     // IETF protocol assignments (Teredo, ORCHID, …)
        ("2001:db8::", 32), // documentation
        ("3fff::", 20),     // documentation
        ("2001:2::", 48),   // benchmarking (inside 2001::/23; for clarity)
    ];
    !NOT_PUBLIC
        .iter()
        .any(|&(net, prefix)| in_v6(ip, v6(net), prefix))
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

    #[test]
    fn public_addresses_are_told_from_private_ones() {
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "192.0.3.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(ip(public)), "{public} is public");
        }
        for private in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:a00:1::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456:789a::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "3fff::1",
            "100::1",
        ] {
            let addr: IpAddr = private.parse().expect("an address");
            assert!(!is_public(addr), "{private} is not public");
        }
    }
}
