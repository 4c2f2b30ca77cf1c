//! Reading the embedded store record by record, exactly as stored, for
//! `siemsync migrate --from-sled` (see `to_postgres`): HEC tokens stay sealed,
//! audit chunks stay the bytes they are, sequences stay the sequences they are.
//! Nothing here writes.

use super::chunk::Chunk;
use super::{decode, keys, Account, AccountToken, Checkpoint, SledStore, StoreError};
use crate::model::{AccountId, Integration};
use chrono::{DateTime, Utc};
use std::ops::ControlFlow;
use uuid::Uuid;

/// One audit chunk as stored: its sequence range, storage time and record bytes.
#[derive(Debug, Clone)]
pub struct RawChunk {
    /// The sequence of its first event.
    pub first: u64,
    /// The sequence of its last event.
    pub last: u64,
    /// When it was stored (what audit partitions and retention go by).
    pub stored_at: DateTime<Utc>,
    /// The record, byte for byte (the PostgreSQL store keeps the same format).
    pub record: Vec<u8>,
}

/// The id hashes of one chunk's events (the dedup window), by the chunk's first sequence.
#[derive(Debug, Clone)]
pub struct RawIds {
    /// The first sequence of the chunk they belong to.
    pub first: u64,
    /// 16 bytes per event, in sequence order.
    pub hashes: Vec<u8>,
}

/// A finished job whose record retention removed: when, so that a late retry does
/// not bring it back.
#[derive(Debug, Clone)]
pub struct RawTombstone {
    /// The job.
    pub job: String,
    /// When its record was removed.
    pub swept_at: DateTime<Utc>,
}

fn account_of_key(key: &[u8], prefix: &[u8]) -> Result<AccountId, StoreError> {
    let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
    AccountId::parse(&name).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: format!("not an account id: {e}"),
    })
}

impl SledStore {
    /// Every account's feature switch and limits.
    pub fn export_accounts(&self) -> Result<Vec<(AccountId, Account)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.registry()?.scan_prefix(keys::ACCOUNTS) {
            let (k, v) = kv?;
            out.push((account_of_key(&k, keys::ACCOUNTS)?, decode(&k, &v)?));
        }
        Ok(out)
    }

    /// Every account token with the hash of its secret (the secret itself is not kept).
    pub fn export_tokens(&self) -> Result<Vec<(String, AccountToken)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.registry()?.scan_prefix(keys::TOKENS) {
            let (k, v) = kv?;
            let hash = String::from_utf8_lossy(&k[keys::TOKENS.len()..]).into_owned();
            out.push((hash, decode(&k, &v)?));
        }
        Ok(out)
    }

    /// Every integration as stored: its HEC token sealed when it was stored sealed.
    pub fn export_integrations(&self) -> Result<Vec<Integration>, StoreError> {
        let mut out: Vec<Integration> = Vec::new();
        for kv in self.registry()?.scan_prefix(keys::INTEGRATIONS) {
            let (k, v) = kv?;
            out.push(decode(&k, &v)?);
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Integration `id`'s checkpoint, if it ever moved.
    pub fn export_checkpoint(&self, id: &Uuid) -> Result<Option<Checkpoint>, StoreError> {
        let key = keys::checkpoint(id);
        self.registry()?
            .get(&key)?
            .map(|v| decode(&key, &v))
            .transpose()
    }

    /// Integration `id`'s replay and connection report, as stored (their shape is the
    /// actors' own; the store copies them as they are).
    pub fn export_docs(
        &self,
        id: &Uuid,
    ) -> Result<(Option<serde_json::Value>, Option<serde_json::Value>), StoreError> {
        Ok((self.replay(id)?, self.connection_report(id)?))
    }

    /// Visits the account's audit chunks in sequence order.
    pub fn export_audit(
        &self,
        account: &AccountId,
        mut visit: impl FnMut(RawChunk) -> Result<ControlFlow<()>, StoreError>,
    ) -> Result<(), StoreError> {
        for kv in self
            .events()?
            .scan_prefix(keys::account_prefix(keys::AUDIT, account))
        {
            let (k, v) = kv?;
            let chunk = Chunk::parse(&k, &v)?;
            let raw = RawChunk {
                first: chunk.first,
                last: chunk.last(),
                stored_at: chunk.ingested_at,
                record: v.to_vec(),
            };
            if visit(raw)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    /// The storage time of the account's newest audit chunk (the last in sequence
    /// order), read without visiting the others.
    pub fn export_newest_audit_time(
        &self,
        account: &AccountId,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let last = self
            .events()?
            .scan_prefix(keys::account_prefix(keys::AUDIT, account))
            .next_back();
        match last {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv?;
                Ok(Some(Chunk::parse(&k, &v)?.ingested_at))
            }
        }
    }

    /// The id hashes of the account's recent events (the dedup window), by chunk.
    pub fn export_audit_ids(&self, account: &AccountId) -> Result<Vec<RawIds>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .events()?
            .scan_prefix(keys::account_prefix(keys::AUDIT_ID, account))
        {
            let (k, v) = kv?;
            if !v.len().is_multiple_of(16) {
                return Err(StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).replace('\0', "/"),
                    reason: format!("{} bytes of id hashes, not a multiple of 16", v.len()),
                });
            }
            out.push(RawIds {
                first: keys::seq_of(&k),
                hashes: v.to_vec(),
            });
        }
        Ok(out)
    }

    /// Every job snapshot the account still has, with its change sequence.
    pub fn export_jobs(&self, account: &AccountId) -> Result<Vec<super::StoredJob>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .events()?
            .scan_prefix(keys::account_prefix(keys::JOB, account))
        {
            let (k, v) = kv?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// The account's finished jobs whose records retention removed.
    pub fn export_tombstones(&self, account: &AccountId) -> Result<Vec<RawTombstone>, StoreError> {
        let prefix = keys::account_prefix(keys::JOB_DONE, account);
        let mut out = Vec::new();
        for kv in self.events()?.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let (at, _) = super::retention::read_job_done_marker(&k, &v)?;
            out.push(RawTombstone {
                job: String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                swept_at: DateTime::from_timestamp_millis(at).ok_or_else(|| {
                    StoreError::Corrupt {
                        key: String::from_utf8_lossy(&k).replace('\0', "/"),
                        reason: "removal time out of range".into(),
                    }
                })?,
            });
        }
        Ok(out)
    }
}
