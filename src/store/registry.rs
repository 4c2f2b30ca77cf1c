//! The registry: accounts, integrations and their checkpoints, and what hangs off an
//! integration (dead letters, its last connection report, its replay), removed with it.

use super::{decode, encode, keys, secrets, SledStore as Store, StoreError};
use crate::model::{AccountId, Failure, Integration, Source};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError as Abort;
use uuid::Uuid;

/// The version of a stored integration, read without the rest.
#[derive(Deserialize)]
struct Versioned {
    #[serde(default)]
    version: u64,
}

/// An account as far as siemsync knows it: whether the feature is turned on, and
/// its own ingest allowance where the operator set one (`None`: the config's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// The platform's switch: off, no integration of the account sends anything.
    pub siem_enabled: bool,
    /// When the switch was last set.
    pub updated_at: DateTime<Utc>,
    /// The account's own sustained ingest rate; `None`: the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_events_per_sec: Option<u64>,
    /// The account's own ingest burst; `None`: the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_burst: Option<u64>,
    /// Its own backlog quota in bytes (`None`: `account_max_backlog_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backlog_bytes: Option<u64>,
}

impl Account {
    /// An account with the feature on and the operator's ingest defaults.
    pub fn enabled(updated_at: DateTime<Utc>) -> Account {
        Account {
            siem_enabled: true,
            updated_at,
            ingest_events_per_sec: None,
            ingest_burst: None,
            max_backlog_bytes: None,
        }
    }
}

/// How far one integration has delivered, per source; moves only after HEC accepted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Last audit sequence delivered.
    pub audit_seq: u64,
    /// Last job change sequence delivered.
    pub job_seq: u64,
    /// Audit events delivered in all (the status's count).
    pub delivered_audit: u64,
    /// Job snapshots delivered in all.
    pub delivered_jobs: u64,
    /// When Splunk last accepted a post.
    pub last_success: Option<DateTime<Utc>>,
}

/// An event Splunk refused as bad data: kept, with the reason, instead of blocking
/// the events behind it or being dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// Its number among the integration's dead letters (newest highest).
    pub id: u64,
    /// When Splunk refused it.
    pub at: DateTime<Utc>,
    /// Where the event came from.
    pub source: Source,
    /// The event's audit sequence or job change sequence.
    pub seq: u64,
    /// Splunk's answer and the advice.
    pub reason: Failure,
    /// The event exactly as it was posted to HEC.
    pub event: serde_json::Value,
}

impl Store {
    /// Sets an account's feature switch (the platform's call).
    pub fn put_account(&self, id: &AccountId, account: &Account) -> Result<(), StoreError> {
        self.registry()?
            .insert(keys::account(id), encode(account))?;
        Ok(())
    }

