//! HEC tokens at rest: with a secret key configured they are sealed with
//! AES-256-GCM (ring) before they reach sled, bound to their integration's id,
//! so the data directory alone does not give anyone a customer's Splunk token.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const PREFIX: &str = "enc:v1:";

/// Why a token could not be sealed or opened (or a secret made); each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The operating system gave no random bytes for a nonce or a secret.
    #[error("the system's random source failed")]
    Random,
    /// ring refused to seal (it does only for inputs far larger than a token).
    #[error("sealing the token failed")]
    Seal,
    /// The stored token is not one this key sealed for this integration.
    #[error("the HEC token cannot be decrypted: SIEMSYNC_SECRET_KEY differs from the key it was stored with")]
    WrongKey,
    /// Sealed tokens are stored (in the place named), and no key is configured.
    #[error("the HEC tokens in {0} are encrypted: set SIEMSYNC_SECRET_KEY (or secret_key) to the key they were stored with")]
    NoKey(&'static str),
}

/// The key that seals HEC tokens; made from the operator's secret.
pub struct TokenCipher {
    key: LessSafeKey,
    rng: SystemRandom,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether a stored token is sealed.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

impl TokenCipher {
    /// The secret is hashed to the 256-bit key, so any long random string will do.
    pub fn new(secret: &str) -> TokenCipher {
        let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
        let key = UnboundKey::new(&AES_256_GCM, digest.as_ref())
            .expect("a SHA-256 digest is a valid AES-256 key");
        TokenCipher {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        }
    }

    /// Seals `token` under a fresh nonce, bound to `bound_to` (the integration's id),
    /// so a sealed token copied onto another integration does not open.
    pub fn seal(&self, token: &str, bound_to: &[u8]) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SecretError::Random)?;
        let mut data = token.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(bound_to),
                &mut data,
            )
            .map_err(|_| SecretError::Seal)?;
        Ok(format!("{PREFIX}{}{}", hex(&nonce), hex(&data)))
    }

    /// Opens a token `seal` made for `bound_to`. Any damage, another key or another
    /// integration reads as the wrong key: that is what the operator can act on.
    pub fn open(&self, stored: &str, bound_to: &[u8]) -> Result<String, SecretError> {
        let wrong = SecretError::WrongKey;
        let raw = stored
            .strip_prefix(PREFIX)
            .and_then(unhex)
            .ok_or(wrong.clone())?;
        if raw.len() < NONCE_LEN {
            return Err(wrong);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong.clone())?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(bound_to), &mut sealed)
            .map_err(|_| wrong.clone())?;
        String::from_utf8(plain.to_vec()).map_err(|_| wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_token_opens_only_with_its_key_and_its_integration() {
        let c = TokenCipher::new("correct horse battery staple, long enough");
        let sealed = c
            .seal("11111111-2222-3333-4444-555555555555", b"id-1")
            .unwrap();
        assert!(is_sealed(&sealed) && !sealed.contains("11111111"));
        assert_ne!(
            sealed,
            c.seal("11111111-2222-3333-4444-555555555555", b"id-1")
                .unwrap(),
            "fresh nonce each time"
        );
        assert_eq!(
            c.open(&sealed, b"id-1").unwrap(),
            "11111111-2222-3333-4444-555555555555"
        );
        assert!(c.open(&sealed, b"id-2").is_err());
        assert!(TokenCipher::new("another key entirely, also long")
            .open(&sealed, b"id-1")
            .unwrap_err()
            .to_string()
            .contains("SIEMSYNC_SECRET_KEY"));
    }
}
