//! One integration's connection to its Splunk: its own awc client (and so its
//! own connection pool), TLS settings, timeouts, channel and load-balancer
//! cookies. Every answer is classified by `response`, the one place that decides
//! what an answer means; the client only gathers what it needs to read.

use super::cookies::CookieJar;
use super::destination;
pub use super::response::AckAnswer;
use super::response::{
    after_health_probe, classify_acks, classify_post, classify_send_error, classify_unreadable,
    needs_health_probe, unsendable, Failure, HecAnswer, Outcome,
};
use super::uri::HecUri;
use crate::model::Integration;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use actix_web::dev::Service;
use actix_web::web::Bytes;
use awc::http::header;
use awc::http::Uri;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::cell::RefCell;
use std::future::Future;
use std::net::Ipv6Addr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Connect, request and acknowledgement limits, from the operator's config.
#[derive(Debug, Clone, Copy)]
pub struct ClientSettings {
    pub connect: Duration,
    pub request: Duration,
    /// Longest wait between two ack polls.
    pub ack_poll: Duration,
    /// When an ack that has not come makes the batch be re-sent.
    pub ack_timeout: Duration,
    /// Whether internal addresses may be reached (the SSRF guard is off).
    pub allow_internal: bool,
}

/// Largest HEC answer we read; real ones are a few dozen bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub struct HecClient {
    /// The connection pool: built on first use, dropped by [`HecClient::close_idle`]
    /// when the integration goes idle, so no socket waits out the interval.
    pool: RefCell<Option<awc::Client>>,
    tls: Arc<ClientConfig>,
    timeouts: ClientSettings,
    uri: HecUri,
    authorization: String,
    gzip: bool,
    /// `X-Splunk-Request-Channel`, when indexer acknowledgement is on.
    channel: Option<String>,
    /// A load balancer's cookies, sent back so the channel stays on one indexer.
    cookies: CookieJar,
    /// Whether Splunk has answered a post or poll yet (so its cookies are known).
    answered: std::sync::atomic::AtomicBool,
}

/// What `GET /services/collector/health` said.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Answered; `code` is HEC's (17 healthy, 18–20 unhealthy).
    Answered {
        status: u16,
        code: Option<i64>,
        text: String,
    },
    /// No HTTP answer.
    Unreachable(Outcome),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM bundle of CA certificates, refusing one with none in it.
pub fn parse_ca_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate; paste the CA certificate(s) as PEM (-----BEGIN CERTIFICATE-----)".into());
    }
    let mut roots = RootCertStore::empty();
    for c in &certs {
        roots
            .add(c.clone())
            .map_err(|e| format!("holds a certificate that cannot be used as a CA: {e}"))?;
    }
    Ok(certs)
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

/// The TLS settings for one integration. Integrations with default settings share one
/// config, so thousands of them do not each hold a copy of the public roots.
fn tls_config(it: &Integration) -> Result<Arc<ClientConfig>, String> {
    static SHARED: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(ip) = ipv6_literal(it.hec_uri().host()) {
        return ipv6_literal_tls_config(it, ip);
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
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
        Some(pem) => {
            let mut roots = public_roots();
            for cert in parse_ca_pem(pem)? {
                roots.add(cert).map_err(|e| e.to_string())?;
            }
            Ok(finish(
                builder.with_root_certificates(roots).with_no_client_auth(),
            ))
        }
    }
}

/// How long a pooled connection stays reusable after its last use (awc's default,
/// made explicit: [`HecClient::close_idle`] relies on it).
pub const CONNECTION_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A connection pool to one Splunk, through the SSRF guard's resolver.
fn connect(tls: Arc<ClientConfig>, timeouts: ClientSettings) -> awc::Client {
    let resolver = actix_tls::connect::Resolver::custom(destination::GuardedResolver {
        allow_internal: timeouts.allow_internal,
    });
    let connector = awc::Connector::new()
        .connector(Ipv6LiteralConnector {
            tcp: actix_tls::connect::Connector::new(resolver).service(),
        })
        .rustls_0_23(tls)
        .timeout(timeouts.connect)
        .handshake_timeout(timeouts.connect)
        .conn_keep_alive(CONNECTION_KEEP_ALIVE)
        // A few connections per integration: Splunk's maxSockets is shared by everyone.
        .limit(4);
    awc::Client::builder()
        .connector(connector)
        .timeout(timeouts.request)
        .disable_redirects()
        .finish()
}

