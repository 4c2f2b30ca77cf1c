//! The SSRF guard: siemsync posts wherever a tenant points it, so unless the operator
//! allows it, a HEC URI may lead only to globally reachable unicast addresses: not to
//! loopback, private, link-local, unique-local, cloud-metadata, documentation,
//! benchmarking, reserved or any other special-purpose address, nor to an IPv6
//! address that carries such an IPv4 address (mapped, compatible, NAT64, 6to4,
//! Teredo). Checked when an integration is saved and again at every connect (a
//! custom resolver), so DNS rebinding cannot get around it.
//!
//! The tables follow IANA's IPv4 and IPv6 Special-Purpose Address Registries
//! (iana-ipv4-special-registry, iana-ipv6-special-registry; entries up to 2025),
//! each entry cited. No maintained crate covers them: `ip_network`'s `is_global`
//! (last release 2021) lets IPv4-mapped, NAT64, 6to4, Teredo and benchmarking IPv6
//! addresses through, `iprfc` has no "globally reachable" column and misfiled
//! 2001::/16 until recently, std's `is_global` is unstable, and none of them looks
//! inside the IPv6 transition addresses.

use actix_tls::connect::Resolve;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;

/// A block of addresses: its first address and prefix length.
type V4Block = (Ipv4Addr, u8);
type V6Block = (Ipv6Addr, u8);

/// IPv4 blocks that are not globally reachable: every IANA IPv4 special-purpose
/// entry marked "Globally Reachable: False" or "N/A", and multicast and the
/// reserved class E, which are not unicast destinations at all.
const V4_NOT_GLOBAL: &[V4Block] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "This network", RFC 791
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // Private-Use, RFC 1918
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // Shared Address Space (carrier-grade NAT), RFC 6598
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // Loopback, RFC 1122
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // Link Local (cloud metadata 169.254.169.254), RFC 3927
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // Private-Use, RFC 1918
    (Ipv4Addr::new(192, 0, 0, 0), 24), // IETF Protocol Assignments, RFC 6890; holds DS-Lite 192.0.0.0/29 (RFC 6333), IPv4 Service Continuity 192.0.0.0/29 (RFC 7335), Dummy 192.0.0.8/32 (RFC 7600), NAT64/DNS64 Discovery 192.0.0.170-171/32 (RFC 8880)
    (Ipv4Addr::new(192, 0, 2, 0), 24), // Documentation (TEST-NET-1), RFC 5737
    (Ipv4Addr::new(192, 88, 99, 0), 24), // Deprecated 6to4 Relay Anycast, RFC 7526; holds 6a44-relay anycast 192.88.99.2/32 (RFC 6751)
    (Ipv4Addr::new(192, 168, 0, 0), 16), // Private-Use, RFC 1918
    (Ipv4Addr::new(198, 18, 0, 0), 15),  // Benchmarking, RFC 2544
    (Ipv4Addr::new(198, 51, 100, 0), 24), // Documentation (TEST-NET-2), RFC 5737
    (Ipv4Addr::new(203, 0, 113, 0), 24), // Documentation (TEST-NET-3), RFC 5737
    (Ipv4Addr::new(224, 0, 0, 0), 4),    // Multicast, RFC 5771 (not unicast)
    (Ipv4Addr::new(240, 0, 0, 0), 4), // Reserved, RFC 1112 section 4; holds Limited Broadcast 255.255.255.255/32 (RFC 919)
];
// Globally reachable entries of the registry, so not refused: AS112-v4 192.31.196.0/24
// (RFC 7535), AMT 192.52.193.0/24 (RFC 7450), Direct Delegation AS112 192.175.48.0/24
// (RFC 7534), and the two below inside 192.0.0.0/24.

/// Globally reachable entries inside the blocks above.
const V4_GLOBAL_INSIDE: &[V4Block] = &[
    (Ipv4Addr::new(192, 0, 0, 9), 32), // Port Control Protocol Anycast, RFC 7723
    (Ipv4Addr::new(192, 0, 0, 10), 32), // Traversal Using Relays around NAT Anycast, RFC 8155
];

