//! The audit log's record format: consecutive events of one ingest, stored
//! together in their pre-encoded form, and the writer that builds such records.

use super::{keys, StoreError};
use crate::model::audit_parts::EncodedAudit;
use crate::model::AccountId;
use chrono::{DateTime, Utc};

/// How many events at most, and how many bytes about, one audit record holds: large
/// enough that sled keeps few keys (one key per event cost sled ~800 bytes of memory
/// each) and reads stream, small enough that a sled leaf (up to 16 records) stays
/// under the 128 KiB above which sled writes it as a blob file of its own — created
/// and fsynced on every change, which made ingest spend a third of its time in the
/// kernel with 24 KiB records.
pub(super) const CHUNK_EVENTS: usize = 64;
const CHUNK_BYTES: usize = 7 * 1024;
/// The first byte of an audit chunk: its format.
pub(super) const CHUNK_FORMAT: u8 = 1;
/// A chunk's header: format, storage time, count.
const HEADER: usize = 13;

/// One stored audit event, borrowed from its chunk: the parts of its HEC bytes that
/// the HEC encoder completes per post (see [`crate::model::audit_parts`]).
#[derive(Debug, Clone, Copy)]
pub struct StoredAudit<'a> {
    /// Its sequence in the account's audit log: what checkpoints count.
    pub seq: u64,
    /// When it happened (milliseconds since the epoch).
    pub time_ms: i64,
    /// When siemsync stored it.
    pub ingested_at: DateTime<Utc>,
    /// The JSON members before the per-post `host` and `upload_time`.
    pub head: &'a [u8],
    /// The JSON members after them.
    pub tail: &'a [u8],
}

impl StoredAudit<'_> {
    /// The event's own time. Ingest accepts only times RFC 3339 can write (years
    /// 0 to 9999), all within chrono's range, so the fallback is never taken.
    pub fn time(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.time_ms).unwrap_or_default()
    }

    /// The event object as Splunk receives it, minus the per-post `host` and
    /// `upload_time` (for tests and inspection); an error if the stored parts are
    /// damaged.
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        let mut text = b"{".to_vec();
        text.extend_from_slice(self.head);
        text.push(b',');
        text.extend_from_slice(self.tail);
        text.push(b'}');
        serde_json::from_slice(&text)
    }
}

/// A record of consecutive audit events, stored together in one ingest:
/// `format u8 | ingested_at ms i64 | count u32 | count × (time ms i64 | head len u32 |
/// tail len u32 | head | tail)`, integers big-endian.
pub(super) struct Chunk<'a> {
    pub first: u64,
    pub count: u64,
    pub ingested_at: DateTime<Utc>,
    key: &'a [u8],
    body: &'a [u8],
}

impl<'a> Chunk<'a> {
    pub(super) fn parse(key: &'a [u8], v: &'a [u8]) -> Result<Chunk<'a>, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).replace('\0', "/"),
            reason: reason.into(),
        };
        if v.len() < HEADER || v[0] != CHUNK_FORMAT {
            return Err(corrupt("not an audit chunk of a known format"));
        }
        let ms = i64::from_be_bytes(v[1..9].try_into().expect("8 bytes"));
        Ok(Chunk {
            first: keys::seq_of(key),
            count: u64::from(u32::from_be_bytes(v[9..13].try_into().expect("4 bytes"))),
            ingested_at: DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| corrupt("storage time out of range"))?,
            key,
            body: &v[HEADER..],
        })
    }

    /// The sequence of its last event.
    pub fn last(&self) -> u64 {
        self.first + self.count.saturating_sub(1)
    }

    /// The bytes of its record: what it counts in the account's stored bytes.
    pub fn bytes(&self) -> u64 {
        (HEADER + self.body.len()) as u64
    }

    pub fn events(&self) -> Result<Vec<StoredAudit<'a>>, StoreError> {
        let corrupt = || StoreError::Corrupt {
            key: String::from_utf8_lossy(self.key).replace('\0', "/"),
            reason: "audit chunk is truncated".into(),
        };
        let mut out = Vec::with_capacity(self.count as usize);
        let mut rest = self.body;
        for seq in self.first..self.first + self.count {
            if rest.len() < 16 {
                return Err(corrupt());
            }
            let time_ms = i64::from_be_bytes(rest[0..8].try_into().expect("8 bytes"));
            let head_len = u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
            let tail_len = u32::from_be_bytes(rest[12..16].try_into().expect("4 bytes")) as usize;
            rest = &rest[16..];
            if rest.len() < head_len + tail_len {
                return Err(corrupt());
            }
            let (head, after) = rest.split_at(head_len);
            let (tail, after) = after.split_at(tail_len);
            rest = after;
            out.push(StoredAudit {
                seq,
                time_ms,
                ingested_at: self.ingested_at,
                head,
                tail,
            });
        }
        Ok(out)
    }
}

/// Where finished audit chunks go: a sled batch, or the rows of a PostgreSQL insert.
pub(super) trait ChunkSink {
    /// A finished chunk: its first sequence, its record, and its events' id hashes
    /// (the writer's buffers, which it reuses: a sink copies what it keeps).
    fn chunk(&mut self, account: &AccountId, first: u64, record: &[u8], ids: &[u8]);
}

