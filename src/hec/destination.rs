//! The SSRF guard: siemsync posts wherever a tenant points it, so unless the operator
//! allows it, a HEC URI may not lead to loopback, private, link-local, unique-local
//! or cloud-metadata addresses. Checked when an integration is saved and again at
//! every connect (a custom resolver), so DNS rebinding cannot get around it.

use actix_tls::connect::Resolve;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;

/// Whether an address is internal: not a place tenants' data may be sent.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal_v4(v4),
            None => is_internal_v6(v6),
        },
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata service
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7 (AWS metadata is fd00:ec2::254)
        || (first & 0xffc0) == 0xfe80 // link local
        || ip.to_ipv4().is_some_and(|v4| ip.segments()[..6] == [0; 6] && is_internal_v4(v4))
    // IPv4-compatible
}

/// Why a destination was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "the HEC URI leads to the internal address {0}; this service sends only to public addresses"
)]
pub struct Refused(pub IpAddr);

/// Checks addresses against the policy: the first internal one is refused.
pub fn check(addrs: &[SocketAddr], allow_internal: bool) -> Result<(), Refused> {
    match addrs.iter().find(|a| is_internal(a.ip())) {
        Some(a) if !allow_internal => Err(Refused(a.ip())),
        _ => Ok(()),
    }
}

/// Resolves `host` now and checks where it leads. A name that does not resolve is
/// not refused here (DNS may be briefly down); the connect-time check still applies.
pub async fn check_host(host: &str, port: u16, allow_internal: bool) -> Result<(), Refused> {
    if allow_internal {
        return Ok(());
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return check(&[SocketAddr::new(ip, port)], allow_internal);
    }
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => check(&addrs.collect::<Vec<_>>(), allow_internal),
        Err(_) => Ok(()),
    }
}

/// The connect-time guard: awc asks it to resolve every host name it connects to.
pub struct GuardedResolver {
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
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
            check(&addrs, self.allow_internal)?;
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

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(internal(ip), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "192.0.2.7",
            "2001:db8::1",
            "2606:4700::1111",
            "100.128.0.1",
        ] {
            assert!(!internal(ip), "{ip}");
        }
    }

    #[test]
    fn the_policy_refuses_internal_destinations_unless_allowed() {
        let a: SocketAddr = "10.0.0.5:8088".parse().unwrap();
        assert!(check(&[a], false)
            .unwrap_err()
            .to_string()
            .contains("10.0.0.5"));
        assert!(check(&[a], true).is_ok());
    }
}
