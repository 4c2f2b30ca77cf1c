//! The audit log: per account, an append-only sequence of events, each id kept
//! once within the account's dedup window.

use super::chunk::{Chunk, ChunkWriter, StoredAudit};
use super::heads::heads_in;
use super::{keys, SledStore as Store, StoreError};
use crate::model::audit_parts::EncodedAudit;
use crate::model::AccountId;
use std::ops::ControlFlow;

/// What one audit ingest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestOutcome {
    /// Events stored (new ids).
    pub accepted: usize,
    /// Events whose id the account already had (a platform retry): ignored.
    pub duplicates: usize,
}

impl Store {
    /// Appends audit events in order, all or nothing. An id the account already had
    /// among its last `dedup_window` events (or earlier in the same call) is a platform
    /// retry and is skipped. Events are stored already encoded the way HEC receives
    /// them, a chunk of them per record. Not durable until `flush` resolves.
    pub fn append_audit<E: Into<EncodedAudit>>(
        &self,
        account: &AccountId,
        events: Vec<E>,
    ) -> Result<IngestOutcome, StoreError> {
        let events: Vec<EncodedAudit> = events.into_iter().map(Into::into).collect();
        self.append_encoded_audit(account, &events)
    }

    /// [`Store::append_audit`] of events read straight into their stored form; they
    /// stay the caller's, to be freed on the thread that allocated them.
    pub fn append_encoded_audit(
        &self,
        account: &AccountId,
        events: &[EncodedAudit],
    ) -> Result<IngestOutcome, StoreError> {
        let _writer = self.writer();
        self.append_audit_locked(account, events, |_, _| Ok(()))
    }

    /// [`Store::append_audit`] for a caller holding the writer's turn; `also` adds its
    /// own changes to the same write, given the sequence of the last event appended.
    pub(super) fn append_audit_locked(
        &self,
        account: &AccountId,
        events: &[EncodedAudit],
        also: impl FnOnce(&mut sled::Batch, u64) -> Result<(), StoreError>,
    ) -> Result<IngestOutcome, StoreError> {
        // One database for the whole write, even if the store is reopened meanwhile.
        let tree = self.events()?;
        let mut heads = heads_in(&tree, account)?;
        let mut recent = self.recent();
        // The window takes each new id as it goes (one probe an id): written or
        // forgotten below, whatever happens.
        let mut window =
            recent.appending(account, heads.audit, || self.recent_ids(&tree, account))?;
        let mut out = IngestOutcome::default();
        let mut batch = sled::Batch::default();
        let mut chunk = ChunkWriter::new(account);
        for ev in events {
            if !window.admit(ev.id_hash) {
                out.duplicates += 1;
                continue;
            }
            heads.audit += 1;
            chunk.push(&mut batch, heads.audit, ev);
            out.accepted += 1;
        }
        if out.accepted == 0 {
            // Nothing admitted, nothing to write: the window stands as it was (a
            // platform retry, all duplicates, must not make the next request read
            // the window again).
            recent.committed(account, heads.audit);
            return Ok(out);
        }
        chunk.finish_into(&mut batch);
        batch.insert(
            keys::account_prefix(keys::HEADS, account),
            &heads.to_bytes(),
        );
        let written = (|| {
            // Read and written under the ingest lock, which the sweep also holds while
            // it removes chunks: neither change is lost.
            let bytes = stored_bytes_in(&tree, account)? + chunk.bytes;
            batch.insert(
                keys::account_prefix(keys::STORED_BYTES, account),
                &bytes.to_be_bytes(),
            );
            also(&mut batch, heads.audit)?;
            tree.apply_batch(batch)?;
            Ok(())
        })();
        match written {
            Ok(()) => recent.committed(account, heads.audit),
            // The window took ids that were not written.
            Err(e) => {
                recent.forget(account);
                return Err(e);
            }
        }
        Ok(out)
    }

    /// The bytes the account's stored audit events take (their chunk records).
    pub fn stored_bytes(&self, account: &AccountId) -> Result<u64, StoreError> {
        stored_bytes_in(&*self.events()?, account)
    }

