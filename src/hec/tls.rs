//! TLS for the integrations' HEC clients: rustls with the public web roots, plus
//! the integration's private CA (`ca_pem`), or no verification where the operator
//! allows `tls_verify: false`; and the IPv6-literal verifier, since a server reached
//! by an address must be checked against that address, not a name. One config per
//! distinct trust setting, shared by every client that has it. (The awc connector
//! around it stays one per integration: it owns the integration's connection pool,
//! whose limit and sockets are that integration's alone.)

use crate::model::ca::{parse_ca_pem, CaPemError};
use crate::model::Integration;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use actix_web::dev::Service;
use awc::http::Uri;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv6Addr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

/// Why an integration's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The private CA bundle is unusable (checked when saved, so only a stored
    /// record from an older version gets here).
    #[error("ca_pem {0}")]
    CaPem(#[from] CaPemError),
    /// rustls refused a certificate or the protocol settings.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// The certificate verifier could not be built from the roots.
    #[error("{0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn finish(mut config: ClientConfig) -> Arc<ClientConfig> {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn public_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// Adds the integration's private CA (if any) to the public roots.
fn roots_for(it: &Integration) -> Result<RootCertStore, TlsError> {
    let mut roots = public_roots();
    if let Some(pem) = &it.ca_pem {
        for cert in parse_ca_pem(pem)? {
            roots.add(cert)?;
        }
    }
    Ok(roots)
}

/// What a TLS config depends on: which servers it trusts, and the address a
/// server reached by an IPv6 literal is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TrustKey {
    trust: Trust,
    ipv6: Option<Ipv6Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Trust {
    /// The public web roots.
    Public,
    /// The public roots and a private CA, by the SHA-256 of its PEM text.
    PrivateCa([u8; 32]),
    /// No verification (`tls_verify: false`).
    Unverified,
}

impl TrustKey {
    fn of(it: &Integration) -> TrustKey {
        let trust = match (&it.ca_pem, it.tls_verify) {
            (_, false) => Trust::Unverified,
            (None, true) => Trust::Public,
            (Some(pem), true) => {
                let digest = ring::digest::digest(&ring::digest::SHA256, pem.as_bytes());
                let mut key = [0; 32];
                key.copy_from_slice(digest.as_ref());
                Trust::PrivateCa(key)
            }
        };
        TrustKey {
            trust,
            ipv6: ipv6_literal(it.hec_uri.host()),
        }
    }
}

/// The TLS configs in use, one per distinct trust setting, built once: a hundred
/// thousand integrations hold a handful of configs (each with its copy of the
/// public roots, its verifier and its session cache), not one each. Held weakly:
/// a config goes with the last client that uses it.
#[derive(Default)]
struct Configs {
    by_trust: HashMap<TrustKey, Weak<ClientConfig>>,
    /// Entries after the last sweep of the dead ones: the next sweep comes once
    /// the map has doubled, so sweeping costs O(1) per insertion.
    swept_at: usize,
}

fn configs() -> MutexGuard<'static, Configs> {
    static CONFIGS: OnceLock<Mutex<Configs>> = OnceLock::new();
    // A panic while the lock was held leaves at worst an entry that is missing or dead.
    CONFIGS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The TLS settings for one integration: shared with every other integration of
/// the same trust setting (see [`Configs`]).
pub fn tls_config(it: &Integration) -> Result<Arc<ClientConfig>, TlsError> {
    let key = TrustKey::of(it);
    let mut configs = configs();
    if let Some(config) = configs.by_trust.get(&key).and_then(Weak::upgrade) {
        return Ok(config);
    }
    // Built under the lock: integrations starting together with one new setting
    // build it once.
    let config = build_tls_config(it)?;
    if configs.by_trust.len() >= 2 * configs.swept_at.max(16) {
        configs.by_trust.retain(|_, c| c.strong_count() > 0);
        configs.swept_at = configs.by_trust.len();
    }
    configs.by_trust.insert(key, Arc::downgrade(&config));
    Ok(config)
}

/// A new TLS config for `it`'s trust setting.
fn build_tls_config(it: &Integration) -> Result<Arc<ClientConfig>, TlsError> {
    if let Some(ip) = ipv6_literal(it.hec_uri.host()) {
        return ipv6_literal_tls_config(it, ip);
    }
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    if !it.tls_verify {
        return Ok(finish(
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
                .with_no_client_auth(),
        ));
    }
    Ok(finish(
        builder
            .with_root_certificates(roots_for(it)?)
            .with_no_client_auth(),
    ))
}

/// A server reached by an IPv6 literal: certificates are checked against the
/// address (an IP address SAN), and no SNI is sent, as for any address (RFC 6066).
fn ipv6_literal_tls_config(it: &Integration, ip: Ipv6Addr) -> Result<Arc<ClientConfig>, TlsError> {
    let inner: Arc<dyn ServerCertVerifier> = if it.tls_verify {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots_for(it)?), provider()).build()?
    } else {
        Arc::new(NoVerification(provider()))
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Ipv6LiteralVerifier { ip, inner }))
        .with_no_client_auth();
    config.enable_sni = false;
    Ok(finish(config))
}