/// Global unicast, 2000::/3 (RFC 4291): the only IPv6 space assigned for the
/// Internet. Everything outside it is refused unless it carries an IPv4 address
/// (below): that covers unspecified ::/128 and loopback ::1/128 (RFC 4291),
/// Local-Use IPv4/IPv6 Translation 64:ff9b:1::/48 (RFC 8215), Discard-Only
/// 100::/64 (RFC 6666), Dummy IPv6 Prefix 100:0:0:1::/64 (RFC 9780), SRv6 SIDs
/// 5f00::/16 (RFC 9602), Unique-Local fc00::/7 (RFC 4193; AWS metadata is
/// fd00:ec2::254), Link-Local fe80::/10 (RFC 4291), site-local fec0::/10 (RFC 3879)
/// and multicast ff00::/8.
const V6_GLOBAL_UNICAST: V6Block = (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);

/// IPv6 blocks inside 2000::/3 that are not globally reachable.
const V6_NOT_GLOBAL: &[V6Block] = &[
    // IETF Protocol Assignments, RFC 2928; holds Benchmarking 2001:2::/48 (RFC 5180)
    // and the deprecated ORCHID 2001:10::/28 (RFC 4843). (Teredo, 2001::/32, is
    // judged by the IPv4 addresses it carries.)
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // Documentation, RFC 3849
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),     // Documentation, RFC 9637
];
// Globally reachable, so not refused: Direct Delegation AS112 2620:4f:8000::/48 (RFC 7534).

/// Globally reachable entries inside 2001::/23.
const V6_GLOBAL_INSIDE: &[V6Block] = &[
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 1), 128), // Port Control Protocol Anycast, RFC 7723
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 2), 128), // TURN Anycast, RFC 8155
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 3), 128), // DNS-SD Service Registration Protocol Anycast, RFC 9665
    (Ipv6Addr::new(0x2001, 3, 0, 0, 0, 0, 0, 0), 32),  // AMT, RFC 7450
    (Ipv6Addr::new(0x2001, 4, 0x112, 0, 0, 0, 0, 0), 48), // AS112-v6, RFC 7535
    (Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0), 28), // ORCHIDv2, RFC 7343
    (Ipv6Addr::new(0x2001, 0x30, 0, 0, 0, 0, 0, 0), 28), // Drone Remote ID Protocol Entity Tags, RFC 9374
];

fn in_v4(ip: Ipv4Addr, blocks: &[V4Block]) -> bool {
    let ip = u32::from(ip);
    blocks.iter().any(|&(net, len)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        ip & mask == u32::from(net)
    })
}

fn in_v6(ip: Ipv6Addr, blocks: &[V6Block]) -> bool {
    let ip = u128::from(ip);
    blocks.iter().any(|&(net, len)| {
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        ip & mask == u128::from(net)
    })
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    !in_v4(ip, V4_NOT_GLOBAL) || in_v4(ip, V4_GLOBAL_INSIDE)
}

/// The IPv4 addresses an IPv6 address carries, for the ways of putting one inside
/// the other: a connection to it reaches (or is relayed by) those IPv4 hosts.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Vec<Ipv4Addr>> {
    let bits = u128::from(ip);
    let v4 = |shift: u32| Ipv4Addr::from((bits >> shift) as u32);
    let prefix = |len: u32| bits >> (128 - len);
    if prefix(96) == 0xffff {
        return Some(vec![v4(0)]); // IPv4-mapped ::ffff:0:0/96, RFC 4291
    }
    if prefix(96) == 0 {
        return Some(vec![v4(0)]); // IPv4-compatible ::/96 (deprecated), RFC 4291; also :: and ::1
    }
    if prefix(96) == u128::from(0x0064_ff9b_u32) << 64 {
        return Some(vec![v4(0)]); // IPv4/IPv6 translation (NAT64) 64:ff9b::/96, RFC 6052
    }
    if prefix(16) == 0x2002 {
        return Some(vec![v4(80)]); // 6to4 2002::/16, RFC 3056: 2002:AABB:CCDD::/48
    }
    if prefix(32) == 0x2001_0000 {
        // Teredo 2001::/32, RFC 4380: the server's address, then the client's, inverted.
        return Some(vec![v4(64), Ipv4Addr::from(!(bits as u32))]);
    }
    None
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4s) = embedded_ipv4(ip) {
        return v4s.into_iter().all(is_global_v4);
    }
    in_v6(ip, &[V6_GLOBAL_UNICAST]) && (!in_v6(ip, V6_NOT_GLOBAL) || in_v6(ip, V6_GLOBAL_INSIDE))
}

