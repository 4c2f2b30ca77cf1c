//! TLS to PostgreSQL, with libpq's meaning of `sslmode` and `sslrootcert`:
//!
//! | sslmode       | TLS                         | certificate checked                                   |
//! |---------------|-----------------------------|-------------------------------------------------------|
//! | `disable`     | never                       | —                                                     |
//! | `prefer`      | if the server offers it     | only with `sslrootcert`: the chain (as libpq)         |
//! | `require`     | always                      | only with `sslrootcert`: the chain (as libpq)         |
//! | `verify-ca`   | always                      | the chain, against `sslrootcert` or the public roots  |
//! | `verify-full` | always                      | the chain and the host name, likewise                 |
//!
//! Without `sslrootcert`, `verify-*` trust the public web roots (webpki-roots,
//! Mozilla's list, built in, as for the HEC clients): libpq would read
//! `~/.postgresql/root.crt`, which a container seldom has, and a managed service
//! whose certificate a public CA signed then needs no file at all. A service with
//! a private CA (most of them) gives its bundle as `sslrootcert`.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require` and no
//! `sslrootcert`: [`PgUrl::parse`] takes both out of the URL (or key=value
//! string) and hands it the rest, multi-host lists and `target_session_attrs`
//! untouched. A server whose certificate fails the check ends the connection
//! attempt with the reason; nothing ever falls back to plaintext.
//!
//! One rustls config per store ([`Tls`]), shared by its pools and its control
//! listener. No channel binding (`SCRAM-SHA-256-PLUS`): SCRAM works without it,
//! and `channel_binding=require` is refused by tokio-postgres with that reason.

use super::error::PgError;
use crate::hec::tls::NoVerification;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// libpq's `sslmode` (`allow` aside, which tokio-postgres cannot do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext.
    Disable,
    /// TLS if the server offers it (libpq's default, and ours).
    Prefer,
    /// TLS; the certificate is checked only against `sslrootcert`, if given.
    Require,
    /// TLS; the chain is checked, not the host name.
    VerifyCa,
    /// TLS; the chain and the host name are checked.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, PgError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => return Err(PgError::Config(
                "sslmode=allow is not supported (plaintext first, TLS only if the server insists): use prefer, or require".into(),
            )),
            other => return Err(PgError::Config(format!(
                "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            ))),
        })
    }

    /// What tokio-postgres is told: whether TLS is tried, or required.
    fn wire(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Wire;
        match self {
            SslMode::Disable => Wire::Disable,
            SslMode::Prefer => Wire::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Wire::Require,
        }
    }
}

/// A `postgres_url` taken apart: tokio-postgres's config (with its `sslmode`
/// set), and the TLS settings it does not know.
#[derive(Debug, Clone)]
pub struct PgUrl {
    /// Everything but the TLS settings, as tokio-postgres parsed it.
    pub config: tokio_postgres::Config,
    /// The URL's `sslmode` (`prefer` when it has none, as in libpq).
    pub mode: SslMode,
    /// The URL's `sslrootcert`: a PEM file of the CA certificates to trust.
    pub root_cert: Option<PathBuf>,
}

impl PgUrl {
    /// Parses a libpq URL (`postgresql://…`) or key=value connection string.
    /// Errors never repeat the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<PgUrl, PgError> {
        let (rest, settings) = take_tls_settings(url)?;
        let mut mode = SslMode::Prefer;
        let mut root_cert = None;
        for (key, value) in settings {
            match key {
                TlsKey::Mode => mode = SslMode::parse(&value)?,
                TlsKey::RootCert if value.is_empty() => root_cert = None,
                TlsKey::RootCert => root_cert = Some(PathBuf::from(value)),
            }
        }
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| PgError::Config(format!("not a libpq URL or connection string: {e}")))?;
        config.ssl_mode(mode.wire());
        Ok(PgUrl {
            config,
            mode,
            root_cert,
        })
    }

    /// The TLS connector of these settings: reads `sslrootcert` (a missing,
    /// unreadable or invalid file is refused, naming it).
    pub fn tls(&self) -> Result<Tls, PgError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match &self.root_cert {
            Some(path) => Some(read_roots(path)?),
            None if matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
                Some(RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                })
            }
            None => None,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match roots {
            // libpq's `require`/`prefer` without a root certificate: encrypted,
            // but any server certificate is taken.
            None => Arc::new(NoVerification(provider.clone())),
            Some(roots) => {
                let full =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| PgError::Config(format!("sslrootcert: {e}")))?;
                if self.mode == SslMode::VerifyFull {
                    full
                } else {
                    Arc::new(ChainOnly(full))
                }
            }
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::Config(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // PostgreSQL 17's direct TLS (`sslnegotiation=direct`) requires it; the
        // usual negotiation ignores it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Tls(Arc::new(config)))
    }
}

