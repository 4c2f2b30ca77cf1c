//! The dedup window: an audit id the account sent among its last `dedup_window`
//! events is a platform retry. The ids live in sled as 16-byte hashes beside each
//! chunk; the windows of recently active accounts are also kept in memory, so an
//! ingest does not read the window back from sled every time.

use crate::model::AccountId;
use std::collections::{HashMap, HashSet, VecDeque};

/// Id hashes are already uniformly spread: a set of them needs no hashing again.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

pub type IdSet = HashSet<u128, std::hash::BuildHasherDefault<IdHasher>>;

/// Ids in a window, with how often each is in it (an id can be there twice when it
/// came back after leaving a smaller window).
pub type IdCounts = HashMap<u128, u32, std::hash::BuildHasherDefault<IdHasher>>;

pub use crate::model::audit_parts::id_hash;

/// How many ids, over all accounts, the in-memory windows hold at most (about 40
/// bytes each); the least recently used accounts' windows go first.
const CACHED_IDS: usize = 1_000_000;

struct Window {
    /// The audit head the window reflects: anything else means it is stale.
    head: u64,
    ids: IdCounts,
    order: VecDeque<u128>,
    last_used: u64,
}

/// The in-memory windows. Only the ingest writer uses it (under the ingest lock).
pub struct RecentIds {
    size: usize,
    windows: HashMap<AccountId, Window>,
    cached: usize,
    clock: u64,
}

impl RecentIds {
    pub fn new(size: usize) -> RecentIds {
        RecentIds {
            size,
            windows: HashMap::new(),
            cached: 0,
            clock: 0,
        }
    }

    /// The account's window as of audit head `head`, read with `load` (oldest id
    /// first) unless the cached one is current.
    pub fn window<E>(
        &mut self,
        account: &AccountId,
        head: u64,
        load: impl FnOnce() -> Result<Vec<u128>, E>,
    ) -> Result<&IdCounts, E> {
        self.clock += 1;
        if self.windows.get(account).is_none_or(|w| w.head != head) {
            self.forget(account);
            let order: VecDeque<u128> = load()?.into();
            self.cached += order.len();
            let mut ids = IdCounts::default();
            for id in &order {
                *ids.entry(*id).or_default() += 1;
            }
            self.windows.insert(
                account.clone(),
                Window {
                    head,
                    ids,
                    order,
                    last_used: 0,
                },
            );
            self.evict(account);
        }
        let w = self.windows.get_mut(account).expect("present");
        w.last_used = self.clock;
        Ok(&w.ids)
    }

    /// The audit head the account's cached window reflects, when one is cached.
    pub fn head(&self, account: &AccountId) -> Option<u64> {
        self.windows.get(account).map(|w| w.head)
    }

    /// Ids just stored (in order), the account's head now `head`.
    pub fn stored(&mut self, account: &AccountId, ids: &[u128], head: u64) {
        let Some(w) = self.windows.get_mut(account) else {
            return;
        };
        for id in ids {
            *w.ids.entry(*id).or_default() += 1;
            w.order.push_back(*id);
        }
        self.cached += ids.len();
        while w.order.len() > self.size {
            let old = w.order.pop_front().expect("non-empty");
            if let Some(n) = w.ids.get_mut(&old) {
                *n -= 1;
                if *n == 0 {
                    w.ids.remove(&old);
                }
            }
            self.cached -= 1;
        }
        w.head = head;
        self.evict(account);
    }

    /// Drops the account's window (after a failed write, or a retention sweep).
    pub fn forget(&mut self, account: &AccountId) {
        if let Some(w) = self.windows.remove(account) {
            self.cached -= w.order.len();
        }
    }

    /// Drops every window: after a storage fault, what reached the disk is unknown.
    pub fn clear(&mut self) {
        self.windows.clear();
        self.cached = 0;
    }

    /// Keeps the cache within its bound, least recently used accounts first (never `keep`).
    fn evict(&mut self, keep: &AccountId) {
        while self.cached > CACHED_IDS {
            let Some(oldest) = self
                .windows
                .iter()
                .filter(|(a, _)| *a != keep)
                .min_by_key(|(_, w)| w.last_used)
                .map(|(a, _)| a.clone())
            else {
                return;
            };
            self.forget(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_latest_ids_and_reloads_when_stale() {
        let a = AccountId::parse("acme").unwrap();
        let mut r = RecentIds::new(3);
        let mut loads = 0;
        let w = r
            .window(&a, 2, || {
                loads += 1;
                Ok::<_, ()>(vec![1, 2])
            })
            .unwrap();
        assert!(w.contains_key(&1) && w.contains_key(&2));
        r.stored(&a, &[3, 4], 4);
        let w = r.window(&a, 4, || Err(())).unwrap();
        assert!(!w.contains_key(&1), "the oldest id left the window of 3");
        assert!(w.contains_key(&2) && w.contains_key(&4));
        // Another writer (or a lost write) moved the head: the window is read again.
        let w = r.window(&a, 9, || Ok::<_, ()>(vec![7])).unwrap();
        assert!(w.contains_key(&7) && !w.contains_key(&4));
        assert_eq!(loads, 1);
        r.clear();
        assert_eq!(r.cached, 0);
    }

    #[test]
    fn id_hashes_are_stable_across_builds() {
        // Stored on disk: the function must never change.
        assert_eq!(id_hash(""), 0x6c62272e07bb014262b821756295c58d);
        assert_ne!(id_hash("evt-1"), id_hash("evt-2"));
    }
}