/// Whether an address is internal: anything but a globally reachable unicast
/// address (for an IPv6 address carrying an IPv4 one, that IPv4 address).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !is_global_v4(v4),
        IpAddr::V6(v6) => !is_global_v6(v6),
    }
}

/// Why a destination was refused. What a tenant sees says neither which address a
/// name led to nor whether it resolved at all; `address` is for the operator's log.
#[derive(Debug, thiserror::Error)]
#[error(
    "the HEC URI does not lead to a public address; this service sends only to public addresses"
)]
pub struct Refused {
    /// The internal address found, or `None` when the name did not resolve.
    pub address: Option<IpAddr>,
}

/// Checks addresses against the policy: the first internal one is refused.
pub fn check(addrs: &[SocketAddr], allow_internal: bool) -> Result<(), Refused> {
    match addrs.iter().find(|a| is_internal(a.ip())) {
        Some(a) if !allow_internal => Err(Refused {
            address: Some(a.ip()),
        }),
        _ => Ok(()),
    }
}

/// A URI's host without the brackets of an IPv6 literal (`[::1]` → `::1`).
pub fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Resolves `host` now and checks where it leads. A name that does not resolve is
/// refused like an internal one, so that the answer tells a tenant nothing about the
/// operator's internal names; DNS trouble shows the same way and a retry fixes it.
pub async fn check_host(host: &str, port: u16, allow_internal: bool) -> Result<(), Refused> {
    if allow_internal {
        return Ok(());
    }
    let host = bare_host(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return check(&[SocketAddr::new(ip, port)], allow_internal);
    }
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            if addrs.is_empty() {
                return Err(Refused { address: None });
            }
            check(&addrs, allow_internal)
        }
        Err(_) => Err(Refused { address: None }),
    }
}

/// The connect-time guard: awc asks it to resolve every host name it connects to,
/// and IPv6 literals too (they come with their brackets, which no resolver reads).
pub struct GuardedResolver {
    /// The operator allows internal addresses: resolve without refusing any.
    pub allow_internal: bool,
}