impl ChunkSink for sled::Batch {
    fn chunk(&mut self, account: &AccountId, first: u64, record: &[u8], ids: &[u8]) {
        self.insert(keys::with_seq(keys::AUDIT, account, first), record);
        self.insert(keys::with_seq(keys::AUDIT_ID, account, first), ids);
    }
}

/// Builds one account's audit chunks, and beside each the ids of its events for the
/// dedup window.
pub(super) struct ChunkWriter {
    first: u64,
    count: u32,
    ingested_at: i64,
    /// The record being built: its header's room (filled when it is finished), then
    /// the events. Kept across chunks, as `ids` is: a sink copies what it keeps.
    record: Vec<u8>,
    ids: Vec<u8>,
    /// Whose events it writes: bound at its making, so that no event can carry
    /// another account's name to Splunk, or sit under its key.
    account: AccountId,
    /// `"account":…`, the start of every event's tail.
    account_member: Vec<u8>,
    /// The bytes of the records finished so far: what the account's stored bytes grow by.
    pub(super) bytes: u64,
}

impl ChunkWriter {
    /// A writer of `account`'s chunks.
    pub(super) fn new(account: &AccountId) -> ChunkWriter {
        let mut account_member = Vec::new();
        crate::model::audit_parts::account_into(&mut account_member, account);
        ChunkWriter {
            first: 0,
            count: 0,
            ingested_at: 0,
            record: Vec::new(),
            ids: Vec::new(),
            account: account.clone(),
            account_member,
            bytes: 0,
        }
    }

    /// Adds an event; a chunk holds events of one storage time, up to its size.
    pub(super) fn push(&mut self, batch: &mut impl ChunkSink, seq: u64, ev: &EncodedAudit) {
        if self.count > 0
            && (self.ingested_at != ev.ingested_at_ms || seq != self.first + u64::from(self.count))
        {
            self.finish_into(batch);
        }
        if self.count == 0 {
            self.first = seq;
            self.ingested_at = ev.ingested_at_ms;
            self.record.clear();
            self.record.resize(HEADER, 0);
            self.ids.clear();
        }
        let (head, rest) = (ev.head(), ev.rest());
        let tail_len = self.account_member.len() + rest.len();
        let r = &mut self.record;
        r.extend_from_slice(&ev.time_ms.to_be_bytes());
        r.extend_from_slice(&(head.len() as u32).to_be_bytes());
        r.extend_from_slice(&(tail_len as u32).to_be_bytes());
        r.extend_from_slice(head);
        r.extend_from_slice(&self.account_member);
        r.extend_from_slice(rest);
        self.ids.extend_from_slice(&ev.id_hash.to_be_bytes());
        self.count += 1;
        if self.count as usize >= CHUNK_EVENTS || self.record.len() - HEADER >= CHUNK_BYTES {
            self.finish_into(batch);
        }
    }

    pub(super) fn finish_into(&mut self, batch: &mut impl ChunkSink) {
        if self.count == 0 {
            return;
        }
        let header = &mut self.record[..HEADER];
        header[0] = CHUNK_FORMAT;
        header[1..9].copy_from_slice(&self.ingested_at.to_be_bytes());
        header[9..13].copy_from_slice(&self.count.to_be_bytes());
        self.bytes += self.record.len() as u64;
        batch.chunk(&self.account, self.first, &self.record, &self.ids);
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::audit_parts::EncodedAudit;

    /// Records what a writer hands its sink: account, first sequence, record.
    #[derive(Default)]
    struct Sink(Vec<(AccountId, u64, Vec<u8>)>);

    impl ChunkSink for Sink {
        fn chunk(&mut self, account: &AccountId, first: u64, record: &[u8], _ids: &[u8]) {
            self.0.push((account.clone(), first, record.to_vec()));
        }
    }

    #[test]
    fn each_writers_chunks_carry_its_own_account_in_key_and_events() {
        let (a, b) = (
            AccountId::parse("acme").unwrap(),
            AccountId::parse("globex").unwrap(),
        );
        // One storage time for all: a chunk holds events of one storage time.
        let stored = chrono::Utc::now();
        let ev = |id: &str| {
            let mut e = super::super::testing::audit(id);
            e.ingested_at = stored;
            EncodedAudit::from(e)
        };
        let mut sink = Sink::default();
        let (mut wa, mut wb) = (ChunkWriter::new(&a), ChunkWriter::new(&b));
        wa.push(&mut sink, 1, &ev("a1"));
        wa.push(&mut sink, 2, &ev("a2"));
        wa.finish_into(&mut sink);
        // Another account's event that would follow in sequence.
        wb.push(&mut sink, 3, &ev("b1"));
        wb.finish_into(&mut sink);
        let accounts: Vec<(String, u64, Vec<String>)> = sink
            .0
            .iter()
            .map(|(owner, first, record)| {
                let key = keys::with_seq(keys::AUDIT, owner, *first);
                let chunk = Chunk::parse(&key, record).unwrap();
                let named = chunk
                    .events()
                    .unwrap()
                    .iter()
                    .map(|e| e.to_json().unwrap()["account"].as_str().unwrap().to_owned())
                    .collect();
                (owner.as_str().to_owned(), *first, named)
            })
            .collect();
        assert_eq!(
            accounts,
            vec![
                ("acme".into(), 1, vec!["acme".into(), "acme".into()]),
                ("globex".into(), 3, vec!["globex".into()]),
            ]
        );
    }
}
