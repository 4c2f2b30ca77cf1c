//! Data written by earlier versions, brought to the current layout when the store
//! opens. Until 2026-11-26 each audit event was its own JSON record under its
//! sequence, with an index from its id to that sequence; now events are stored in
//! chunks already encoded (see `events`), with their id hashes beside each chunk.
//! The conversion is idempotent, so a crash part-way is finished at the next start.

use super::chunk::{ChunkWriter, CHUNK_FORMAT};
use super::{decode, keys, SledStore as Store, StoreError};
use crate::model::AuditEvent;

/// The layout `FORMAT` records once every audit record is a chunk.
const CHUNKED: &[u8] = &[2];

/// Events converted per write.
const PER_WRITE: usize = 10_000;

/// Whether every conversion below already ran (they record it in the store).
pub(super) fn is_current(store: &Store) -> Result<bool, StoreError> {
    let tree = store.events()?;
    Ok(tree.get(keys::FORMAT)?.as_deref() == Some(CHUNKED)
        && tree.get(keys::BYTES_COUNTED)?.is_some()
        && tree.get(keys::JOB_BYTES_COUNTED)?.is_some())
}

/// Converts every per-event audit record to chunks; returns how many events it converted.
pub(super) fn audit_chunks(store: &Store) -> Result<u64, StoreError> {
    let tree = store.events()?;
    if tree.get(keys::FORMAT)?.as_deref() == Some(CHUNKED) {
        return Ok(0);
    }
    let mut converted = 0u64;
    for account in store.accounts_with_events()? {
        let mut batch = sled::Batch::default();
        let mut chunk = ChunkWriter::new(&account);
        let mut pending = 0;
        for kv in tree.scan_prefix(keys::account_prefix(keys::AUDIT, &account)) {
            let (k, v) = kv?;
            if v.first() == Some(&CHUNK_FORMAT) {
                continue;
            }
            let ev: AuditEvent = decode(&k, &v)?;
            batch.remove(k.clone());
            chunk.push(&mut batch, keys::seq_of(&k), &ev.into());
            pending += 1;
            if pending == PER_WRITE {
                chunk.finish_into(&mut batch);
                tree.apply_batch(std::mem::take(&mut batch))?;
                converted += pending as u64;
                pending = 0;
            }
        }
        chunk.finish_into(&mut batch);
        // The old id index (id → sequence, 8 bytes); the chunks' id records replace it.
        for kv in tree.scan_prefix(keys::account_prefix(keys::AUDIT_ID, &account)) {
            let (k, v) = kv?;
            if v.len() == 8 {
                batch.remove(k);
            }
        }
        tree.apply_batch(batch)?;
        converted += pending as u64;
    }
    tree.insert(keys::FORMAT, CHUNKED)?;
    tree.flush()?;
    if converted > 0 {
        log::info!("store: converted {converted} audit events to the chunked layout");
    }
    Ok(converted)
}

/// Counts every account's stored audit bytes once, for a store written before the
/// count was kept (see `keys::STORED_BYTES`); later writes keep it.
pub(super) fn stored_bytes(store: &Store) -> Result<(), StoreError> {
    let tree = store.events()?;
    if tree.get(keys::BYTES_COUNTED)?.is_some() {
        return Ok(());
    }
    for account in store.accounts_with_events()? {
        let mut bytes = 0u64;
        for v in tree
            .scan_prefix(keys::account_prefix(keys::AUDIT, &account))
            .values()
        {
            bytes += v?.len() as u64;
        }
        tree.insert(
            keys::account_prefix(keys::STORED_BYTES, &account),
            &bytes.to_be_bytes(),
        )?;
    }
    tree.insert(keys::BYTES_COUNTED, &[1u8][..])?;
    tree.flush()?;
    Ok(())
}

