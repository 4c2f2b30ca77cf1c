//! Accounts, integrations and checkpoints.

use super::{decode, encode, keys, Store, StoreError};
use crate::model::{AccountId, Integration};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError as Abort;
use uuid::Uuid;

/// An account as far as siemsync knows it: whether the feature is turned on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub siem_enabled: bool,
    pub updated_at: DateTime<Utc>,
}

/// How far one integration has delivered, per source; moves only after HEC accepted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Last audit sequence delivered.
    pub audit_seq: u64,
    /// Last job change sequence delivered.
    pub job_seq: u64,
    pub delivered_audit: u64,
    pub delivered_jobs: u64,
    pub last_success: Option<DateTime<Utc>>,
}

impl Store {
    pub fn put_account(&self, id: &AccountId, account: &Account) -> Result<(), StoreError> {
        self.inner
            .registry
            .insert(keys::account(id), encode(account))?;
        Ok(())
    }

    pub fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        let key = keys::account(id);
        match self.inner.registry.get(&key)? {
            Some(v) => Ok(Some(decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    pub fn put_integration(&self, it: &Integration) -> Result<(), StoreError> {
        self.inner
            .registry
            .insert(keys::integration(&it.account, &it.id), encode(it))?;
        Ok(())
    }

    pub fn integration(
        &self,
        account: &AccountId,
        id: &Uuid,
    ) -> Result<Option<Integration>, StoreError> {
        let key = keys::integration(account, id);
        match self.inner.registry.get(&key)? {
            Some(v) => Ok(Some(decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    pub fn integrations_of(&self, account: &AccountId) -> Result<Vec<Integration>, StoreError> {
        self.scan_integrations(&keys::account_integrations(account))
    }

    pub fn all_integrations(&self) -> Result<Vec<Integration>, StoreError> {
        self.scan_integrations(keys::INTEGRATIONS)
    }

    fn scan_integrations(&self, prefix: &[u8]) -> Result<Vec<Integration>, StoreError> {
        let mut out: Vec<Integration> = Vec::new();
        for kv in self.inner.registry.scan_prefix(prefix) {
            let (k, v) = kv?;
            out.push(decode(&k, &v)?);
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Removes an integration and its checkpoint together.
    pub fn delete_integration(&self, account: &AccountId, id: &Uuid) -> Result<bool, StoreError> {
        let ikey = keys::integration(account, id);
        let ckey = keys::checkpoint(id);
        let existed = self.inner.registry.transaction(|tx| {
            let existed = tx.remove(ikey.as_slice())?.is_some();
            tx.remove(ckey.as_slice())?;
            Ok::<_, Abort<StoreError>>(existed)
        })?;
        Ok(existed)
    }

    pub fn checkpoint(&self, id: &Uuid) -> Result<Checkpoint, StoreError> {
        let key = keys::checkpoint(id);
        match self.inner.registry.get(&key)? {
            Some(v) => decode(&key, &v),
            None => Ok(Checkpoint::default()),
        }
    }

    /// Stores a checkpoint only while its integration still exists, so an actor
    /// finishing a post after a delete cannot leave an orphan behind.
    pub fn put_checkpoint(
        &self,
        account: &AccountId,
        id: &Uuid,
        cp: &Checkpoint,
    ) -> Result<(), StoreError> {
        let ikey = keys::integration(account, id);
        let ckey = keys::checkpoint(id);
        let bytes = encode(cp);
        self.inner.registry.transaction(|tx| {
            if tx.get(ikey.as_slice())?.is_none() {
                return Err(Abort::Abort(StoreError::Gone));
            }
            tx.insert(ckey.as_slice(), bytes.as_slice())?;
            Ok(())
        })?;
        Ok(())
    }
}
