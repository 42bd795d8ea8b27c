//! Destination address policy for the egress proxy: which IPs are public, and how to
//! recognise an IP literal in every spelling the C library and browsers accept.
//!
//! Hazard: a string check on the host lets `2130706433`, `0x7f.1` or `::ffff:127.0.0.1`
//! reach loopback; a range check on only the "obvious" IPv6 form lets IPv4-mapped,
//! IPv4-compatible, NAT64 and 6to4 addresses smuggle a private IPv4 destination through;
//! and 169.254.169.254 / fd00:ec2::254 hand out cloud credentials. So every host is first
//! run through [`parse_ip_literal`] (which accepts decimal, hex, octal and short forms,
//! brackets, trailing dots and zone ids) and every address, literal or resolved, through
//! [`classify`], which unwraps embedded IPv4 before judging it. Only
//! [`AddrClass::Public`] may be dialled.
//!
//! Pure: no I/O, no DNS. Callers must still classify the addresses a name resolves to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not a public destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    /// Globally routable: the only class the proxy may connect to.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918: 10/8, 172.16/12, 192.168/16.
    Private,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// RFC 6598 carrier-grade NAT: 100.64/10.
    SharedCgnat,
    /// 224/4, ff00::/8.
    Multicast,
    /// 0.0.0.0/8 ("this network"), ::.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// Cloud instance metadata: 169.254.169.254, 100.100.100.200, fd00:ec2::254.
    CloudMetadata,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32.
    Documentation,
    /// 240/4, 192.0.0/24, 198.18/15, 100::/64.
    Reserved,
    /// fc00::/7.
    UniqueLocal,
}

/// True when `ip` lies in `net`/`prefix` (prefix 0..=32).
fn in_v4(ip: u32, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    ip & mask == u32::from_be_bytes(net) & mask
}

/// Classifies an IPv4 address.
fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let n = u32::from(ip);
    // First match wins: exact addresses come before the wider ranges they sit in.
    let table: [([u8; 4], u32, AddrClass); 17] = [
        ([169, 254, 169, 254], 32, AddrClass::CloudMetadata),
        ([100, 100, 100, 200], 32, AddrClass::CloudMetadata),
        ([255, 255, 255, 255], 32, AddrClass::Broadcast),
        ([0, 0, 0, 0], 8, AddrClass::Unspecified),
        ([127, 0, 0, 0], 8, AddrClass::Loopback),
        ([10, 0, 0, 0], 8, AddrClass::Private),
        ([172, 16, 0, 0], 12, AddrClass::Private),
        ([192, 168, 0, 0], 16, AddrClass::Private),
        ([169, 254, 0, 0], 16, AddrClass::LinkLocal),
        ([100, 64, 0, 0], 10, AddrClass::SharedCgnat),
        ([224, 0, 0, 0], 4, AddrClass::Multicast),
        ([240, 0, 0, 0], 4, AddrClass::Reserved),
        ([192, 0, 0, 0], 24, AddrClass::Reserved),
        ([192, 0, 2, 0], 24, AddrClass::Documentation),
        ([198, 51, 100, 0], 24, AddrClass::Documentation),
        ([203, 0, 113, 0], 24, AddrClass::Documentation),
        ([198, 18, 0, 0], 15, AddrClass::Reserved),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v4(n, *net, *prefix))
        .map_or(AddrClass::Public, |(_, _, class)| *class)
}

/// The IPv4 address embedded in an IPv6 address, for the forms that route to it:
/// IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d` (except `::` and `::1`),
/// NAT64 `64:ff9b::a.b.c.d` and 6to4 `2002:aabb:ccdd::/48`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = || Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low()),
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(low()),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low()),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))),
        _ => None,
    }
}

/// Classifies an IPv6 address.
fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let s = ip.segments();
    if ip == Ipv6Addr::LOCALHOST {
        AddrClass::Loopback
    } else if ip == Ipv6Addr::UNSPECIFIED {
        AddrClass::Unspecified
    } else if s == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] {
        AddrClass::CloudMetadata
    } else if s[0] & 0xffc0 == 0xfe80 {
        AddrClass::LinkLocal
    } else if s[0] & 0xfe00 == 0xfc00 {
        AddrClass::UniqueLocal
    } else if s[0] & 0xff00 == 0xff00 {
        AddrClass::Multicast
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        AddrClass::Documentation
    } else if s[..4] == [0x0100, 0, 0, 0] {
        AddrClass::Reserved
    } else {
        AddrClass::Public
    }
}

