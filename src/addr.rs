//! Classification of upstream addresses (PRODUCT.md §9.4): which IPs a DNS answer may
//! not lead to unless the operator allows private addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// True when `ip` is loopback, private, link-local (cloud metadata), CGNAT, unspecified,
/// multicast, broadcast, documentation/benchmark space, unique-local IPv6, or an IPv6 form
/// embedding such an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || o[0] >= 240 // reserved
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return true;
    }
    if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 {
        return true; // unique-local, link-local, site-local
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return true; // documentation
    }
    if let Some(v4) = embedded_v4(ip) {
        return is_private_v4(v4);
    }
    false
}

/// The IPv4 address an IPv6 address embeds, if it is of a form that carries one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated)
    if s[..5].iter().all(|&x| x == 0) && (s[5] == 0xffff || s[5] == 0) {
        return Some(tail);
    }
    // 64:ff9b::/96 NAT64 and 64:ff9b:1::/48 local-use NAT64
    if s[0] == 0x64 && s[1] == 0xff9b {
        return Some(tail);
    }
    // 2002::/16 6to4: the IPv4 address is in bits 16..48
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    // 2001:0000::/32 Teredo: the client address is the last 32 bits, inverted
    if s[0] == 0x2001 && s[1] == 0 {
        return Some(Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> bool {
        is_private(s.parse().expect("test address"))
    }

    #[test]
    fn private_forms_are_refused() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:0001::1",
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo embedding 127.0.0.1
        ] {
            assert!(p(a), "{a} must be private");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for a in [
            "8.8.8.8",
            "104.18.6.192",
            "100.128.0.1",
            "2606:4700::6810:1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(!p(a), "{a} must be public");
        }
    }
}