impl Resolve for GuardedResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<SocketAddr>, Box<dyn std::error::Error>>> + 'a>>
    {
        Box::pin(async move {
            let bare = bare_host(host);
            let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => tokio::net::lookup_host((bare, port)).await?.collect(),
            };
            if let Err(refused) = check(&addrs, self.allow_internal) {
                log::warn!(
                    "SSRF guard: not connecting to {}, which leads to the internal address {}",
                    crate::logsafe::clean(host),
                    refused
                        .address
                        .map_or_else(|| "?".to_owned(), |a| a.to_string())
                );
                return Err(refused.into());
            }
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal(s: &str) -> bool {
        is_internal(s.parse().unwrap())
    }

    /// One address of every entry of IANA's IPv4 and IPv6 special-purpose registries
    /// that is not globally reachable, and of the ranges outside them a tenant must
    /// not reach (multicast, reserved); and the IPv4 embedded in IPv6 addresses.
    #[test]
    fn every_special_purpose_range_and_embedded_internal_ipv4_is_internal() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3", // "this network"
            "10.0.0.1",
            "10.255.255.255", // private
            "100.64.0.1",
            "100.127.255.254", // shared (CGN)
            "127.0.0.1",
            "127.255.0.1",     // loopback
            "169.254.169.254", // link local, cloud metadata
            "172.16.0.1",
            "172.31.255.255", // private
            "192.0.0.1",
            "192.0.0.8",
            "192.0.0.170",
            "192.0.0.171",
            "192.0.0.255", // IETF protocol assignments
            "192.0.2.7",   // TEST-NET-1
            "192.88.99.1",
            "192.88.99.2", // deprecated 6to4 relay anycast, 6a44
            "192.168.1.1", // private
            "198.18.0.1",
            "198.19.255.255", // benchmarking
            "198.51.100.7",   // TEST-NET-2
            "203.0.113.5",    // TEST-NET-3
            "224.0.0.1",
            "239.255.255.255", // multicast
            "240.0.0.1",
            "255.255.255.254", // reserved
            "255.255.255.255", // limited broadcast
            "::",
            "::1", // unspecified, loopback
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:198.18.0.1", // IPv4-mapped
            "::10.0.0.1",
            "::127.0.0.1",       // IPv4-compatible (deprecated)
            "::ffff:0:10.0.0.1", // IPv4-translated (SIIT)
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b::c612:1",    // NAT64 of 10.0.0.1, 127.0.0.1, 198.18.0.1
            "64:ff9b:1::808:808", // local-use NAT64, whatever it embeds
            "100::1",
            "100:0:0:1::1",                         // discard-only, dummy prefix
            "2001::1",                              // Teredo with server 0.0.0.0
            "2001:0:4136:e378:8000:63bf:f5ff:fffe", // Teredo, client 10.0.0.1
            "2001:0:a00:1:8000:63bf:f7f7:f7f7",     // Teredo, server 10.0.0.1
            "2001:1::4",
            "2001:2::1",
            "2001:10::1",
            "2001:1ff:ffff::1", // IETF protocol assignments, benchmarking, ORCHID
            "2001:db8::10",     // documentation
            "2002:a00:1::1",
            "2002:7f00:1::",
            "2002:c000:201::1", // 6to4 of 10.0.0.1, 127.0.0.1, 192.0.2.1
            "3fff::1",
            "3fff:fff::1", // documentation (2024)
            "5f00::1",     // SRv6 SIDs
            "fc00::1",
            "fd00:ec2::254", // unique local, AWS metadata
            "fe80::1",
            "febf::1", // link local
            "fec0::1", // site local (deprecated)
            "ff02::1",
            "ff0e::1", // multicast
            "4000::1",
            "e000::1", // outside global unicast 2000::/3
        ] {
            assert!(internal(ip), "{ip} must be refused");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.254",
            "192.0.0.9",
            "192.0.0.10", // PCP and TURN anycast: globally reachable
            "192.31.196.1",
            "192.52.193.1",
            "192.175.48.1", // AS112, AMT: globally reachable
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "2620:4f:8000::1",
            "2001:4860:4860::8888",
            "2001:200::1", // RIR space right after 2001::/23
            "2001:1::1",
            "2001:1::2",
            "2001:1::3",
            "2001:3::1",
            "2001:4:112::1",
            "2001:20::1",
            "2001:30::1", // globally reachable IETF assignments
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",                      // public IPv4 embedded
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7", // Teredo, client 8.8.8.8
        ] {
            assert!(!internal(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn the_policy_refuses_internal_destinations_unless_allowed_and_names_no_address() {
        let a: SocketAddr = "10.0.0.5:8088".parse().unwrap();
        let refused = check(&[a], false).unwrap_err();
        assert_eq!(refused.address, Some(a.ip()), "kept for the operator's log");
        assert!(!refused.to_string().contains("10.0.0.5"), "{refused}");
        assert!(check(&[a], true).is_ok());
        let public: SocketAddr = "[2001:4860:4860::8888]:443".parse().unwrap();
        assert!(check(&[public], false).is_ok());
        assert!(
            check(&[public, a], false).is_err(),
            "one internal address is enough"
        );
    }

    #[actix_rt::test]
    async fn ip_literals_are_checked_without_resolving_and_brackets_are_stripped() {
        assert!(check_host("[::1]", 8088, false).await.is_err());
        assert!(check_host("[2001:4860:4860::8888]", 8088, false)
            .await
            .is_ok());
        assert!(check_host("8.8.8.8", 8088, false).await.is_ok());
        assert!(check_host("[::1]", 8088, true).await.is_ok());
        let r = GuardedResolver {
            allow_internal: true,
        };
        let addrs = r.lookup("[::1]", 9).await.unwrap();
        assert_eq!(addrs, vec!["[::1]:9".parse().unwrap()]);
        let r = GuardedResolver {
            allow_internal: false,
        };
        assert!(r.lookup("[64:ff9b::a00:1]", 9).await.is_err());
    }
}