/// Classifies an IP address. IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d),
/// NAT64 (64:ff9b::/96) and 6to4 (2002::/16, embedded v4 in bits 16..48) IPv6 addresses are
/// classified by their embedded IPv4 address. CloudMetadata wins over LinkLocal for
/// 169.254.169.254 and covers fd00:ec2::254 (AWS IPv6 IMDS) too.
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// True only for [`AddrClass::Public`].
pub fn is_public(ip: IpAddr) -> bool {
    classify(ip) == AddrClass::Public
}

/// One inet_aton part: `0x`/`0X` hex (at least one digit), `0`-prefixed octal, or decimal.
/// Digits only (no sign, no whitespace); `None` on anything else or above `u32::MAX`.
fn parse_v4_part(part: &str) -> Option<u32> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if let Some(oct) = part.strip_prefix('0').filter(|rest| !rest.is_empty()) {
            (oct, 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        return None;
    }
    digits.chars().try_fold(0u32, |acc, c| {
        let d = c.to_digit(radix)?;
        acc.checked_mul(radix)?.checked_add(d)
    })
}

/// inet_aton / WHATWG-URL IPv4: 1 to 4 parts, an optional single trailing dot, the last
/// part filling all remaining bytes.
fn parse_v4_loose(host: &str) -> Option<Ipv4Addr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    let parts = host.split('.').map(parse_v4_part).collect::<Option<Vec<u32>>>()?;
    let (last, init) = parts.split_last()?;
    if init.len() > 3 {
        return None;
    }
    let mut value: u32 = 0;
    for (i, part) in init.iter().enumerate() {
        if *part > 0xff {
            return None;
        }
        value |= part << (24 - 8 * i);
    }
    // The last part fills the remaining (4 - init.len()) bytes.
    let last_bits = 8 * (4 - init.len() as u32);
    if last_bits < 32 && *last >> last_bits != 0 {
        return None;
    }
    Some(Ipv4Addr::from(value | last))
}

/// IPv6 text with an optional zone id (`%eth0`, or URL-encoded `%25eth0`) dropped.
fn parse_v6_zoned(host: &str) -> Option<Ipv6Addr> {
    let addr = match host.split_once('%') {
        Some((addr, zone)) if !zone.is_empty() => addr,
        Some(_) => return None,
        None => host,
    };
    addr.parse().ok()
}