    /// The account's last `dedup_window` stored event ids, oldest first.
    fn recent_ids(&self, tree: &sled::Tree, account: &AccountId) -> Result<Vec<u128>, StoreError> {
        let mut records = Vec::new();
        let mut seen = 0;
        let prefix = keys::account_prefix(keys::AUDIT_ID, account);
        for kv in tree.scan_prefix(&prefix).rev() {
            if seen >= self.inner.dedup_window {
                break;
            }
            let (_, v) = kv?;
            seen += v.len() / 16;
            records.push(v);
        }
        let mut ids: Vec<u128> = records
            .iter()
            .rev()
            .flat_map(|v| v.chunks_exact(16))
            .map(|h| u128::from_be_bytes(h.try_into().expect("16 bytes")))
            .collect();
        let extra = ids.len().saturating_sub(self.inner.dedup_window);
        ids.drain(..extra);
        Ok(ids)
    }

    /// Visits the stored audit events after sequence `after`, in order, until `visit` breaks.
    pub fn audit_after(
        &self,
        account: &AccountId,
        after: u64,
        mut visit: impl FnMut(&StoredAudit<'_>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.audit_chunks(account, after.saturating_add(1), |chunk| {
            for ev in chunk.events()? {
                if ev.seq > after && visit(&ev).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        })
    }

