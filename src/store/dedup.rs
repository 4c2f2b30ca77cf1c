//! The dedup window: an audit id the account sent among its last `dedup_window`
//! events is a platform retry. The ids live in sled as 16-byte hashes beside each
//! chunk; the windows of recently active accounts are also kept in memory, so an
//! ingest does not read the window back from sled every time.

use crate::model::AccountId;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

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

/// Each id an account's window saw, with the place of its latest arrival in the
/// account's stream of ids.
type IdPlaces = HashMap<u128, u64, std::hash::BuildHasherDefault<IdHasher>>;

pub use crate::model::audit_parts::id_hash;

/// How many ids, over all accounts, the in-memory windows' maps have room for at
/// most (about 38 bytes each, so about 90 MB): a map has room for twice its window
/// and more (the ids waiting for a sweep, and a sweep does not shrink it), so this
/// is ten windows of 100,000 at their fullest. The least recently used accounts'
/// windows go first.
const CACHED_IDS: usize = 2_400_000;

/// The head of a window an append is changing: a window left so (by a panic
/// between its admits and its write) reads as stale, and is read again.
const APPENDING: u64 = u64::MAX;

/// One account's window: its last `size` ids. An id that left the window stays in
/// the map until the next sweep, which comes once the map holds twice the window:
/// one probe of the map an id, not one to add it and one more to drop it later.
pub struct Window {
    /// The audit head the window reflects: anything else means it is stale.
    head: u64,
    places: IdPlaces,
    /// The place of the next id.
    next: u64,
    size: u64,
    last_used: u64,
    /// The room of `places` as counted in `RecentIds::cached`.
    counted: usize,
}

impl Window {
    /// The window of `size` after `ids`, oldest first (only the last `size` count).
    fn new(head: u64, size: usize, ids: Vec<u128>) -> Window {
        let ids = &ids[ids.len().saturating_sub(size)..];
        let mut places = IdPlaces::with_capacity_and_hasher(ids.len(), Default::default());
        let next = ids.len() as u64;
        // A later arrival of the same id takes its place.
        for (place, id) in ids.iter().enumerate() {
            places.insert(*id, place as u64);
        }
        Window {
            head,
            places,
            next,
            size: size as u64,
            last_used: 0,
            counted: 0,
        }
    }

    /// Whether `id` is among the window's ids.
    pub fn contains(&self, id: &u128) -> bool {
        self.places
            .get(id)
            .is_some_and(|&p| within(p, self.size, self.next))
    }

    /// Adds `id` unless it was in the window as it stood when the append began at
    /// place `start`, or came earlier in that append: whether it was added.
    fn admit(&mut self, id: u128, start: u64) -> bool {
        let next = self.next;
        match self.places.entry(id) {
            Entry::Occupied(p) if within(*p.get(), self.size, start) => return false,
            Entry::Occupied(mut p) => *p.get_mut() = next,
            Entry::Vacant(v) => {
                v.insert(next);
            }
        }
        self.next += 1;
        true
    }

    /// Adds ids stored (in order) whatever they are.
    fn add(&mut self, ids: &[u128]) {
        for id in ids {
            self.places.insert(*id, self.next);
            self.next += 1;
        }
    }

    /// Drops the ids that left the window once the map holds twice the window (one
    /// pass over it).
    fn sweep(&mut self) {
        if (self.places.len() as u64) > self.size.saturating_mul(2) {
            let (next, size) = (self.next, self.size);
            self.places.retain(|_, p| within(*p, size, next));
        }
    }

    /// Counts the map's room now into `cached`.
    fn recount(&mut self, cached: &mut usize) {
        *cached -= self.counted;
        self.counted = self.places.capacity();
        *cached += self.counted;
    }
}

/// Whether the id at `place` is among the last `size` ids before place `next`.
fn within(place: u64, size: u64, next: u64) -> bool {
    place + size >= next
}