    /// An account's feature switch, if it was ever set.
    pub fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        let key = keys::account(id);
        match self.registry()?.get(&key)? {
            Some(v) => Ok(Some(decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// Stores `it` as the integration's next version, only if the stored one is still
    /// version `expected` (`None`: there is none yet) — a compare-and-set, so that two
    /// changes made at once cannot both be based on the same version, and a change
    /// cannot bring back an integration deleted since it was read. Answers what was
    /// stored, with its new version; `Changed` when another write came first, `Gone`
    /// when the integration was deleted meanwhile.
    pub fn put_integration(
        &self,
        it: &Integration,
        expected: Option<u64>,
    ) -> Result<Integration, StoreError> {
        let next = Integration {
            version: expected.map_or(1, |v| v + 1),
            ..it.clone()
        };
        let sealed = match &self.inner.cipher {
            Some(c) => Integration {
                hec_token: c.seal(&it.hec_token, it.id.as_bytes())?,
                ..next.clone()
            },
            None => next.clone(),
        };
        let key = keys::integration(&it.account, &it.id);
        let bytes = encode(&sealed);
        self.registry()?.transaction(|tx| {
            let current = match tx.get(key.as_slice())? {
                Some(v) => Some(decode::<Versioned>(&key, &v).map_err(Abort::Abort)?.version),
                None => None,
            };
            match (current, expected) {
                (None, Some(_)) => return Err(Abort::Abort(StoreError::Gone)),
                (current, expected) if current != expected => {
                    return Err(Abort::Abort(StoreError::Changed))
                }
                _ => {}
            }
            tx.insert(key.as_slice(), bytes.as_slice())?;
            Ok(())
        })?;
        Ok(next)
    }

    /// Whether an integration should be delivering: enabled, and either declared by
    /// the operator in the config file or on an account with the feature turned on.
    pub fn is_active(&self, it: &Integration) -> Result<bool, StoreError> {
        Ok(it.enabled
            && (it.file_managed || self.account(&it.account)?.is_some_and(|a| a.siem_enabled)))
    }

    /// Decodes a stored integration, opening its sealed token.
    fn read_integration(&self, key: &[u8], bytes: &[u8]) -> Result<Integration, StoreError> {
        let mut it: Integration = decode(key, bytes)?;
        if secrets::is_sealed(&it.hec_token) {
            let c = self.inner.cipher.as_ref().ok_or_else(|| {
                StoreError::Secret(secrets::SecretError::NoKey("the data directory"))
            })?;
            it.hec_token = c.open(&it.hec_token, it.id.as_bytes())?;
        }
        Ok(it)
    }

    /// Integration `id` of `account`, with its token opened.
    pub fn integration(
        &self,
        account: &AccountId,
        id: &Uuid,
    ) -> Result<Option<Integration>, StoreError> {
        let key = keys::integration(account, id);
        match self.registry()?.get(&key)? {
            Some(v) => Ok(Some(self.read_integration(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// Every integration of `account`.
    pub fn integrations_of(&self, account: &AccountId) -> Result<Vec<Integration>, StoreError> {
        self.scan_integrations(&keys::account_integrations(account))
    }

    /// Every stored integration of every account (start-up, reload, the admin list).
    pub fn all_integrations(&self) -> Result<Vec<Integration>, StoreError> {
        self.scan_integrations(keys::INTEGRATIONS)
    }

    /// How many integrations are stored, counted by key: no record is decoded and
    /// no token opened.
    pub fn integration_count(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for k in self.registry()?.scan_prefix(keys::INTEGRATIONS).keys() {
            k?;
            n += 1;
        }
        Ok(n)
    }

    fn scan_integrations(&self, prefix: &[u8]) -> Result<Vec<Integration>, StoreError> {
        let mut out: Vec<Integration> = Vec::new();
        for kv in self.registry()?.scan_prefix(prefix) {
            let (k, v) = kv?;
            out.push(self.read_integration(&k, &v)?);
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Removes an integration with its checkpoint, then its dead letters and sync history;
    /// answers what was removed (`None`: there was nothing to remove).
    pub fn delete_integration(
        &self,
        account: &AccountId,
        id: &Uuid,
    ) -> Result<Option<Integration>, StoreError> {
        let ikey = keys::integration(account, id);
        let ckey = keys::checkpoint(id);
        let registry = self.registry()?;
        let removed = registry.transaction(|tx| {
            let removed = tx.remove(ikey.as_slice())?;
            tx.remove(ckey.as_slice())?;
            Ok::<_, Abort<StoreError>>(removed)
        })?;
        let mut batch = sled::Batch::default();
        batch.remove(keys::connection_report(id));
        batch.remove(keys::replay(id));
        for k in registry
            .scan_prefix(super::retention::gaps_prefix(id))
            .keys()
        {
            batch.remove(k?);
        }
        for k in registry.scan_prefix(keys::dead_letters(id)).keys() {
            batch.remove(k?);
        }
        registry.apply_batch(batch)?;
        self.delete_history(id)?;
        removed
            .map(|v| self.read_integration(&ikey, &v))
            .transpose()
    }

    /// Records an integration's replay (what the replay actor makes of it is its own),
    /// only while the integration exists: a replay stopping just after its integration
    /// was deleted must not leave a record behind.
    pub fn put_replay(
        &self,
        account: &AccountId,
        id: &Uuid,
        replay: &impl Serialize,
    ) -> Result<(), StoreError> {
        self.put_while_exists(account, id, keys::replay(id), encode(replay))
    }

    /// Writes a record that belongs to an integration, only while the integration
    /// exists (`Gone` otherwise), so that nothing outlives its deletion.
    fn put_while_exists(
        &self,
        account: &AccountId,
        id: &Uuid,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), StoreError> {
        let ikey = keys::integration(account, id);
        self.registry()?.transaction(|tx| {
            if tx.get(ikey.as_slice())?.is_none() {
                return Err(Abort::Abort(StoreError::Gone));
            }
            tx.insert(key.as_slice(), value.as_slice())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Forgets integration `id`'s replay record.
    pub fn delete_replay(&self, id: &Uuid) -> Result<(), StoreError> {
        self.registry()?.remove(keys::replay(id))?;
        Ok(())
    }

    /// The integration's last recorded replay, if any.
    pub fn replay<T: serde::de::DeserializeOwned>(
        &self,
        id: &Uuid,
    ) -> Result<Option<T>, StoreError> {
        let key = keys::replay(id);
        self.registry()?
            .get(&key)?
            .map(|v| decode(&key, &v))
            .transpose()
    }

    /// How far integration `id` has delivered (nothing yet: the default).
    pub fn checkpoint(&self, id: &Uuid) -> Result<Checkpoint, StoreError> {
        let key = keys::checkpoint(id);
        match self.registry()?.get(&key)? {
            Some(v) => decode(&key, &v),
            None => Ok(Checkpoint::default()),
        }
    }

    /// A fresh id for a dead letter, increasing over time.
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self
            .inner
            .id_floor
            .saturating_add(self.engine()?.db.generate_id()?))
    }

    /// Moves a checkpoint and stores the dead letters it skips, together, and only
    /// while the integration still exists: an actor finishing a post after a delete
    /// cannot leave an orphan behind, and an event is never skipped without being kept.
    pub fn commit(
        &self,
        account: &AccountId,
        id: &Uuid,
        cp: &Checkpoint,
        dead: &[DeadLetter],
    ) -> Result<Checkpoint, StoreError> {
        let ikey = keys::integration(account, id);
        let ckey = keys::checkpoint(id);
        let dead: Vec<(Vec<u8>, Vec<u8>)> = dead
            .iter()
            .map(|d| (keys::dead_letter(id, d.id), encode(d)))
            .collect();
        let merged = self.registry()?.transaction(|tx| {
            if tx.get(ikey.as_slice())?.is_none() {
                return Err(Abort::Abort(StoreError::Gone));
            }
            // While a restarted actor's predecessor finishes its last post, both may
            // commit: neither may move a cursor or a count backwards.
            let stored: Checkpoint = match tx.get(ckey.as_slice())? {
                Some(v) => decode(&ckey, &v).map_err(Abort::Abort)?,
                None => Checkpoint::default(),
            };
            let merged = Checkpoint {
                audit_seq: cp.audit_seq.max(stored.audit_seq),
                job_seq: cp.job_seq.max(stored.job_seq),
                delivered_audit: cp.delivered_audit.max(stored.delivered_audit),
                delivered_jobs: cp.delivered_jobs.max(stored.delivered_jobs),
                last_success: cp.last_success.max(stored.last_success),
            };
            tx.insert(ckey.as_slice(), encode(&merged))?;
            for (k, v) in &dead {
                tx.insert(k.as_slice(), v.as_slice())?;
            }
            Ok(merged)
        })?;
        Ok(merged)
    }

    /// Keeps the outcome of the latest connection test, for the status. The report is
    /// the connection check's own record (the store keeps it as it is given, like a
    /// replay's), only while the integration exists.
    pub fn put_connection_report(
        &self,
        account: &AccountId,
        id: &Uuid,
        report: &impl Serialize,
    ) -> Result<(), StoreError> {
        self.put_while_exists(account, id, keys::connection_report(id), encode(report))
    }

    /// The latest connection test's report, as `put_connection_report` kept it.
    pub fn connection_report<T: serde::de::DeserializeOwned>(
        &self,
        id: &Uuid,
    ) -> Result<Option<T>, StoreError> {
        let key = keys::connection_report(id);
        match self.registry()?.get(&key)? {
            Some(v) => Ok(Some(decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// How many dead letters an integration has, and the newest `limit` of them, newest first.
    pub fn dead_letters(
        &self,
        id: &Uuid,
        limit: usize,
    ) -> Result<(usize, Vec<DeadLetter>), StoreError> {
        let mut total = 0;
        let mut newest = Vec::new();
        for kv in self.registry()?.scan_prefix(keys::dead_letters(id)).rev() {
            let (k, v) = kv?;
            total += 1;
            if newest.len() < limit {
                newest.push(decode(&k, &v)?);
            }
        }
        Ok((total, newest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IntegrationChange, IntegrationPolicy};
    use serde_json::json;

    fn integration() -> Integration {
        IntegrationChange::from_json(&json!({"name": "n", "hec_token": "t-0123456789abcdef",
            "hec_uri": "https://splunk.example.com", "sources": ["audit"], "enabled": true}))
        .and_then(|c| {
            c.create(
                AccountId::parse("acme").unwrap(),
                Utc::now(),
                IntegrationPolicy::default(),
            )
        })
        .unwrap()
    }

    #[test]
    fn a_change_is_stored_only_over_the_version_it_was_made_from() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let it = integration();
        let v1 = s.put_integration(&it, None).unwrap();
        assert_eq!(v1.version, 1);
        assert!(matches!(
            s.put_integration(&it, None),
            Err(StoreError::Changed)
        ));
        let renamed = Integration {
            name: "m".into(),
            ..v1.clone()
        };
        assert_eq!(s.put_integration(&renamed, Some(1)).unwrap().version, 2);
        // A second change made from version 1 came too late.
        assert!(matches!(
            s.put_integration(&v1, Some(1)),
            Err(StoreError::Changed)
        ));
        let stored = s.integration(&it.account, &it.id).unwrap().unwrap();
        assert_eq!((stored.name.as_str(), stored.version), ("m", 2));
        // Deleted: a change made before cannot bring it back.
        assert_eq!(
            s.delete_integration(&it.account, &it.id)
                .unwrap()
                .map(|i| i.version),
            Some(2)
        );
        assert!(matches!(
            s.put_integration(&stored, Some(2)),
            Err(StoreError::Gone)
        ));
        assert_eq!(s.integration(&it.account, &it.id).unwrap(), None);
        assert_eq!(s.delete_integration(&it.account, &it.id).unwrap(), None);
    }

    #[test]
    fn an_integration_stored_before_versions_reads_as_version_0() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let it = integration();
        let mut old = serde_json::to_value(&it).unwrap();
        old.as_object_mut().unwrap().remove("version");
        let key = keys::integration(&it.account, &it.id);
        s.registry()
            .unwrap()
            .insert(&key, serde_json::to_vec(&old).unwrap())
            .unwrap();
        let read = s.integration(&it.account, &it.id).unwrap().unwrap();
        assert_eq!(read, it);
        assert_eq!(read.version, 0);
        assert_eq!(s.put_integration(&read, Some(0)).unwrap().version, 1);
    }
}
