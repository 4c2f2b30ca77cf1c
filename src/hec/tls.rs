//! TLS for one integration's HEC client: rustls with the public web roots, plus
//! the integration's private CA (`ca_pem`), or no verification where the operator
//! allows `tls_verify: false`; and the IPv6-literal verifier, since a server reached
//! by an address must be checked against that address, not a name.

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
use std::future::Future;
use std::net::Ipv6Addr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

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

/// The TLS settings for one integration. Integrations with default settings share one
/// config, so thousands of them do not each hold a copy of the public roots.
pub fn tls_config(it: &Integration) -> Result<Arc<ClientConfig>, TlsError> {
    static SHARED: OnceLock<Arc<ClientConfig>> = OnceLock::new();
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
    match &it.ca_pem {
        None => Ok(SHARED
            .get_or_init(|| {
                finish(
                    builder
                        .with_root_certificates(public_roots())
                        .with_no_client_auth(),
                )
            })
            .clone()),
        Some(_) => Ok(finish(
            builder
                .with_root_certificates(roots_for(it)?)
                .with_no_client_auth(),
        )),
    }
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

/// `tls_verify: false`, allowed only where the operator's config says so.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

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