/// The address of a URI host that is an IPv6 literal (`[2001:db8::10]`).
fn ipv6_literal(host: &str) -> Option<Ipv6Addr> {
    host.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// actix-tls names the TLS server after `Uri::host()`, which keeps an IPv6
/// literal's brackets (`[::1]`); rustls cannot read that as an address and refuses
/// to connect. So once the TCP connection stands, a connection to an IPv6 literal
/// carries this stand-in DNS name instead, which [`Ipv6LiteralVerifier`] turns
/// back into the address. (The HTTP request keeps the real URI and `Host`.)
fn stand_in_name(ip: Ipv6Addr) -> String {
    format!("ipv6-{:032x}.siemsync.invalid", u128::from(ip))
}

/// Puts the stand-in name in place of an IPv6 literal on a new connection.
#[derive(Clone)]
pub struct Ipv6LiteralConnector<S> {
    /// The TCP connector (with the SSRF-guarded resolver) this wraps.
    pub tcp: S,
}

type TcpConnection = Connection<Uri, actix_rt::net::TcpStream>;

impl<S> Service<ConnectInfo<Uri>> for Ipv6LiteralConnector<S>
where
    S: Service<ConnectInfo<Uri>, Response = TcpConnection, Error = ConnectError>,
    S::Future: 'static,
{
    type Response = TcpConnection;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<TcpConnection, ConnectError>>>>;

    actix_web::dev::forward_ready!(tcp);

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let connecting = self.tcp.call(req);
        Box::pin(async move {
            let (io, uri) = connecting.await?.into_parts();
            let uri = match ipv6_literal(uri.host().unwrap_or_default()) {
                Some(ip) => format!("https://{}/", stand_in_name(ip))
                    .parse()
                    .unwrap_or(uri),
                None => uri,
            };
            Ok(Connection::new(uri, io))
        })
    }
}

/// Checks the certificate of a server reached by an IPv6 literal against its
/// address, whatever name the connection carried.
#[derive(Debug)]
struct Ipv6LiteralVerifier {
    ip: Ipv6Addr,
    inner: Arc<dyn ServerCertVerifier>,
}

impl ServerCertVerifier for Ipv6LiteralVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let expected = ServerName::DnsName(
            stand_in_name(self.ip)
                .try_into()
                .map_err(|_| rustls::Error::General("bad stand-in name".into()))?,
        );
        if *server_name != expected {
            return Err(rustls::Error::General(format!(
                "connection for {server_name:?} reached the verifier of [{}]",
                self.ip
            )));
        }
        let address = ServerName::IpAddress(std::net::IpAddr::V6(self.ip).into());
        self.inner
            .verify_server_cert(end_entity, intermediates, &address, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `tls_verify: false`, allowed only where the operator's config says so (and
/// PostgreSQL's `sslmode=require` without a root certificate, as in libpq).
#[derive(Debug)]
pub(crate) struct NoVerification(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, IntegrationChange, IntegrationPolicy};
    use serde_json::{json, Value};

    fn integration(uri: &str, extra: Value) -> Integration {
        let mut body = json!({"name": "n", "hec_token": "t-0123456789abcdef",
            "hec_uri": uri, "sources": ["audit"], "enabled": true});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        IntegrationChange::from_json(&body)
            .and_then(|c| {
                c.create(
                    AccountId::parse("acme").unwrap(),
                    chrono::Utc::now(),
                    IntegrationPolicy {
                        allow_insecure_tls: true,
                    },
                )
            })
            .unwrap()
    }

    fn ca() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn integrations_of_one_trust_setting_share_one_tls_config() {
        let (ca1, ca2) = (ca(), ca());
        let config = |uri: &str, extra: Value| tls_config(&integration(uri, extra)).unwrap();
        let a = config("https://a.example.com", json!({"ca_pem": ca1}));
        let b = config("https://b.example.com:8088", json!({"ca_pem": ca1}));
        assert!(Arc::ptr_eq(&a, &b), "the same private CA: one config");
        let c = config("https://a.example.com", json!({"ca_pem": ca2}));
        assert!(!Arc::ptr_eq(&a, &c), "another CA: another config");
        let (p, q) = (
            config("https://a.example.com", json!({})),
            config("https://b.example.com", json!({})),
        );
        assert!(Arc::ptr_eq(&p, &q), "the public roots: one config");
        assert!(!Arc::ptr_eq(&p, &a));
        let (u, v) = (
            config("https://a.example.com", json!({"tls_verify": false})),
            config(
                "https://c.example.com",
                json!({"tls_verify": false, "ca_pem": ca1}),
            ),
        );
        assert!(Arc::ptr_eq(&u, &v), "no verification: one config");
        assert!(!Arc::ptr_eq(&u, &p));
        let (x, y, z) = (
            config("https://[2001:db8::10]:8088", json!({})),
            config("https://[2001:db8::10]", json!({})),
            config("https://[2001:db8::11]", json!({})),
        );
        assert!(Arc::ptr_eq(&x, &y), "one IPv6 literal: one config");
        assert!(
            !Arc::ptr_eq(&x, &z),
            "another address is checked: another config"
        );
        assert!(!Arc::ptr_eq(&x, &p));
    }
}