/// The CA certificates of an `sslrootcert` file.
fn read_roots(path: &Path) -> Result<RootCertStore, PgError> {
    let named = |what: String| PgError::Config(format!("sslrootcert {}: {what}", path.display()));
    let pem = std::fs::read_to_string(path).map_err(|e| named(format!("cannot be read: {e}")))?;
    let certs = crate::model::ca::parse_ca_pem(&pem).map_err(|e| named(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| named(format!("holds a certificate rustls refuses: {e}")))?;
    }
    Ok(roots)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsKey {
    Mode,
    RootCert,
}

impl TlsKey {
    fn of(key: &str) -> Option<TlsKey> {
        match key {
            "sslmode" => Some(TlsKey::Mode),
            "sslrootcert" => Some(TlsKey::RootCert),
            _ => None,
        }
    }
}

/// `url` without its `sslmode` and `sslrootcert`, and those settings in order.
fn take_tls_settings(url: &str) -> Result<(String, Vec<(TlsKey, String)>), PgError> {
    let after_scheme = ["postgresql://", "postgres://"]
        .iter()
        .find_map(|s| url.strip_prefix(s));
    match after_scheme {
        Some(rest) => take_from_query(url, url.len() - rest.len()),
        None => Ok(take_from_key_values(url)),
    }
}

/// A URL: its query's `sslmode` and `sslrootcert` pairs (percent-decoded).
fn take_from_query(
    url: &str,
    authority: usize,
) -> Result<(String, Vec<(TlsKey, String)>), PgError> {
    // The query starts at the first `?` after the user info (as tokio-postgres
    // reads it: the user info ends at the first `@`).
    let from = url[authority..]
        .find('@')
        .map_or(authority, |at| authority + at + 1);
    let Some(q) = url[from..].find('?').map(|q| from + q) else {
        return Ok((url.to_owned(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in url[q + 1..].split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match TlsKey::of(&percent_decode(key)?) {
            Some(k) => taken.push((k, percent_decode(value)?)),
            None => kept.push(pair),
        }
    }
    let mut rest = url[..q].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, taken))
}

fn percent_decode(s: &str) -> Result<String, PgError> {
    let bad = || PgError::Config("a query parameter has an invalid %-escape".into());
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// A key=value connection string (`host=db1 sslmode=verify-full …`): its
/// `sslmode` and `sslrootcert` entries. A string this does not read is handed on
/// unchanged, for tokio-postgres to say what is wrong with it.
fn take_from_key_values(s: &str) -> (String, Vec<(TlsKey, String)>) {
    let Some(entries) = key_values(s) else {
        return (s.to_owned(), Vec::new());
    };
    let mut rest = String::new();
    let mut taken = Vec::new();
    let mut copied = 0;
    for (range, key, value) in entries {
        if let Some(k) = TlsKey::of(&key) {
            rest.push_str(&s[copied..range.start]);
            copied = range.end;
            taken.push((k, value));
        }
    }
    rest.push_str(&s[copied..]);
    (rest, taken)
}

/// The entries of a key=value string as libpq reads it (a value in single
/// quotes, or up to the next space; a backslash escapes the next character):
/// each one's byte range, key and value. `None` if it is not one.
fn key_values(s: &str) -> Option<Vec<(std::ops::Range<usize>, String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            return Some(out);
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        chars.next_if(|(_, c)| *c == '=')?;
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let end = loop {
            match chars.next() {
                None if quoted => return None,
                None => break s.len(),
                Some((i, '\'')) if quoted => break i + 1,
                Some((i, c)) if !quoted && c.is_whitespace() => break i,
                Some((_, '\\')) => value.push(chars.next()?.1),
                Some((_, c)) => value.push(c),
            }
        };
        out.push((start..end, key, value));
    }
}

/// `verify-ca`, and `require`/`prefer` with `sslrootcert`: the chain must lead
/// to a trusted root, the name is not checked. webpki checks the chain before
/// the name, so "not valid for this name" means the chain passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The store's TLS connector for tokio-postgres (one rustls config, shared).
#[derive(Clone)]
pub struct Tls(Arc<ClientConfig>);

impl<S> MakeTlsConnect<S> for Tls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = TlsConnector;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<TlsConnector, io::Error> {
        // tokio-postgres asks for a connector before it knows whether TLS is
        // used: a Unix socket has no name (and never gets TLS), so a name that
        // does not parse is an error only when a handshake needs it.
        Ok(TlsConnector {
            config: self.0.clone(),
            name: ServerName::try_from(domain.to_owned()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("TLS: the host {domain:?} is not a valid server name: {e}"),
                )
            }),
        })
    }
}

/// Connects one stream to one host.
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    name: Result<ServerName<'static>, io::Error>,
}

impl<S> TlsConnect<S> for TlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = self.name?;
            tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await
                .map(TlsStream)
        })
    }
}

