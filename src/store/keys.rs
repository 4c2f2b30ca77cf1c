//! Key layout. Account ids never contain a NUL byte (see `model::ids`), so
//! `prefix ++ account ++ 0 ++ rest` keys never collide, and big-endian
//! sequence numbers make sled's order the sequence order.

use crate::model::AccountId;
use uuid::Uuid;

/// `events` tree: a chunk of consecutive audit events, by its first sequence.
pub const AUDIT: u8 = b'a';
/// `events` tree: the id hashes of a chunk's events, by the chunk's first sequence,
/// for the dedup window.
pub const AUDIT_ID: u8 = b'i';
/// `events` tree: a job's latest snapshot.
pub const JOB: u8 = b'j';
/// `events` tree: change sequence → job id, to find jobs changed since a checkpoint.
pub const JOB_CHANGE: u8 = b'c';
/// `events` tree: jobs currently in progress.
pub const JOB_RUNNING: u8 = b'r';
/// `events` tree: a finished job whose record retention removed: when, and a hash of
/// its final snapshot, so a late retry neither reopens it nor is sent again.
pub const JOB_DONE: u8 = b'd';
/// `events` tree: per-account heads (last audit sequence, last job change).
pub const HEADS: u8 = b'h';
/// `events` tree: per account, the bytes its audit chunks and job snapshot records
/// take (u64, big-endian), kept in the writes that add, replace and remove them, so
/// the backlog quota needs no scan.
pub const STORED_BYTES: u8 = b'b';
/// `events` tree: present once every account's `STORED_BYTES` was counted.
pub const BYTES_COUNTED: &[u8] = b"bytes_counted";
/// `events` tree: present once every account's job snapshots were added to its
/// `STORED_BYTES` (they count since 2026-11-27).
pub const JOB_BYTES_COUNTED: &[u8] = b"format/job_bytes_counted";
/// `events` tree: per account, what the backlog quota dropped that siemsync's own
/// notice has not told the account yet (`retention::PendingNotice`). In this tree so
/// that the sweep's drop and the notice's append each update it in their own write.
pub const QUOTA_NOTICE: u8 = b'n';
/// `events` tree: per account, the audit sequence below which the backlog quota has
/// dropped events (u64, big-endian): an older chunk a post held then goes once free.
pub const QUOTA_FLOOR: u8 = b'q';
/// `events` tree: the version of the audit record layout the data is in.
pub const FORMAT: &[u8] = b"format";

pub fn account_prefix(kind: u8, account: &AccountId) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.as_str().len() + 2 + 16);
    k.push(kind);
    k.extend_from_slice(account.as_str().as_bytes());
    k.push(0);
    k
}

pub fn with_seq(kind: u8, account: &AccountId, seq: u64) -> Vec<u8> {
    let mut k = account_prefix(kind, account);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn with_name(kind: u8, account: &AccountId, name: &str) -> Vec<u8> {
    let mut k = account_prefix(kind, account);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The sequence number at the end of a `with_seq` key.
pub fn seq_of(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if key.len() >= 8 {
        b.copy_from_slice(&key[key.len() - 8..]);
    }
    u64::from_be_bytes(b)
}

pub fn account(id: &AccountId) -> Vec<u8> {
    format!("acct/{id}").into_bytes()
}

/// `registry` tree: every account's feature switch (`account`).
pub const ACCOUNTS: &[u8] = b"acct/";

/// `registry` tree: account tokens by the hash of their secret.
pub const TOKENS: &[u8] = b"tok/";

pub const INTEGRATIONS: &[u8] = b"int/";

/// `registry` tree: a number added to every id sled generates (`Store::next_id`),
/// so that ids go on above the old ones after the store was rewritten into a
/// fresh database (whose generator starts again at 0).
pub const ID_FLOOR: &[u8] = b"idfloor";

/// `registry` tree: the write the store watcher makes to check the disk.
pub const PROBE: &[u8] = b"probe";

/// `registry` tree: what the backlog quota dropped of an account's events.
pub fn quota_drops(account: &AccountId) -> Vec<u8> {
    format!("quota/{account}").into_bytes()
}

pub fn integration(account: &AccountId, id: &Uuid) -> Vec<u8> {
    format!("int/{account}\0{id}").into_bytes()
}

pub fn account_integrations(account: &AccountId) -> Vec<u8> {
    format!("int/{account}\0").into_bytes()
}

pub fn checkpoint(id: &Uuid) -> Vec<u8> {
    format!("cp/{id}").into_bytes()
}

pub fn dead_letters(integration: &Uuid) -> Vec<u8> {
    format!("dl/{integration}/").into_bytes()
}

pub fn dead_letter(integration: &Uuid, id: u64) -> Vec<u8> {
    let mut k = dead_letters(integration);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// An integration's replay: its window, progress and cursor, so it resumes after a restart.
pub fn replay(integration: &Uuid) -> Vec<u8> {
    format!("replay/{integration}").into_bytes()
}

pub fn connection_report(integration: &Uuid) -> Vec<u8> {
    format!("test/{integration}").into_bytes()
}
