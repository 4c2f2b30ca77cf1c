//! Account-scoped API tokens: shown once when made, stored only as a SHA-256 hash.

use super::secrets::SecretError;
use super::{decode, encode, SledStore as Store, StoreError};
use crate::model::AccountId;
use chrono::{DateTime, Utc};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What siemsync keeps of an account token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccountToken {
    /// Its id, to revoke it by.
    pub id: Uuid,
    /// The one account it may act for.
    pub account: AccountId,
    /// The name it was given, to tell tokens apart.
    pub name: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

pub(super) fn hash_hex(secret: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new bearer secret: `ssa_` and 32 random bytes in hex.
pub(super) fn new_secret() -> Result<String, SecretError> {
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| SecretError::Random)?;
    Ok(format!(
        "ssa_{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

fn by_hash(hash: &str) -> Vec<u8> {
    format!("tok/{hash}").into_bytes()
}

fn by_id(id: &Uuid) -> Vec<u8> {
    format!("tokid/{id}").into_bytes()
}

impl Store {
    /// Makes a token for `account`; returns what is kept and the secret, which is
    /// never stored or shown again.
    pub fn create_token(
        &self,
        account: &AccountId,
        name: Option<String>,
    ) -> Result<(AccountToken, String), StoreError> {
        let secret = new_secret()?;
        let token = AccountToken {
            id: Uuid::new_v4(),
            account: account.clone(),
            name,
            created_at: Utc::now(),
        };
        let hash = hash_hex(&secret);
        let mut batch = sled::Batch::default();
        batch.insert(by_hash(&hash), encode(&token));
        batch.insert(by_id(&token.id), hash.as_bytes());
        self.registry()?.apply_batch(batch)?;
        Ok((token, secret))
    }

    /// The account token a bearer secret stands for, if any.
    pub fn token_for_secret(&self, secret: &str) -> Result<Option<AccountToken>, StoreError> {
        let key = by_hash(&hash_hex(secret));
        match self.registry()?.get(&key)? {
            Some(v) => Ok(Some(decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// The tokens of `account` (never their secrets).
    pub fn tokens_of(&self, account: &AccountId) -> Result<Vec<AccountToken>, StoreError> {
        let mut out: Vec<AccountToken> = Vec::new();
        for kv in self.registry()?.scan_prefix(b"tok/") {
            let (k, v) = kv?;
            let t: AccountToken = decode(&k, &v)?;
            if &t.account == account {
                out.push(t);
            }
        }
        out.sort_by_key(|t| t.created_at);
        Ok(out)
    }

    /// Revokes a token of `account`; false when it has no such token.
    pub fn delete_token(&self, account: &AccountId, id: &Uuid) -> Result<bool, StoreError> {
        let Some(hash) = self.registry()?.get(by_id(id))? else {
            return Ok(false);
        };
        let key = by_hash(&String::from_utf8_lossy(&hash));
        let Some(v) = self.registry()?.get(&key)? else {
            return Ok(false);
        };
        let t: AccountToken = decode(&key, &v)?;
        if &t.account != account {
            return Ok(false);
        }
        let mut batch = sled::Batch::default();
        batch.remove(key);
        batch.remove(by_id(id));
        self.registry()?.apply_batch(batch)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_found_by_its_secret_and_revoked_by_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = AccountId::parse("acme").unwrap();
        let (t, secret) = s.create_token(&a, Some("ci".into())).unwrap();
        assert!(secret.starts_with("ssa_") && secret.len() == 68);
        assert_eq!(s.token_for_secret(&secret).unwrap(), Some(t.clone()));
        assert_eq!(s.token_for_secret("ssa_nope").unwrap(), None);
        assert!(!s
            .delete_token(&AccountId::parse("other").unwrap(), &t.id)
            .unwrap());
        assert!(s.delete_token(&a, &t.id).unwrap());
        assert_eq!(s.token_for_secret(&secret).unwrap(), None);
        // Only the hash is kept.
        drop(s);
        let files = std::fs::read_dir(dir.path()).unwrap();
        for f in files.flatten() {
            if f.path().is_file() {
                let bytes = std::fs::read(f.path()).unwrap();
                assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
            }
        }
    }
}