    /// Visits the audit chunks from the one holding sequence `from`, in order.
    pub(super) fn audit_chunks(
        &self,
        account: &AccountId,
        from: u64,
        mut visit: impl FnMut(&Chunk<'_>) -> Result<ControlFlow<()>, StoreError>,
    ) -> Result<(), StoreError> {
        let tree = self.events()?;
        let prefix = keys::account_prefix(keys::AUDIT, account);
        let at = keys::with_seq(keys::AUDIT, account, from);
        // The chunk holding `from` starts at or before it.
        let start = match tree.range(prefix.clone()..=at.clone()).next_back() {
            Some(kv) => kv?.0.to_vec(),
            None => at,
        };
        for kv in tree.range(start..) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            if visit(&Chunk::parse(&k, &v)?)?.is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// The account's stored audit bytes as recorded (0 before its first event).
pub(super) fn stored_bytes_in(tree: &sled::Tree, account: &AccountId) -> Result<u64, StoreError> {
    u64_in(
        tree,
        &keys::account_prefix(keys::STORED_BYTES, account),
        "a count",
    )
}

/// A big-endian u64 record (0 when absent); `what` names it in the error.
pub(super) fn u64_in(tree: &sled::Tree, key: &[u8], what: &str) -> Result<u64, StoreError> {
    match tree.get(key)? {
        None => Ok(0),
        Some(v) => Ok(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
            StoreError::Corrupt {
                key: String::from_utf8_lossy(key).replace('\0', "/"),
                reason: format!("{} bytes where {what} of 8 was expected", v.len()),
            }
        })?)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{self, audit, audit_ids, store};
    use super::*;
    use crate::model::AuditEvent;
    use chrono::Utc;
    use serde_json::json;

    #[test]
    fn audit_log_is_sequenced_per_account_and_ignores_repeated_ids() {
        let (_d, s) = store();
        let a = AccountId::parse("a").unwrap();
        let b = AccountId::parse("a-b").unwrap();
        let out = s
            .append_audit(&a, vec![audit("1"), audit("2"), audit("1")])
            .unwrap();
        assert_eq!(
            out,
            IngestOutcome {
                accepted: 2,
                duplicates: 1
            }
        );
        let out = s.append_audit(&a, vec![audit("2"), audit("3")]).unwrap();
        assert_eq!(
            out,
            IngestOutcome {
                accepted: 1,
                duplicates: 1
            }
        );
        s.append_audit(&b, vec![audit("x")]).unwrap();
        assert_eq!(
            audit_ids(&s, &a, 0),
            vec![(1, "1".into()), (2, "2".into()), (3, "3".into())]
        );
        assert_eq!(audit_ids(&s, &a, 2), vec![(3, "3".into())]);
        assert_eq!(audit_ids(&s, &b, 0), vec![(1, "x".into())]);
        assert_eq!(s.audit_backlog(&a, 1).unwrap().0, 2);
    }

    #[test]
    fn a_repeated_id_is_ignored_within_the_window_also_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::store::StoreOptions {
            secret_key: None,
            cache_bytes: 8 << 20,
            dedup_window: 3,
            ..Default::default()
        };
        let a = AccountId::parse("acme").unwrap();
        let outcome = |accepted, duplicates| IngestOutcome {
            accepted,
            duplicates,
        };
        {
            let s = Store::open_with_options(dir.path(), &options).unwrap();
            s.append_audit(&a, vec![audit("1"), audit("2")]).unwrap();
            s.append_audit(&a, vec![audit("3"), audit("4")]).unwrap();
            // "1" left the window of the last 3 events; "3" is in it.
            assert_eq!(
                s.append_audit(&a, vec![audit("3"), audit("1")]).unwrap(),
                outcome(1, 1)
            );
            s.flush_now().unwrap();
        }
        // Read back from sled, not from memory: the last 3 are 3, 4 and the second 1.
        let s = testing::reopen(dir.path(), &options);
        assert_eq!(
            s.append_audit(&a, vec![audit("4"), audit("1"), audit("2")])
                .unwrap(),
            outcome(1, 2)
        );
        assert_eq!(
            audit_ids(&s, &a, 0)
                .into_iter()
                .map(|(_, id)| id)
                .collect::<Vec<_>>(),
            ["1", "2", "3", "4", "1", "2"]
        );
        // The last 3 are 4, 1 and 2 when the next request comes: its own new ids do
        // not push 4 out before its turn, and an id earlier in it is a retry however
        // many came between.
        assert_eq!(
            s.append_audit(&a, ["5", "6", "7", "4", "8", "5"].map(audit).to_vec())
                .unwrap(),
            outcome(4, 2)
        );
        assert_eq!(audit_ids(&s, &a, 6).len(), 4);
        // A request of nothing but retries leaves the cached window current: the
        // next request does not read it from sled again.
        assert_eq!(
            s.append_audit(&a, vec![audit("8"), audit("7")]).unwrap(),
            outcome(0, 2)
        );
        assert_eq!(s.recent().head(&a), Some(10));
    }

    #[test]
    fn a_retry_after_its_event_was_swept_is_still_a_duplicate_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::store::StoreOptions {
            secret_key: None,
            cache_bytes: 8 << 20,
            dedup_window: 3,
            ..Default::default()
        };
        let a = AccountId::parse("acme").unwrap();
        let reader = |seq| crate::store::Reader {
            integration: uuid::Uuid::nil(),
            delivered_up_to: seq,
        };
        let retention = Utc::now() - chrono::Duration::days(30);
        let outcome = |accepted, duplicates| IngestOutcome {
            accepted,
            duplicates,
        };
        let id_records = |s: &Store| {
            s.events()
                .unwrap()
                .scan_prefix(keys::account_prefix(keys::AUDIT_ID, &a))
                .count()
        };
        {
            let s = Store::open_with_options(dir.path(), &options).unwrap();
            s.append_audit(&a, vec![audit("1")]).unwrap();
            s.append_audit(&a, vec![audit("2")]).unwrap();
            // Delivered: the next sweep removes the events.
            assert_eq!(
                s.sweep_audit(&a, retention, &|| Ok(vec![reader(2)]))
                    .unwrap(),
                2
            );
            assert_eq!(audit_ids(&s, &a, 0), vec![]);
            assert_eq!(s.append_audit(&a, vec![audit("1")]).unwrap(), outcome(0, 1));
            s.flush_now().unwrap();
        }
        // Read back from sled, not from memory.
        let s = testing::reopen(dir.path(), &options);
        assert_eq!(s.append_audit(&a, vec![audit("2")]).unwrap(), outcome(0, 1));
        // Once they left the window of 3, their records go with the next sweep.
        let now = Utc::now();
        let together = ["3", "4"].map(|id| {
            AuditEvent::from_json(
                &json!({"id": id, "time": "2026-11-25T10:00:00Z", "event": "x"}),
                0,
                now,
            )
            .unwrap()
        });
        // Stored at one moment: one chunk, one id record.
        s.append_audit(&a, together.to_vec()).unwrap();
        s.append_audit(&a, vec![audit("5")]).unwrap();
        s.sweep_audit(&a, retention, &|| Ok(vec![reader(5)]))
            .unwrap();
        assert_eq!(id_records(&s), 2, "the records of 3+4 and 5 remain");
        assert_eq!(
            s.append_audit(&a, vec![audit("1"), audit("4")]).unwrap(),
            outcome(1, 1)
        );
    }
}
