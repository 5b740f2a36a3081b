//! IP addresses classified by where they lead, however they are written: an IPv6 address that carries an IPv4
//! address (IPv4-mapped, IPv4-compatible, NAT64, 6to4) is judged by that IPv4 address too. The configuration
//! checks and the upstream resolver both use this, so no spelling of IMDS (169.254.169.254) gets a token.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IPv4 address an IPv6 address maps to or carries, if any:
/// - `::ffff:a.b.c.d`, IPv4-mapped;
/// - `::a.b.c.d`, IPv4-compatible (deprecated; not `::` or `::1`);
/// - `64:ff9b::a.b.c.d`, the NAT64 well-known prefix, and `64:ff9b:1::/48`, the local-use one (last 32 bits);
/// - `2002:aabb:ccdd::/48`, 6to4 (`aa.bb.cc.dd`).
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let last = Ipv4Addr::from(((u32::from(s[6])) << 16) | u32::from(s[7]));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] && u32::from(last) > 1 {
        return Some(last);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1] {
        return Some(last);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])));
    }
    None
}

/// 169.254.0.0/16 and fe80::/10, and any IPv6 address that carries a 169.254.0.0/16 address
/// ([`embedded_ipv4`]).
pub fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_unicast_link_local() || embedded_ipv4(v6).is_some_and(|v4| v4.is_link_local())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_in_every_ipv6_form() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "febf::1",
            "::ffff:169.254.169.254",
            "::ffff:a9fe:a9fe",
            "::169.254.169.254",
            "64:ff9b::169.254.169.254",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(is_link_local(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "::1",
            "::",
            "20.50.2.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "fec0::1",
            "2001:db8::a9fe:a9fe",
        ] {
            assert!(!is_link_local(ip.parse().unwrap()), "{ip}");
        }
        assert_eq!(
            embedded_ipv4("::ffff:127.0.0.1".parse().unwrap()),
            Some(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(embedded_ipv4("::1".parse().unwrap()), None);
    }
}