/// Adds every account's job snapshot records to its stored bytes once, for a store
/// written before they counted in the backlog quota. One write with its marker, so a
/// crash part-way adds nothing twice.
pub(super) fn job_bytes(store: &Store) -> Result<(), StoreError> {
    let tree = store.events()?;
    if tree.get(keys::JOB_BYTES_COUNTED)?.is_some() {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    for account in store.accounts_with_events()? {
        let mut bytes = 0u64;
        for v in tree
            .scan_prefix(keys::account_prefix(keys::JOB, &account))
            .values()
        {
            bytes += v?.len() as u64;
        }
        if bytes > 0 {
            let total = super::audit::stored_bytes_in(&tree, &account)? + bytes;
            batch.insert(
                keys::account_prefix(keys::STORED_BYTES, &account),
                &total.to_be_bytes(),
            );
        }
    }
    batch.insert(keys::JOB_BYTES_COUNTED, &[1u8][..]);
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccountId;
    use chrono::Utc;
    use serde_json::json;
    use std::ops::ControlFlow;

    #[test]
    fn per_event_records_of_an_older_version_become_chunks_that_deliver_and_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = AccountId::parse("acme").unwrap();
        // The layout of the previous version, written by hand: 300 events, seq 1..=300.
        let tree = s.events().unwrap();
        let at = Utc::now();
        for seq in 1..=300u64 {
            let ev = AuditEvent::from_json(
                &json!({"id": format!("old-{seq}"), "time": "2026-11-25T10:00:00Z", "event": "x"}),
                0,
                at,
            )
            .unwrap();
            tree.insert(
                keys::with_seq(keys::AUDIT, &a, seq),
                serde_json::to_vec(&ev).unwrap(),
            )
            .unwrap();
            tree.insert(
                keys::with_name(keys::AUDIT_ID, &a, &ev.id),
                &seq.to_be_bytes(),
            )
            .unwrap();
        }
        let mut heads = [0u8; 16];
        heads[..8].copy_from_slice(&300u64.to_be_bytes());
        tree.insert(keys::account_prefix(keys::HEADS, &a), &heads)
            .unwrap();
        tree.remove(keys::FORMAT).unwrap();

        assert_eq!(audit_chunks(&s).unwrap(), 300);
        assert_eq!(audit_chunks(&s).unwrap(), 0, "done once");
        let mut seen = Vec::new();
        s.audit_after(&a, 150, |ev| {
            seen.push((
                ev.seq,
                ev.to_json().unwrap()["id"].as_str().unwrap().to_owned(),
            ));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(seen.len(), 150);
        assert_eq!(seen[0], (151, "old-151".to_owned()));
        assert_eq!(seen[149], (300, "old-300".to_owned()));
        assert_eq!(s.audit_backlog(&a, 150).unwrap().0, 150);
        // The ids are still known: a retry is a duplicate, a new id is sequence 301.
        let retry = AuditEvent::from_json(
            &json!({"id": "old-7", "time": "2026-11-25T10:00:00Z", "event": "x"}),
            0,
            at,
        )
        .unwrap();
        let new = AuditEvent {
            id: "new-1".into(),
            ..retry.clone()
        };
        let out = s.append_audit(&a, vec![retry, new]).unwrap();
        assert_eq!((out.accepted, out.duplicates), (1, 1));
        assert_eq!(s.heads(&a).unwrap().audit, 301);
        let old_index = tree
            .scan_prefix(keys::account_prefix(keys::AUDIT_ID, &a))
            .filter(|kv| kv.as_ref().unwrap().1.len() == 8)
            .count();
        assert_eq!(old_index, 0, "the old id index is gone");
    }

    #[test]
    fn a_directory_of_an_older_layout_is_refused_for_a_copy_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            // What an older version left: no layout marker.
            s.events().unwrap().remove(keys::FORMAT).unwrap();
            s.flush_now().unwrap();
        }
        // sled's file lock goes a moment after the store that held it.
        let open_unchanged = || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                match Store::open_unchanged(dir.path(), 1 << 20) {
                    Err(e) if e.to_string().contains("lock") => {
                        assert!(std::time::Instant::now() < deadline, "{e}");
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    other => return other.unwrap(),
                }
            }
        };
        for _ in 0..2 {
            let why = open_unchanged().err().expect("an older layout is refused");
            assert!(
                why.contains("older version") && why.contains("start and stop the service once"),
                "{why}"
            );
        }
        // Left as it was (refused the second time above), and the service's own
        // start converts it, after which the copy may read it.
        drop(super::super::testing::reopen(
            dir.path(),
            &Default::default(),
        ));
        let current = open_unchanged();
        assert!(current.is_ok(), "{:?}", current.err());
    }
}