/// A TLS session to PostgreSQL.
pub struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // See the module's note: SCRAM without the TLS binding.
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::{Host, TargetSessionAttrs};

    fn hosts(c: &tokio_postgres::Config) -> Vec<String> {
        c.get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(h) => h.clone(),
                Host::Unix(p) => p.display().to_string(),
            })
            .collect()
    }

    #[test]
    fn every_libpq_sslmode_is_read_and_tokio_postgres_is_told_whether_tls_is_required() {
        use tokio_postgres::config::SslMode as Wire;
        for (value, mode, wire) in [
            ("disable", SslMode::Disable, Wire::Disable),
            ("prefer", SslMode::Prefer, Wire::Prefer),
            ("require", SslMode::Require, Wire::Require),
            ("verify-ca", SslMode::VerifyCa, Wire::Require),
            ("verify-full", SslMode::VerifyFull, Wire::Require),
        ] {
            for url in [
                format!("postgresql://u@db/siemsync?sslmode={value}"),
                format!("host=db user=u sslmode={value} dbname=siemsync"),
                format!("host=db user=u sslmode = '{value}'"),
            ] {
                let p = PgUrl::parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
                assert_eq!(p.mode, mode, "{url}");
                assert_eq!(p.config.get_ssl_mode(), wire, "{url}");
                assert_eq!(hosts(&p.config), ["db"], "{url}");
            }
        }
        let p = PgUrl::parse("postgresql://u@db/siemsync").unwrap();
        assert_eq!(p.mode, SslMode::Prefer, "libpq's default");
        assert_eq!(p.root_cert, None);
    }

    #[test]
    fn an_unknown_sslmode_is_refused_naming_the_values_and_never_the_password() {
        for url in [
            "postgresql://u:hunter2@db/siemsync?sslmode=verify-everything",
            "host=db password=hunter2 sslmode=verify-everything",
        ] {
            let e = PgUrl::parse(url).unwrap_err().to_string();
            assert!(
                e.contains("verify-everything") && e.contains("verify-full"),
                "{e}"
            );
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e = PgUrl::parse("postgresql://db/x?sslmode=allow")
            .unwrap_err()
            .to_string();
        assert!(e.contains("allow") && e.contains("prefer"), "{e}");
    }

    #[test]
    fn sslrootcert_is_taken_out_decoded_and_the_rest_kept_multi_host_and_all() {
        let p = PgUrl::parse(
            "postgresql://siemsync:p%40ss@db1:5433,db2:5434/siemsync?sslrootcert=%2Fetc%2Fpg%20ca.pem&target_session_attrs=read-write&sslmode=verify-full&connect_timeout=7",
        )
        .unwrap();
        assert_eq!(p.mode, SslMode::VerifyFull);
        assert_eq!(p.root_cert.as_deref(), Some(Path::new("/etc/pg ca.pem")));
        assert_eq!(hosts(&p.config), ["db1", "db2"]);
        assert_eq!(p.config.get_ports(), [5433, 5434]);
        assert_eq!(
            p.config.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        assert_eq!(p.config.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(p.config.get_dbname(), Some("siemsync"));
        assert_eq!(
            p.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(7))
        );

        let p = PgUrl::parse(
            r"host=db1,db2 port=5433,5434 sslrootcert='/etc/my pg\'s ca.pem' target_session_attrs=read-write sslmode=verify-ca user=siemsync",
        )
        .unwrap();
        assert_eq!(p.mode, SslMode::VerifyCa);
        assert_eq!(
            p.root_cert.as_deref(),
            Some(Path::new("/etc/my pg's ca.pem"))
        );
        assert_eq!(hosts(&p.config), ["db1", "db2"]);
        assert_eq!(
            p.config.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        assert_eq!(p.config.get_user(), Some("siemsync"));

        // Only a query holding nothing else loses its `?`.
        let (rest, taken) = take_tls_settings("postgres://db/x?sslmode=require").unwrap();
        assert_eq!(rest, "postgres://db/x");
        assert_eq!(taken, [(TlsKey::Mode, "require".to_owned())]);
        // A `?` in the password is not the query.
        let (rest, taken) =
            take_tls_settings("postgresql://u:a?b@db/x?sslmode=disable&application_name=a")
                .unwrap();
        assert_eq!(rest, "postgresql://u:a?b@db/x?application_name=a");
        assert_eq!(taken, [(TlsKey::Mode, "disable".to_owned())]);
    }

    #[test]
    fn a_missing_or_invalid_sslrootcert_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        for (file, why) in [
            (&missing, "cannot be read"),
            (&junk, ""),
            (&empty, ""),
            (&dir.path().to_owned(), "cannot be read"),
        ] {
            let url = format!(
                "postgresql://u:hunter2@db/x?sslmode=verify-full&sslrootcert={}",
                file.display()
            );
            let e = PgUrl::parse(&url).unwrap().tls().err().unwrap().to_string();
            assert!(
                e.contains("sslrootcert") && e.contains(&file.display().to_string()),
                "{e}"
            );
            assert!(e.contains(why), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
