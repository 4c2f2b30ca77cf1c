//! HEC tokens at rest: with a secret key configured they are sealed with
//! AES-256-GCM (ring) before they reach sled, bound to their integration's id,
//! so the data directory alone does not give anyone a customer's Splunk token.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const PREFIX: &str = "enc:v1:";

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

    pub fn seal(&self, token: &str, bound_to: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| "the system's random source failed".to_string())?;
        let mut data = token.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(bound_to),
                &mut data,
            )
            .map_err(|_| "sealing the token failed".to_string())?;
        Ok(format!("{PREFIX}{}{}", hex(&nonce), hex(&data)))
    }

    pub fn open(&self, stored: &str, bound_to: &[u8]) -> Result<String, String> {
        let wrong = || {
            "the HEC token cannot be decrypted: SIEMSYNC_SECRET_KEY differs from the key it was stored with".to_string()
        };
        let raw = stored
            .strip_prefix(PREFIX)
            .and_then(unhex)
            .ok_or_else(wrong)?;
        if raw.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(bound_to), &mut sealed)
            .map_err(|_| wrong())?;
        String::from_utf8(plain.to_vec()).map_err(|_| wrong())
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
            .contains("SIEMSYNC_SECRET_KEY"));
    }
}
