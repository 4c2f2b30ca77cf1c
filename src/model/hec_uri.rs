//! The HEC URI a customer pastes, parsed once at the edge and kept parsed.
//!
//! People paste whatever Splunk's docs showed them: the bare server, the
//! `/services/collector` path, or the full `/services/collector/event` endpoint.
//! All of them mean the same collector; `/raw` takes a different body and is refused.

use awc::http::Uri;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A validated HEC endpoint: scheme, host, port and any reverse-proxy prefix, with
/// the text it was parsed from (what the customer sees again, and what is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HecUri {
    /// What the customer entered, trimmed: shown back as entered.
    text: String,
    scheme: &'static str,
    host: String,
    port: u16,
    /// Path before `/services/collector`, for a HEC behind a path-routing proxy; usually empty.
    prefix: String,
}

/// Splunk's default HEC port, used when a bare host is given without one.
pub const DEFAULT_HEC_PORT: u16 = 8088;

/// Why a HEC URI was refused; each message says what to change (the caller adds the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HecUriError {
    /// Nothing was given.
    #[error("must not be empty")]
    Empty,
    /// The text does not parse as a URL.
    #[error("is not a valid URL: {0:?}; expected e.g. https://splunk.example.com:8088")]
    NotAUrl(String),
    /// A scheme other than http(s).
    #[error("must use https:// (or http://), not {0}://; HEC is served over HTTP(S)")]
    Scheme(String),
    /// A host without `https://`.
    #[error("must start with https://, e.g. https://{0}")]
    NoScheme(String),
    /// A URL without a host.
    #[error("must name a host")]
    NoHost,
    /// A user name or password in the URL, where a token would leak.
    #[error("must not contain a user name or password; put the HEC token in the token field")]
    UserInfo,
    /// A query string, which HEC does not take.
    #[error("must not have a query string (?…); the token goes in the token field")]
    Query,
    /// The raw endpoint, which takes plain text, not events.
    #[error("points at the /raw endpoint, which takes plain text; use the server's base URL or /services/collector/event")]
    Raw,
    /// A path that is not a HEC endpoint.
    #[error("has the path {0:?}; use the Splunk server's base URL (https://host:8088) or a path ending in /services/collector or /services/collector/event")]
    Path(String),
}

impl HecUri {
    /// Parses what a user typed; the error says what to change.
    pub fn parse(input: &str) -> Result<HecUri, HecUriError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(HecUriError::Empty);
        }
        let uri: Uri = s.parse().map_err(|_| HecUriError::NotAUrl(s.to_owned()))?;
        let scheme = match uri.scheme_str() {
            Some(sc) if sc.eq_ignore_ascii_case("https") => "https",
            Some(sc) if sc.eq_ignore_ascii_case("http") => "http",
            Some(other) => return Err(HecUriError::Scheme(other.to_owned())),
            None => return Err(HecUriError::NoScheme(s.to_owned())),
        };
        let authority = uri.authority().ok_or(HecUriError::NoHost)?;
        if authority.as_str().contains('@') {
            return Err(HecUriError::UserInfo);
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(HecUriError::NoHost);
        }
        if uri.query().is_some() {
            return Err(HecUriError::Query);
        }
        let path = uri.path().trim_end_matches('/');
        let lower = path.to_ascii_lowercase();
        if lower.contains("/services/collector/raw") {
            return Err(HecUriError::Raw);
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
            None => return Err(HecUriError::Path(path.to_owned())),
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
            text: s.to_owned(),
            scheme,
            host: host.to_owned(),
            port,
            prefix,
        })
    }

    /// The URI as the customer entered it (trimmed): what the API shows and the store keeps.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host as written in a URL: an IPv6 address keeps its brackets (`[::1]`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host without an IPv6 address's brackets, as resolvers and address parsers want it.
    pub fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    /// The port, with HEC's default filled in when the URI gave none.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether both lead to the same server: scheme, host and port (the path may
    /// differ). Host names compare without case, addresses as addresses, so
    /// `[::1]` and `[0::1]` are the same host.
    pub fn same_destination(&self, other: &HecUri) -> bool {
        fn host(uri: &HecUri) -> String {
            let bare = uri.bare_host();
            match bare.parse::<std::net::IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => bare.to_ascii_lowercase(),
            }
        }
        self.scheme == other.scheme && self.port == other.port && host(self) == host(other)
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

/// The normalised base URL (`https://host:8088`), as logs and connection tests name it.
impl fmt::Display for HecUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.endpoint(""))
    }
}

/// Stored and shown as the text the customer entered.
impl Serialize for HecUri {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// A stored URI is parsed again when read: one that no longer parses is reported
/// as an unreadable record, never replaced by a made-up destination.
impl<'de> Deserialize<'de> for HecUri {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HecUri, D::Error> {
        let text = String::deserialize(d)?;
        HecUri::parse(&text).map_err(|e| serde::de::Error::custom(format!("hec_uri {e}")))
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
    fn a_uri_is_kept_as_entered_and_a_stored_one_that_no_longer_parses_is_an_error() {
        let uri = HecUri::parse(" https://Splunk.example.com:8088/services/collector ").unwrap();
        let stored = serde_json::to_string(&uri).unwrap();
        assert_eq!(
            stored,
            r#""https://Splunk.example.com:8088/services/collector""#
        );
        assert_eq!(serde_json::from_str::<HecUri>(&stored).unwrap(), uri);
        let e = serde_json::from_str::<HecUri>(r#""ftp://splunk.example.com""#).unwrap_err();
        assert!(e.to_string().contains("hec_uri must use https://"), "{e}");
    }

    #[test]
    fn wrong_uris_are_refused_with_the_reason() {
        assert!(HecUri::parse("ftp://splunk.example.com")
            .unwrap_err()
            .to_string()
            .contains("not ftp://"));
        assert!(
            HecUri::parse("https://s.example.com:8088/services/collector/raw")
                .unwrap_err()
                .to_string()
                .contains("/raw")
        );
        assert!(HecUri::parse("https://s.example.com/en-US/app")
            .unwrap_err()
            .to_string()
            .contains("has the path"));
        assert!(HecUri::parse("splunk.example.com")
            .unwrap_err()
            .to_string()
            .contains("must start with https://"));
        assert!(HecUri::parse("https://s.example.com/?token=x")
            .unwrap_err()
            .to_string()
            .contains("query string"));
        assert!(HecUri::parse("https://u:p@s.example.com")
            .unwrap_err()
            .to_string()
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