/// Parses a host string as an IP literal in every encoding the C library's inet_aton /
/// browsers accept, so "odd encodings" cannot sneak past a string check:
/// dotted decimal "127.0.0.1"; a single 32-bit number "2130706433"; hex "0x7f000001";
/// octal parts "0177.0.0.1"; mixed/short forms "127.1" (a.b -> a.(24-bit b)), "127.0.1"
/// (a.b.c -> a.b.(16-bit c)), each part decimal, 0x-hex or 0-octal; with a trailing dot
/// allowed ("127.0.0.1."); IPv6 with or without brackets ("[::1]", "::ffff:127.0.0.1"),
/// and IPv6 zone ids ("fe80::1%eth0") parsed by dropping the zone. Returns None when the
/// string is not an IP literal at all (e.g. "example.com", "1.2.3.4.5", "0x", "08"
/// (invalid octal), parts out of range like "256.1.1.1" -> None).
pub fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    if let Some(inner) = host.strip_prefix('[') {
        // Brackets only ever wrap IPv6.
        return parse_v6_zoned(inner.strip_suffix(']')?).map(IpAddr::V6);
    }
    if host.contains(':') {
        return parse_v6_zoned(host).map(IpAddr::V6);
    }
    parse_v4_loose(host).map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    fn class_of(s: &str) -> AddrClass {
        classify(s.parse().unwrap())
    }

    fn assert_class(cases: &[&str], want: AddrClass) {
        for case in cases {
            assert_eq!(class_of(case), want, "{case}");
        }
    }

    #[test]
    fn v4_unspecified_this_network() {
        assert_class(&["0.0.0.0", "0.0.0.1", "0.1.2.3", "0.255.255.255"], AddrClass::Unspecified);
    }

    #[test]
    fn v4_loopback() {
        assert_class(
            &["127.0.0.1", "127.0.0.0", "127.1.2.3", "127.255.255.255"],
            AddrClass::Loopback,
        );
    }

    #[test]
    fn v4_private() {
        assert_class(
            &[
                "10.0.0.0",
                "10.255.255.255",
                "172.16.0.0",
                "172.20.1.1",
                "172.31.255.255",
                "192.168.0.0",
                "192.168.1.1",
                "192.168.255.255",
            ],
            AddrClass::Private,
        );
    }

    #[test]
    fn v4_link_local_and_metadata() {
        assert_class(
            &[
                "169.254.0.0",
                "169.254.1.1",
                "169.254.169.253",
                "169.254.169.255",
                "169.254.255.255",
            ],
            AddrClass::LinkLocal,
        );
        assert_class(&["169.254.169.254", "100.100.100.200"], AddrClass::CloudMetadata);
    }

    #[test]
    fn v4_shared_cgnat() {
        assert_class(
            &["100.64.0.0", "100.64.0.1", "100.100.100.199", "100.127.255.255"],
            AddrClass::SharedCgnat,
        );
    }

    #[test]
    fn v4_multicast() {
        assert_class(
            &["224.0.0.0", "224.0.0.251", "239.255.255.250", "239.255.255.255"],
            AddrClass::Multicast,
        );
    }

    #[test]
    fn v4_broadcast_and_reserved() {
        assert_class(&["255.255.255.255"], AddrClass::Broadcast);
        assert_class(
            &[
                "240.0.0.0",
                "250.1.2.3",
                "255.255.255.254",
                "192.0.0.0",
                "192.0.0.8",
                "192.0.0.255",
                "198.18.0.0",
                "198.19.255.255",
            ],
            AddrClass::Reserved,
        );
    }

    #[test]
    fn v4_documentation() {
        assert_class(
            &["192.0.2.0", "192.0.2.255", "198.51.100.1", "203.0.113.0", "203.0.113.255"],
            AddrClass::Documentation,
        );
    }

    #[test]
    fn v4_near_misses_are_public() {
        let public = [
            "8.8.8.8",
            "1.1.1.1",
            "1.0.0.0",
            "11.0.0.1",
            "9.255.255.255",
            "126.255.255.255",
            "128.0.0.0",
            "172.15.255.255",
            "172.32.0.1",
            "192.167.255.255",
            "192.169.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "100.63.255.255",
            "100.128.0.1",
            "223.255.255.255",
            "192.0.1.0",
            "192.0.3.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "93.184.216.34",
        ];
        assert_class(&public, AddrClass::Public);
        for p in public {
            assert!(is_public(v4(p)), "{p}");
        }
    }

    #[test]
    fn v6_plain_ranges() {
        assert_class(&["::1"], AddrClass::Loopback);
        assert_class(&["::"], AddrClass::Unspecified);
        assert_class(
            &["fe80::", "fe80::1", "febf:ffff::1", "fe80::1234:5678:9abc:def0"],
            AddrClass::LinkLocal,
        );
        assert_class(
            &["fc00::", "fc00::1", "fd00::1", "fd12:3456:789a::1", "fdff:ffff::", "fd00:ec2::253"],
            AddrClass::UniqueLocal,
        );
        assert_class(&["fd00:ec2::254", "fd00:0ec2:0:0:0:0:0:254"], AddrClass::CloudMetadata);
        assert_class(&["ff00::", "ff02::1", "ff05::1:3", "ffff:ffff::"], AddrClass::Multicast);
        assert_class(
            &["2001:db8::", "2001:db8::1", "2001:db8:ffff:ffff::1"],
            AddrClass::Documentation,
        );
        assert_class(&["100::", "100::1", "100::ffff:ffff:ffff:ffff"], AddrClass::Reserved);
    }

    #[test]
    fn v6_near_misses_are_public() {
        let public = [
            "2606:4700::1111",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001::1",
            "fec0::1",
            "fbff:ffff::1",
            "fe7f::1",
            "2001:db9::1",
            "2001:db7::1",
            "100:0:0:1::",
            "101::1",
            "64:ff9c::7f00:1",
            "64:ff9b:0:0:0:1:7f00:1",
            "2003::1",
            "::fffe:7f00:1",
            "::1:0:7f00:1",
        ];
        assert_class(&public, AddrClass::Public);
        for p in public {
            assert!(is_public(v6(p)), "{p}");
        }
    }

    #[test]
    fn v6_embedded_v4_forms() {
        // IPv4-mapped.
        assert_class(&["::ffff:127.0.0.1", "::ffff:7f00:1"], AddrClass::Loopback);
        assert_class(&["::ffff:10.0.0.1", "::ffff:192.168.1.1"], AddrClass::Private);
        assert_class(&["::ffff:169.254.169.254"], AddrClass::CloudMetadata);
        assert_class(&["::ffff:0.0.0.0"], AddrClass::Unspecified);
        assert_class(&["::ffff:8.8.8.8"], AddrClass::Public);
        // IPv4-compatible (deprecated but still parsed and routed by some stacks).
        assert_class(&["::127.0.0.1", "::7f00:1"], AddrClass::Loopback);
        assert_class(&["::10.1.2.3"], AddrClass::Private);
        assert_class(&["::169.254.169.254"], AddrClass::CloudMetadata);
        assert_class(&["::0.0.0.2"], AddrClass::Unspecified);
        assert_class(&["::8.8.8.8"], AddrClass::Public);
        // NAT64 well-known prefix.
        assert_class(&["64:ff9b::7f00:1", "64:ff9b::127.0.0.1"], AddrClass::Loopback);
        assert_class(&["64:ff9b::a9fe:a9fe"], AddrClass::CloudMetadata);
        assert_class(&["64:ff9b::172.16.0.1"], AddrClass::Private);
        assert_class(&["64:ff9b::8.8.8.8"], AddrClass::Public);
        // 6to4: v4 in bits 16..48.
        assert_class(&["2002:7f00:1::", "2002:7f00:1:ffff::1"], AddrClass::Loopback);
        assert_class(&["2002:a9fe:a9fe::"], AddrClass::CloudMetadata);
        assert_class(&["2002:c0a8:101::1"], AddrClass::Private);
        assert_class(&["2002:e000:1::"], AddrClass::Multicast);
        assert_class(&["2002:808:808::1"], AddrClass::Public);
    }

    #[test]
    fn is_public_only_for_public() {
        assert!(is_public(v4("8.8.8.8")));
        assert!(is_public(v6("2606:4700::1111")));
        for s in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "169.254.169.254",
            "192.0.2.1",
            "240.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(s.parse().unwrap()), "{s}");
        }
    }

    fn parsed(s: &str) -> IpAddr {
        parse_ip_literal(s).unwrap_or_else(|| panic!("{s:?} should parse"))
    }

    #[test]
    fn parse_loopback_in_every_encoding() {
        let cases = [
            "127.0.0.1",
            "127.0.0.1.",
            "2130706433",
            "2130706433.",
            "0x7f000001",
            "0X7F000001",
            "0x7F000001",
            "017700000001",
            "0177.0.0.1",
            "0177.0.0.01",
            "0x7f.0.0.1",
            "0x7f.1",
            "127.1",
            "127.0.1",
            "127.0.0x1",
            "0x7f.0x0.0x0.0x1",
            "0x0000007f.1",
            "000000177.0.0.1",
            "127.000.000.001",
            "[::1]",
            "::1",
            "[::ffff:7f00:1]",
            "::ffff:127.0.0.1",
            "[::ffff:127.0.0.1]",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "[2002:7f00:1::]",
            "::127.0.0.1",
        ];
        for case in cases {
            assert_eq!(classify(parsed(case)), AddrClass::Loopback, "{case}");
        }
    }

    #[test]
    fn parse_v4_exact_values() {
        assert_eq!(parsed("2130706433"), v4("127.0.0.1"));
        assert_eq!(parsed("0x7f000001"), v4("127.0.0.1"));
        assert_eq!(parsed("0177.0.0.1"), v4("127.0.0.1"));
        assert_eq!(parsed("127.1"), v4("127.0.0.1"));
        assert_eq!(parsed("127.0.1"), v4("127.0.0.1"));
        assert_eq!(parsed("1.2.3.4"), v4("1.2.3.4"));
        assert_eq!(parsed("1.2.3.4."), v4("1.2.3.4"));
        assert_eq!(parsed("1.2.772"), v4("1.2.3.4"));
        assert_eq!(parsed("1.131844"), v4("1.2.3.4"));
        assert_eq!(parsed("1.0x20304"), v4("1.2.3.4"));
        assert_eq!(parsed("1.2.0x304"), v4("1.2.3.4"));
        assert_eq!(parsed("0"), v4("0.0.0.0"));
        assert_eq!(parsed("0x0"), v4("0.0.0.0"));
        assert_eq!(parsed("00"), v4("0.0.0.0"));
        assert_eq!(parsed("4294967295"), v4("255.255.255.255"));
        assert_eq!(parsed("0xffffffff"), v4("255.255.255.255"));
        assert_eq!(parsed("037777777777"), v4("255.255.255.255"));
        assert_eq!(parsed("255.255.255.255"), v4("255.255.255.255"));
        assert_eq!(parsed("255.16777215"), v4("255.255.255.255"));
        assert_eq!(parsed("255.255.65535"), v4("255.255.255.255"));
        assert_eq!(parsed("0xa9.0xfe.0xa9.0xfe"), v4("169.254.169.254"));
        assert_eq!(parsed("0251.0376.0251.0376"), v4("169.254.169.254"));
        assert_eq!(parsed("2852039166"), v4("169.254.169.254"));
        assert_eq!(parsed("169.254.43518"), v4("169.254.169.254"));
        assert_eq!(parsed("10.1"), v4("10.0.0.1"));
        assert_eq!(parsed("8.8.8.8"), v4("8.8.8.8"));
    }

    #[test]
    fn parse_odd_encodings_reach_the_right_class() {
        assert_eq!(classify(parsed("2852039166")), AddrClass::CloudMetadata);
        assert_eq!(classify(parsed("0xa9fea9fe")), AddrClass::CloudMetadata);
        assert_eq!(classify(parsed("0xa9.254.0251.0xfe")), AddrClass::CloudMetadata);
        assert_eq!(classify(parsed("012.1")), AddrClass::Private);
        assert_eq!(classify(parsed("0xc0.0xa8.1")), AddrClass::Private);
        assert_eq!(classify(parsed("0")), AddrClass::Unspecified);
        assert_eq!(classify(parsed("0.0.0.0.")), AddrClass::Unspecified);
        assert_eq!(classify(parsed("[::]")), AddrClass::Unspecified);
        assert_eq!(classify(parsed("[fd00:ec2::254]")), AddrClass::CloudMetadata);
        assert_eq!(classify(parsed("0x08080808")), AddrClass::Public);
        assert_eq!(classify(parsed("134744072")), AddrClass::Public);
    }

    #[test]
    fn parse_v6_forms() {
        assert_eq!(parsed("::1"), v6("::1"));
        assert_eq!(parsed("[::1]"), v6("::1"));
        assert_eq!(parsed("[2606:4700::1111]"), v6("2606:4700::1111"));
        assert_eq!(parsed("::ffff:127.0.0.1"), v6("::ffff:7f00:1"));
        assert_eq!(parsed("fe80::1%eth0"), v6("fe80::1"));
        assert_eq!(parsed("[fe80::1%eth0]"), v6("fe80::1"));
        assert_eq!(parsed("[fe80::1%25eth0]"), v6("fe80::1"));
        assert_eq!(parsed("fe80::1%1"), v6("fe80::1"));
        assert_eq!(classify(parsed("fe80::1%eth0")), AddrClass::LinkLocal);
        assert_eq!(parsed("FD00:EC2::254"), v6("fd00:ec2::254"));
    }

    #[test]
    fn parse_rejects_non_literals() {
        for case in [
            "",
            ".",
            "..",
            "example.com",
            "localhost",
            "metadata.google.internal",
            "1.2.3.4.5",
            "1.2.3.4..",
            "1..2.3",
            ".1.2.3",
            "0x",
            "0X",
            "0x.1",
            "08",
            "09.0.0.1",
            "0178.0.0.1",
            "0xg1",
            "256.1.1.1",
            "1.256.1.1",
            "1.1.256.1",
            "1.1.1.256",
            "1.1.65536",
            "1.16777216",
            "4294967296",
            "0x100000000",
            "040000000000",
            "99999999999999999999999",
            "+1.2.3.4",
            "-1",
            "1.2.3.-4",
            "1.2.3.+4",
            " 1.2.3.4",
            "1.2.3.4 ",
            "1.2.3.4/8",
            "127.0.0.1:80",
            "1e3",
            "0x7f.1.example",
            "example.123",
            "[]",
            "[::1",
            "::1]",
            "[127.0.0.1]",
            "[example.com]",
            "[::1]:443",
            ":::1",
            "::1::",
            "fe80::1%",
            "::ffff:0177.0.0.1",
            "gggg::1",
            "１２７.0.0.1",
        ] {
            assert_eq!(parse_ip_literal(case), None, "{case:?}");
        }
    }
}
