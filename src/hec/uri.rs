//! The HEC URI a customer pastes, normalised to the server's base URL.
//!
//! People paste whatever Splunk's docs showed them: the bare server, the
//! `/services/collector` path, or the full `/services/collector/event` endpoint.
//! All of them mean the same collector; `/raw` takes a different body and is refused.

use awc::http::Uri;
use std::fmt;

/// A validated HEC endpoint: scheme, host, port and any reverse-proxy prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HecUri {
    scheme: &'static str,
    host: String,
    port: u16,
    /// Path before `/services/collector`, for a HEC behind a path-routing proxy; usually empty.
    prefix: String,
}

/// Splunk's default HEC port, used when a bare host is given without one.
pub const DEFAULT_HEC_PORT: u16 = 8088;

impl HecUri {
    /// Parses what a user typed; the error says what to change.
    pub fn parse(input: &str) -> Result<HecUri, String> {
        let s = input.trim();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        let uri: Uri = s.parse().map_err(|_| {
            format!("is not a valid URL: {s:?}; expected e.g. https://splunk.example.com:8088")
        })?;
        let scheme = match uri.scheme_str() {
            Some(sc) if sc.eq_ignore_ascii_case("https") => "https",
            Some(sc) if sc.eq_ignore_ascii_case("http") => "http",
            Some(other) => {
                return Err(format!(
                    "must use https:// (or http://), not {other}://; HEC is served over HTTP(S)"
                ))
            }
            None => return Err(format!("must start with https://, e.g. https://{s}")),
        };
        let authority = uri.authority().ok_or("must name a host")?;
        if authority.as_str().contains('@') {
            return Err(
                "must not contain a user name or password; put the HEC token in the token field"
                    .into(),
            );
        }
        let host = authority.host();
        if host.is_empty() {
            return Err("must name a host".into());
        }
        if uri.query().is_some() {
            return Err(
                "must not have a query string (?…); the token goes in the token field".into(),
            );
        }
        let path = uri.path().trim_end_matches('/');
        let lower = path.to_ascii_lowercase();
        if lower.contains("/services/collector/raw") {
            return Err("points at the /raw endpoint, which takes plain text; use the server's base URL or /services/collector/event".into());
        }
        let prefix = [
            "/services/collector/event/1.0",
            "/services/collector/event",
            "/services/collector",
        ]
        .iter()
        .find_map(|suffix| {
            lower
                .strip_suffix(suffix)
                .map(|p| path[..p.len()].to_owned())
        });
        let prefix = match prefix {
            Some(p) => p,
            None if path.is_empty() => String::new(),
            None => {
                return Err(format!(
                    "has the path {path:?}; use the Splunk server's base URL (https://host:8088) or a path ending in /services/collector or /services/collector/event"
                ))
            }
        };
        let port = match authority.port_u16() {
            Some(p) => p,
            // Splunk Cloud's http-inputs hosts listen on 443; a self-hosted HEC on 8088.
            None if host.starts_with("http-inputs") && scheme == "https" => 443,
            None if path.is_empty() => DEFAULT_HEC_PORT,
            None if scheme == "https" => 443,
            None => 80,
        };
        Ok(HecUri {
            scheme,
            host: host.to_owned(),
            port,
            prefix,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether both lead to the same server: scheme, host and port (the path may
    /// differ). Host names compare without case, addresses as addresses, so
    /// `[::1]` and `[0::1]` are the same host.
    pub fn same_destination(&self, other: &HecUri) -> bool {
        fn host(h: &str) -> String {
            let bare = crate::hec::destination::bare_host(h);
            match bare.parse::<std::net::IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => bare.to_ascii_lowercase(),
            }
        }
        self.scheme == other.scheme
            && self.port == other.port
            && host(&self.host) == host(&other.host)
    }

    /// The same collector however it was written (`…:8088` and
    /// `…:8088/services/collector/event` are one).
    pub fn same_collector(&self, other: &HecUri) -> bool {
        self.same_destination(other) && self.prefix == other.prefix
    }

    fn endpoint(&self, path: &str) -> String {
        format!(
            "{}://{}:{}{}{}",
            self.scheme, self.host, self.port, self.prefix, path
        )
    }

    /// Where events are posted.
    pub fn event_url(&self) -> String {
        self.endpoint("/services/collector/event")
    }

    /// HEC's health check (says nothing about the token).
    pub fn health_url(&self) -> String {
        self.endpoint("/services/collector/health")
    }

    /// Indexer acknowledgement queries.
    pub fn ack_url(&self) -> String {
        self.endpoint("/services/collector/ack")
    }
}

impl fmt::Display for HecUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.endpoint(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_url(s: &str) -> String {
        HecUri::parse(s).unwrap().event_url()
    }

    #[test]
    fn every_pasted_form_reaches_the_same_collector() {
        let want = "https://splunk.example.com:8088/services/collector/event";
        assert_eq!(event_url("https://splunk.example.com:8088"), want);
        assert_eq!(event_url("https://splunk.example.com:8088/"), want);
        assert_eq!(
            event_url("https://splunk.example.com:8088/services/collector"),
            want
        );
        assert_eq!(
            event_url("https://splunk.example.com:8088/services/collector/event"),
            want
        );
        assert_eq!(
            event_url("https://splunk.example.com:8088/services/collector/event/1.0"),
            want
        );
        assert_eq!(event_url(" https://splunk.example.com "), want);
    }

    #[test]
    fn the_default_port_depends_on_the_form() {
        assert_eq!(
            event_url("https://http-inputs-acme.splunkcloud.com/services/collector/event"),
            "https://http-inputs-acme.splunkcloud.com:443/services/collector/event"
        );
        assert_eq!(
            event_url("https://http-inputs-acme.splunkcloud.com"),
            "https://http-inputs-acme.splunkcloud.com:443/services/collector/event"
        );
        assert_eq!(
            event_url("https://hec.example.com/services/collector"),
            "https://hec.example.com:443/services/collector/event"
        );
        assert_eq!(
            event_url("http://[::1]:9000/proxy/services/collector"),
            "http://[::1]:9000/proxy/services/collector/event"
        );
    }

    #[test]
    fn the_same_server_and_collector_are_recognised_however_written() {
        let a = HecUri::parse("https://Splunk.example.com:8088").unwrap();
        let b = HecUri::parse("https://splunk.example.com:8088/services/collector/event").unwrap();
        assert!(a.same_destination(&b) && a.same_collector(&b));
        let proxied =
            HecUri::parse("https://splunk.example.com:8088/hec/services/collector").unwrap();
        assert!(a.same_destination(&proxied) && !a.same_collector(&proxied));
        for other in [
            "http://splunk.example.com:8088",
            "https://splunk.example.com:443",
            "https://splunk.example.org:8088",
        ] {
            assert!(
                !a.same_destination(&HecUri::parse(other).unwrap()),
                "{other}"
            );
        }
    }

    #[test]
    fn wrong_uris_are_refused_with_the_reason() {
        assert!(HecUri::parse("ftp://splunk.example.com")
            .unwrap_err()
            .contains("not ftp://"));
        assert!(
            HecUri::parse("https://s.example.com:8088/services/collector/raw")
                .unwrap_err()
                .contains("/raw")
        );
        assert!(HecUri::parse("https://s.example.com/en-US/app")
            .unwrap_err()
            .contains("has the path"));
        assert!(HecUri::parse("splunk.example.com")
            .unwrap_err()
            .contains("must start with https://"));
        assert!(HecUri::parse("https://s.example.com/?token=x")
            .unwrap_err()
            .contains("query string"));
        assert!(HecUri::parse("https://u:p@s.example.com")
            .unwrap_err()
            .contains("user name"));
        assert!(HecUri::parse("").is_err());
    }

    #[test]
    fn the_destination_is_scheme_host_and_port_whatever_the_path() {
        let same = |a: &str, b: &str| {
            HecUri::parse(a)
                .unwrap()
                .same_destination(&HecUri::parse(b).unwrap())
        };
        assert!(same(
            "https://splunk.example.com:8088",
            "HTTPS://Splunk.Example.com:8088/services/collector/event"
        ));
        assert!(same(
            "https://[::1]:8088",
            "https://[0:0::1]:8088/proxy/services/collector"
        ));
        assert!(same(
            "https://splunk.example.com",
            "https://splunk.example.com:8088"
        ));
        assert!(!same(
            "https://splunk.example.com:8088",
            "http://splunk.example.com:8088"
        ));
        assert!(!same(
            "https://splunk.example.com:8088",
            "https://splunk.example.com:8089"
        ));
        assert!(!same(
            "https://splunk.example.com:8088",
            "https://splunk.example.net:8088"
        ));
        assert!(
            !same(
                "https://splunk.example.com",
                "https://splunk.example.com/services/collector"
            ),
            "the bare host means 8088, the collector path 443"
        );
    }
}
