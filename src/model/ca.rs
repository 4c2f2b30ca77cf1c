//! A private CA for an integration (`ca_pem`): read when the integration is saved,
//! so a bundle that cannot be used is refused with the reason, and again by the HEC
//! client's TLS settings.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// Why a `ca_pem` cannot be used; the caller adds the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaPemError {
    /// The text is not PEM at all.
    #[error("is not a PEM certificate bundle: {0}")]
    NotPem(String),
    /// PEM, but no certificate in it.
    #[error(
        "holds no certificate; paste the CA certificate(s) as PEM (-----BEGIN CERTIFICATE-----)"
    )]
    Empty,
    /// A certificate rustls cannot use as a trust anchor.
    #[error("holds a certificate that cannot be used as a CA: {0}")]
    NotACa(String),
}

/// Reads a PEM bundle of CA certificates, refusing one with none in it, or with a
/// certificate that cannot anchor a chain.
pub fn parse_ca_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, CaPemError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaPemError::NotPem(e.to_string()))?;
    if certs.is_empty() {
        return Err(CaPemError::Empty);
    }
    let mut roots = RootCertStore::empty();
    for c in &certs {
        roots
            .add(c.clone())
            .map_err(|e| CaPemError::NotACa(e.to_string()))?;
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_a_usable_certificate_is_refused_with_the_reason() {
        assert_eq!(parse_ca_pem("not a pem"), Err(CaPemError::Empty));
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            parse_ca_pem(broken),
            Err(CaPemError::NotACa(_) | CaPemError::NotPem(_))
        ));
    }
}