/// A server reached by an IPv6 literal: certificates are checked against the
/// address (an IP address SAN), and no SNI is sent, as for any address (RFC 6066).
fn ipv6_literal_tls_config(it: &Integration, ip: Ipv6Addr) -> Result<Arc<ClientConfig>, String> {
    let inner: Arc<dyn ServerCertVerifier> = if it.tls_verify {
        let mut roots = public_roots();
        for cert in it
            .ca_pem
            .as_deref()
            .map(parse_ca_pem)
            .transpose()?
            .unwrap_or_default()
        {
            roots.add(cert).map_err(|e| e.to_string())?;
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?
    } else {
        Arc::new(NoVerification(provider()))
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
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
struct Ipv6LiteralConnector<S> {
    tcp: S,
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

impl HecClient {
    /// A client for one integration; the error says what in its settings cannot be used.
    pub fn new(it: &Integration, timeouts: ClientSettings) -> Result<HecClient, Failure> {
        let unusable = |text: String, advice: &str| Failure {
            http_status: None,
            code: None,
            text,
            advice: advice.to_owned(),
        };
        let uri = it.hec_uri();
        // IPv4 literals skip the resolver, so the guard checks them here.
        if let Ok(ip) = destination::bare_host(uri.host()).parse() {
            destination::check(&[std::net::SocketAddr::new(ip, 0)], timeouts.allow_internal).map_err(|e| {
                unusable(
                    e.to_string(),
                    "The HEC URI leads to an internal network address, which this service does not send to: use your Splunk's public address.",
                )
            })?;
        }
        let tls = tls_config(it).map_err(|e| {
            unusable(
                e,
                "The integration's TLS settings cannot be used: check ca_pem.",
            )
        })?;
        Ok(HecClient {
            pool: RefCell::new(None),
            tls,
            timeouts,
            uri,
            authorization: format!("Splunk {}", it.hec_token),
            gzip: it.gzip,
            channel: it.indexer_ack.then(|| uuid::Uuid::new_v4().to_string()),
            cookies: CookieJar::default(),
            answered: Default::default(),
        })
    }

    /// The connection pool, built when there is none (first use, or after
    /// [`HecClient::close_idle`]). Requests in flight keep the pool they started on.
    fn client(&self) -> awc::Client {
        self.pool
            .borrow_mut()
            .get_or_insert_with(|| connect(self.tls.clone(), self.timeouts))
            .clone()
    }

    /// Closes the connections kept for reuse. Called when the next use is further
    /// away than a connection stays reusable: awc would not reuse it then anyway
    /// (its keep-alive is 15 s), and Splunk closes its end long before — each such
    /// socket would sit in CLOSE-WAIT for the whole interval, one per integration,
    /// until the process runs out of file descriptors.
    pub fn close_idle(&self) {
        self.pool.borrow_mut().take();
    }

    pub fn acknowledges(&self) -> bool {
        self.channel.is_some()
    }

    /// Whether Splunk (or a load balancer in front) has answered this client yet:
    /// before that, a second request in flight would not carry its cookies.
    pub fn has_answered(&self) -> bool {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a load balancer set a cookie that this client sends back.
    pub fn has_cookies(&self) -> bool {
        !self.cookies.is_empty()
    }

    fn request(&self, url: String) -> awc::ClientRequest {
        let mut req = self
            .client()
            .post(url)
            .insert_header((header::AUTHORIZATION, self.authorization.as_str()))
            .insert_header((header::CONTENT_TYPE, "application/json"));
        if let Some(ch) = &self.channel {
            req = req.insert_header(("X-Splunk-Request-Channel", ch.as_str()));
        }
        if let Some(cookies) = self.cookies.header() {
            req = req.insert_header((header::COOKIE, cookies));
        }
        req
    }

    /// Waits for an answer, keeps the cookies it sets, and reads its (short) body.
    async fn answer(&self, sent: awc::SendClientRequest) -> Result<Answered, Outcome> {
        let mut resp = sent.await.map_err(|e| classify_send_error(&e))?;
        self.answered
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.cookies.take(resp.headers());
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match resp.body().limit(MAX_ANSWER_BYTES).await {
            Ok(body) => Ok(Answered {
                status,
                retry_after,
                body,
            }),
            Err(e) => Err(classify_unreadable(
                status,
                matches!(e, awc::error::PayloadError::Overflow),
                &e.to_string(),
                MAX_ANSWER_BYTES,
            )),
        }
    }

    /// Posts one batch of concatenated event envelopes and classifies the answer.
    pub async fn post_events(&self, body: Bytes) -> Outcome {
        let mut req = self.request(self.uri.event_url());
        let body = if self.gzip {
            req = req.insert_header((header::CONTENT_ENCODING, "gzip"));
            match gzip(&body) {
                Ok(zipped) => zipped,
                Err(e) => return unsendable(&e.to_string()),
            }
        } else {
            body
        };
        let outcome = match self.answer(req.send_body(body)).await {
            Ok(a) => classify_post(
                &HecAnswer {
                    status: a.status,
                    body: &a.body,
                    retry_after: a.retry_after.as_deref(),
                },
                self.acknowledges(),
                std::time::SystemTime::now(),
            ),
            Err(unanswered) => unanswered,
        };
        if needs_health_probe(&outcome) {
            let healthy = matches!(self.health().await, Health::Answered { status: 200, .. });
            return after_health_probe(outcome, healthy);
        }
        outcome
    }

    /// Asks which of `ids` are indexed (indexer acknowledgement).
    pub async fn poll_acks(&self, ids: &[u64]) -> AckAnswer {
        let body = serde_json::json!({ "acks": ids }).to_string();
        match self
            .answer(self.request(self.uri.ack_url()).send_body(body))
            .await
        {
            Ok(a) => classify_acks(a.status, &a.body),
            Err(unanswered) => AckAnswer::Failed(unanswered),
        }
    }

    /// HEC's health endpoint: is the collector up (it says nothing about the token).
    pub async fn health(&self) -> Health {
        let mut resp = match self.client().get(self.uri.health_url()).send().await {
            Ok(resp) => resp,
            Err(e) => return Health::Unreachable(classify_send_error(&e)),
        };
        let status = resp.status().as_u16();
        #[derive(serde::Deserialize, Default)]
        struct A {
            code: Option<i64>,
            text: Option<String>,
        }
        // Only the status matters here; a body that cannot be read just says less.
        let a: A = match resp.body().limit(MAX_ANSWER_BYTES).await {
            Ok(body) => serde_json::from_slice(&body).unwrap_or_default(),
            Err(_) => A::default(),
        };
        Health::Answered {
            status,
            code: a.code,
            text: a.text.unwrap_or_else(|| format!("HTTP {status}")),
        }
    }
}

/// What the client read of an answer.
struct Answered {
    status: u16,
    retry_after: Option<String>,
    body: Bytes,
}

fn gzip(body: &[u8]) -> std::io::Result<Bytes> {
    use flate2::write::GzEncoder;
    use std::io::Write;
    let mut enc = GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(body)?;
    Ok(enc.finish()?.into())
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