/// The in-memory windows. Only the ingest writer uses it (under the ingest lock).
pub struct RecentIds {
    size: usize,
    windows: HashMap<AccountId, Window>,
    /// The room the windows' maps have, as last counted (each map's `counted`).
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
    ) -> Result<&Window, E> {
        self.clock += 1;
        if self.windows.get(account).is_none_or(|w| w.head != head) {
            self.forget(account);
            let mut w = Window::new(head, self.size, load()?);
            w.recount(&mut self.cached);
            self.windows.insert(account.clone(), w);
            self.evict(account);
        }
        let w = self.windows.get_mut(account).expect("present");
        w.last_used = self.clock;
        Ok(w)
    }

    /// The account's window as of audit head `head` (read with `load` unless the
    /// cached one is current), for one append to test its ids against — the window
    /// as it stands now, and the append's own earlier ids — and add them to as it
    /// goes: one probe of the window an id. [`RecentIds::committed`] once the
    /// append is written; [`RecentIds::forget`] if it is not. Until either, the
    /// window reads as stale.
    pub fn appending<E>(
        &mut self,
        account: &AccountId,
        head: u64,
        load: impl FnOnce() -> Result<Vec<u128>, E>,
    ) -> Result<Appending<'_>, E> {
        self.window(account, head, load)?;
        let window = self.windows.get_mut(account).expect("present");
        window.head = APPENDING;
        Ok(Appending {
            start: window.next,
            window,
        })
    }

    /// The append [`RecentIds::appending`] began is written: the account's head is
    /// now `head`.
    pub fn committed(&mut self, account: &AccountId, head: u64) {
        let Some(w) = self.windows.get_mut(account) else {
            return;
        };
        w.sweep();
        w.recount(&mut self.cached);
        w.head = head;
        self.evict(account);
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
        w.add(ids);
        self.committed(account, head);
    }

    /// Drops the account's window (after a failed write, or a retention sweep).
    pub fn forget(&mut self, account: &AccountId) {
        if let Some(w) = self.windows.remove(account) {
            self.cached -= w.counted;
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

/// One append's pass over an account's window ([`RecentIds::appending`]).
pub struct Appending<'a> {
    window: &'a mut Window,
    /// The place of the append's first id.
    start: u64,
}

impl Appending<'_> {
    /// Whether `id` is new — neither in the window nor earlier in this append —
    /// and if so, adds it.
    pub fn admit(&mut self, id: u128) -> bool {
        self.window.admit(id, self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The room the cached maps have: what `cached` must say.
    fn room(r: &RecentIds) -> usize {
        r.windows.values().map(|w| w.places.capacity()).sum()
    }

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
        assert!(w.contains(&1) && w.contains(&2));
        r.stored(&a, &[3, 4], 4);
        let w = r.window(&a, 4, || Err(())).unwrap();
        assert!(!w.contains(&1), "the oldest id left the window of 3");
        assert!(w.contains(&2) && w.contains(&4));
        // Another writer (or a lost write) moved the head: the window is read again.
        let w = r.window(&a, 9, || Ok::<_, ()>(vec![7])).unwrap();
        assert!(w.contains(&7) && !w.contains(&4));
        assert_eq!(loads, 1);
        r.clear();
        assert_eq!(r.cached, 0);
    }

    #[test]
    fn an_append_admits_each_new_id_once_and_a_failed_one_leaves_no_trace() {
        let a = AccountId::parse("acme").unwrap();
        let mut r = RecentIds::new(3);
        let mut w = r.appending(&a, 2, || Ok::<_, ()>(vec![1, 2])).unwrap();
        let admitted: Vec<bool> = [2, 3, 3, 4].into_iter().map(|id| w.admit(id)).collect();
        assert_eq!(
            admitted,
            [false, true, false, true],
            "in the window, new, again, new"
        );
        r.committed(&a, 4);
        assert_eq!(r.head(&a), Some(4));
        let w = r.window(&a, 4, || Err(())).unwrap();
        assert!(!w.contains(&1), "the oldest id left the window of 3");
        assert!(w.contains(&2) && w.contains(&3) && w.contains(&4));
        assert_eq!(
            r.windows[&a].places.len(),
            4,
            "the id that left waits for a sweep"
        );
        assert_eq!(r.cached, room(&r));
        // An append that is not written: its ids must not count as stored.
        let mut w = r.appending(&a, 4, || Err(())).unwrap();
        assert!(w.admit(5));
        r.forget(&a);
        assert_eq!(r.cached, 0, "nothing cached for a forgotten window");
        let w = r.window(&a, 4, || Ok::<_, ()>(vec![2, 3, 4])).unwrap();
        assert!(!w.contains(&5), "read again from what was written");
    }

    #[test]
    fn an_append_tests_each_id_against_the_window_as_it_stood_and_its_own_earlier_ids() {
        let a = AccountId::parse("acme").unwrap();
        let mut r = RecentIds::new(3);
        // 1 is in the window of 3 when the request comes: the request's own new ids
        // do not push it out before its turn.
        let mut w = r.appending(&a, 3, || Ok::<_, ()>(vec![1, 2, 3])).unwrap();
        assert_eq!(
            [4, 5, 6, 1].map(|id| w.admit(id)),
            [true, true, true, false]
        );
        r.committed(&a, 6);
        // An id earlier in the same request, however many came between.
        let mut w = r.appending(&a, 6, || Err(())).unwrap();
        assert_eq!(
            [7, 8, 9, 10, 7].map(|id| w.admit(id)),
            [true, true, true, true, false]
        );
    }

    #[test]
    fn an_append_cut_short_by_a_panic_leaves_a_window_that_is_read_again() {
        let a = AccountId::parse("acme").unwrap();
        let mut r = RecentIds::new(3);
        let mut w = r.appending(&a, 2, || Ok::<_, ()>(vec![1, 2])).unwrap();
        assert!(w.admit(3));
        // Neither committed nor forgotten: the write never happened.
        let mut loads = 0;
        let w = r
            .window(&a, 2, || {
                loads += 1;
                Ok::<_, ()>(vec![1, 2])
            })
            .unwrap();
        assert_eq!(loads, 1, "the window was read again");
        assert!(!w.contains(&3), "an id never written is no retry");
        assert_eq!(r.cached, room(&r));
    }

    #[test]
    fn the_window_answers_as_the_last_ids_would_through_returns_sweeps_and_reloads() {
        // A naive model: the account's ids in order; an id is in the window when it is
        // among the last `size`. Ids from a small range, so that they come back.
        let a = AccountId::parse("acme").unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for size in [1, 2, 5, 16] {
            let mut r = RecentIds::new(size);
            let mut stream: Vec<u128> = Vec::new();
            let mut head = 0;
            for round in 0..400 {
                let in_window = |stream: &[u128], id: u128| {
                    stream[stream.len().saturating_sub(size)..].contains(&id)
                };
                let ids: Vec<u128> = (0..rand(8)).map(|_| u128::from(rand(24))).collect();
                match rand(4) {
                    // An append, written.
                    // The promise: an id among the last `size` stored before the
                    // request, or earlier in the request, is a retry.
                    0 | 1 => {
                        let mut w = r
                            .appending(&a, head, || Ok::<_, ()>(stream.clone()))
                            .unwrap();
                        let before = stream.clone();
                        let mut request = Vec::new();
                        for id in ids {
                            let new = !in_window(&before, id) && !request.contains(&id);
                            assert_eq!(w.admit(id), new, "size {size}, round {round}, id {id}");
                            request.push(id);
                            if new {
                                stream.push(id);
                            }
                        }
                        head = stream.len() as u64;
                        r.committed(&a, head);
                    }
                    // Stored elsewhere (PostgreSQL's other nodes), repeats and all.
                    2 => {
                        r.window(&a, head, || Ok::<_, ()>(stream.clone())).unwrap();
                        stream.extend(&ids);
                        head = stream.len() as u64;
                        r.stored(&a, &ids, head);
                    }
                    // An append not written, or a reload.
                    _ => {
                        if let Ok(mut w) = r.appending(&a, head, || Ok::<_, ()>(stream.clone())) {
                            for id in ids {
                                w.admit(id);
                            }
                        }
                        r.forget(&a);
                    }
                }
                let w = r.window(&a, head, || Ok::<_, ()>(stream.clone())).unwrap();
                for id in 0..24 {
                    assert_eq!(
                        w.contains(&id),
                        in_window(&stream, id),
                        "size {size}, round {round}, id {id}"
                    );
                }
                assert!(
                    w.places.len() <= 2 * size + 8,
                    "swept: {} ids for a window of {size}",
                    w.places.len()
                );
                assert_eq!(r.cached, room(&r));
            }
        }
    }

    #[test]
    fn id_hashes_are_stable_across_builds() {
        // Stored on disk: the function must never change.
        assert_eq!(id_hash(""), 0x6c62272e07bb014262b821756295c58d);
        assert_ne!(id_hash("evt-1"), id_hash("evt-2"));
    }
}
