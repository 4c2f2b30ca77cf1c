//! The disk reserve: below a floor of free space on the data directory's filesystem
//! (`min_free_disk_bytes`), ingest is refused with 503 for the accounts holding the
//! largest backlogs first, before the disk is actually full, so that the accounts
//! whose Splunk takes their events keep working; only below a hard line (half the
//! floor) is every account refused. A disk that is really full is the store's own
//! fault path (`store::fault`), which this leaves alone.
//!
//! The policy, so that an operator can predict it:
//! - free ≥ floor (or the floor is 0): nobody is refused;
//! - half the floor ≤ free < floor: the accounts with the largest `backlog_bytes`
//!   (what some integration of theirs has not delivered), largest first, until
//!   those refused hold at least half of all backlog bytes — at least the largest;
//!   an account without a backlog is never refused here;
//! - free < half the floor: every account.
//!
//! The free space is measured with `statvfs` (the bytes an unprivileged writer may
//! still use) every `[timing] disk_check_secs`, and at once after ingest wrote a
//! sixteenth of the floor; the backlogs are read only while below the floor. Ingest
//! reads the last verdict, so a request costs no system call.

use crate::background::Background;
use crate::model::AccountId;
use crate::store::{Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// The `Retry-After` of a refusal, in seconds: space comes back when a refused
/// account's Splunk takes its backlog or the operator frees the disk, not within
/// moments, so a platform asked to wait retries twice a minute, not in a loop.
pub const RETRY_AFTER_SECS: u64 = 30;

/// Why a check of the reserve failed; the last verdict stands meanwhile.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// `statvfs` of the data directory failed.
    #[error("cannot read the free space of {dir}: {source}")]
    FreeSpace {
        /// The data directory.
        dir: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The accounts' backlogs could not be read.
    #[error("cannot read the accounts' backlogs: {0}")]
    Store(#[from] StoreError),
}

/// The bytes of `dir`'s filesystem an unprivileged writer may still use.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: an all-zero statvfs is a valid value of the plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `st` a valid struct to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Who is refused at one reading of the free space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The accounts refused for their backlog, with their backlog bytes.
    pub refused: BTreeMap<AccountId, u64>,
    /// Below the hard line: every account is refused.
    pub everyone: bool,
}

/// The policy (see the module's documentation): who is refused with `free` bytes
/// free under a floor of `floor`, given each account's backlog bytes.
pub fn decide(free: u64, floor: u64, backlogs: &[(AccountId, u64)]) -> Verdict {
    if floor == 0 || free >= floor {
        return Verdict::default();
    }
    if free < hard_line(floor) {
        return Verdict {
            refused: BTreeMap::new(),
            everyone: true,
        };
    }
    let mut ranked: Vec<&(AccountId, u64)> = backlogs.iter().filter(|(_, b)| *b > 0).collect();
    // Largest first; equal backlogs by name, so the same figures give the same answer.
    ranked.sort_by(|(a, x), (b, y)| y.cmp(x).then_with(|| a.cmp(b)));
    let total: u128 = ranked.iter().map(|(_, b)| u128::from(*b)).sum();
    let mut held: u128 = 0;
    let mut refused = BTreeMap::new();
    for (account, backlog) in ranked {
        if held * 2 >= total {
            break;
        }
        held += u128::from(*backlog);
        refused.insert(account.clone(), *backlog);
    }
    Verdict {
        refused,
        everyone: false,
    }
}

/// Below this many free bytes every account is refused: half the floor, so that
/// refusing the largest backlogs has the upper half of the reserve to work in.
pub fn hard_line(floor: u64) -> u64 {
    floor / 2
}

/// Why one ingest request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Free space is under the floor and the account holds one of the largest backlogs.
    LargestBacklog {
        /// Free bytes at the last reading.
        free: u64,
        /// `min_free_disk_bytes`.
        floor: u64,
        /// The account's backlog bytes at that reading.
        backlog_bytes: u64,
    },
    /// Free space is under the hard line: every account is refused.
    Everyone {
        /// Free bytes at the last reading.
        free: u64,
        /// `min_free_disk_bytes`.
        floor: u64,
    },
}

impl Refusal {
    /// The 503's message for `account`.
    pub fn message(&self, account: &AccountId) -> String {
        match self {
            Refusal::LargestBacklog {
                free,
                floor,
                backlog_bytes,
            } => format!(
                "the free space on siemsync's disk ({free} bytes) is under min_free_disk_bytes ({floor} bytes): ingest is refused first for the accounts holding the largest backlogs, and account {} holds one of them ({backlog_bytes} bytes its Splunk has not received yet); nothing of this request was stored: retry after {RETRY_AFTER_SECS} s (the refusal ends once its Splunk takes the backlog or the disk has room again)",
                account.as_str()
            ),
            Refusal::Everyone { free, floor } => format!(
                "the free space on siemsync's disk ({free} bytes) is under half of min_free_disk_bytes ({floor} bytes): ingest is refused for every account until the disk has room again; nothing of this request was stored: retry after {RETRY_AFTER_SECS} s"
            ),
        }
    }
}

#[derive(Debug, Default)]
struct Reading {
    /// Free bytes at the last successful reading (`None`: none yet).
    free: Option<u64>,
    verdict: Verdict,
    /// The last check's failure, logged once.
    failing: Option<String>,
}

/// The reserve's state, shared by the checker and ingest.
#[derive(Debug)]
pub struct DiskReserve {
    dir: PathBuf,
    floor: u64,
    reading: RwLock<Reading>,
    refusals: Mutex<HashMap<AccountId, u64>>,
    /// Bytes ingest wrote since the last check.
    written: AtomicU64,
    wake: tokio::sync::Notify,
}

impl DiskReserve {
    /// A reserve of `floor` free bytes (0: off) on the filesystem of `dir`; nothing
    /// is refused until the first [`DiskReserve::check`].
    pub fn new(dir: &Path, floor: u64) -> DiskReserve {
        DiskReserve {
            dir: dir.to_owned(),
            floor,
            reading: RwLock::default(),
            refusals: Mutex::default(),
            written: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// `min_free_disk_bytes`.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The free bytes at the last reading, if one succeeded.
    pub fn free(&self) -> Option<u64> {
        read(&self.reading).free
    }

    /// Whether ingest of `account` is refused now, and why; a refusal is counted.
    pub fn refusal(&self, account: &AccountId) -> Option<Refusal> {
        let refusal = self.standing(account)?;
        *lock(&self.refusals).entry(account.clone()).or_default() += 1;
        Some(refusal)
    }

    /// Whether ingest of `account` is refused now, and why (not counted).
    pub fn standing(&self, account: &AccountId) -> Option<Refusal> {
        let r = read(&self.reading);
        let free = r.free?;
        if r.verdict.everyone {
            return Some(Refusal::Everyone {
                free,
                floor: self.floor,
            });
        }
        r.verdict
            .refused
            .get(account)
            .map(|&backlog_bytes| Refusal::LargestBacklog {
                free,
                floor: self.floor,
                backlog_bytes,
            })
    }

    /// Ingest requests of `account` refused for the reserve since the process started.
    pub fn refused_requests(&self, account: &AccountId) -> u64 {
        lock(&self.refusals).get(account).copied().unwrap_or(0)
    }

    /// Every account refused at least once, with its count.
    pub fn refusal_counts(&self) -> Vec<(AccountId, u64)> {
        lock(&self.refusals)
            .iter()
            .map(|(a, n)| (a.clone(), *n))
            .collect()
    }

    /// The accounts refused for their backlog now, and whether everyone is.
    pub fn verdict(&self) -> Verdict {
        read(&self.reading).verdict.clone()
    }

    /// While the free space is under the floor: what `/healthz` says about it.
    pub fn below_floor(&self) -> Option<String> {
        let r = read(&self.reading);
        let free = r.free.filter(|f| *f < self.floor)?;
        Some(if r.verdict.everyone {
            format!(
                "the free space ({free} bytes) is under half of min_free_disk_bytes ({} bytes): ingest is refused for every account",
                self.floor
            )
        } else {
            let who: Vec<&str> = r.verdict.refused.keys().map(AccountId::as_str).collect();
            format!(
                "the free space ({free} bytes) is under min_free_disk_bytes ({} bytes): ingest is refused for the accounts with the largest backlogs: {}",
                self.floor,
                if who.is_empty() { "none holds a backlog".to_owned() } else { who.join(", ") }
            )
        })
    }

    /// Whether every account is refused now (below the hard line).
    pub fn everyone_refused(&self) -> bool {
        read(&self.reading).verdict.everyone
    }

    /// Ingest wrote `bytes`: after a sixteenth of the floor the free space is read
    /// again at once rather than at the next period.
    pub fn wrote(&self, bytes: u64) {
        let step = (self.floor / 16).max(64 * 1024);
        let before = self.written.fetch_add(bytes, Ordering::Relaxed);
        if self.floor > 0 && before < step && before + bytes >= step {
            self.wake.notify_one();
        }
    }

    /// Reads the free space and, below the floor, every account's backlog; decides
    /// who is refused, logging each account that starts or stops being refused.
    /// Blocking: run it off the async workers.
    pub fn check(&self, store: &Store, default_quota: u64) -> Result<(), ReserveError> {
        self.written.store(0, Ordering::Relaxed);
        let result = self.measure(store, default_quota);
        let mut r = write(&self.reading);
        match result {
            Ok((free, verdict)) => {
                if r.failing.take().is_some() {
                    log::info!(
                        "disk reserve: the free space of {} is read again",
                        self.dir.display()
                    );
                }
                self.log_changes(&r.verdict, &verdict, free);
                r.free = Some(free);
                r.verdict = verdict;
                Ok(())
            }
            Err(e) => {
                let text = e.to_string();
                if r.failing.as_deref() != Some(&text) {
                    log::warn!(
                        "disk reserve: {text}; the last verdict stands until it can be read"
                    );
                    r.failing = Some(text);
                }
                Err(e)
            }
        }
    }

    fn measure(&self, store: &Store, default_quota: u64) -> Result<(u64, Verdict), ReserveError> {
        let free = free_bytes(&self.dir).map_err(|source| ReserveError::FreeSpace {
            dir: self.dir.display().to_string(),
            source,
        })?;
        // Above the floor (and below the hard line) nobody's backlog matters: no store reads.
        if self.floor == 0 || free >= self.floor || free < hard_line(self.floor) {
            return Ok((free, decide(free, self.floor, &[])));
        }
        let backlogs = store
            .accounts_with_events()?
            .into_iter()
            .map(|a| {
                let u = crate::retention::usage(store, &a, default_quota)?;
                Ok((a, u.backlog_bytes))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((free, decide(free, self.floor, &backlogs)))
    }

    fn log_changes(&self, old: &Verdict, new: &Verdict, free: u64) {
        let floor = self.floor;
        if new.everyone && !old.everyone {
            log::error!(
                "disk reserve: the free space of {} ({free} bytes) is under half of min_free_disk_bytes ({floor} bytes): ingest is refused with 503 for every account until the disk has room",
                self.dir.display()
            );
        } else if old.everyone && !new.everyone {
            log::warn!(
                "disk reserve: the free space of {} ({free} bytes) is above half of min_free_disk_bytes ({floor} bytes) again: ingest is no longer refused for every account",
                self.dir.display()
            );
        }
        for (account, backlog) in &new.refused {
            if !old.refused.contains_key(account) {
                log::warn!(
                    "disk reserve: the free space ({free} bytes) is under min_free_disk_bytes ({floor} bytes): ingest of account {account} (one of the largest backlogs, {backlog} bytes) is refused with 503"
                );
            }
        }
        for account in old.refused.keys() {
            if !new.refused.contains_key(account) {
                log::info!(
                    "disk reserve: ingest of account {account} is no longer refused (free space {free} bytes, min_free_disk_bytes {floor} bytes)"
                );
            }
        }
    }
}

/// Checks the reserve every `every` (`[timing] disk_check_secs`), and at once when
/// ingest has written a sixteenth of the floor, until stopped.
pub fn spawn(
    reserve: std::sync::Arc<DiskReserve>,
    store: Store,
    default_quota: u64,
    every: Duration,
) -> Background {
    let mut job = Background::new("the disk reserve check");
    job.spawn(move |mut stop| async move {
        loop {
            tokio::select! {
                _ = stop.stopped() => return,
                _ = actix_rt::time::sleep(every) => {}
                _ = reserve.wake.notified() => {}
            }
            let (r, s) = (reserve.clone(), store.clone());
            // A failure is logged by `check`, once; the last verdict stands.
            if let Err(e) =
                actix_web::rt::task::spawn_blocking(move || r.check(&s, default_quota)).await
            {
                log::error!("the disk reserve check stopped: {e}");
            }
        }
    });
    job
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn id(s: &str) -> AccountId {
        AccountId::parse(s).unwrap()
    }

    fn backlogs(v: &[(&str, u64)]) -> Vec<(AccountId, u64)> {
        v.iter().map(|(a, b)| (id(a), *b)).collect()
    }

    fn refused(v: &Verdict) -> Vec<&str> {
        v.refused.keys().map(AccountId::as_str).collect()
    }

    #[test]
    fn above_the_floor_or_with_the_reserve_off_nobody_is_refused() {
        let b = backlogs(&[("down", 900 * MIB), ("ok", 0)]);
        assert_eq!(decide(100 * MIB, 100 * MIB, &b), Verdict::default());
        assert_eq!(decide(5 * MIB, 0, &b), Verdict::default(), "0 turns it off");
    }

    #[test]
    fn below_the_floor_the_largest_backlog_alone_is_refused_when_it_holds_most() {
        let b = backlogs(&[("ok1", MIB), ("down", 900 * MIB), ("ok2", 0)]);
        let v = decide(99 * MIB, 100 * MIB, &b);
        assert_eq!(refused(&v), ["down"]);
        assert_eq!(v.refused[&id("down")], 900 * MIB);
        assert!(!v.everyone);
        // Just above the hard line: still only the largest.
        assert_eq!(refused(&decide(50 * MIB, 100 * MIB, &b)), ["down"]);
    }

    #[test]
    fn below_the_floor_the_largest_are_refused_until_they_hold_half_the_backlog() {
        let b = backlogs(&[("a", 30), ("b", 30), ("c", 30), ("d", 10)]);
        // a+b hold 60 of 100: enough; equal backlogs go by name.
        assert_eq!(refused(&decide(60, 100, &b)), ["a", "b"]);
        let b = backlogs(&[("x", 50), ("y", 30), ("z", 20)]);
        assert_eq!(
            refused(&decide(60, 100, &b)),
            ["x"],
            "exactly half is enough"
        );
    }

    #[test]
    fn an_account_without_a_backlog_is_never_refused_above_the_hard_line() {
        let b = backlogs(&[("a", 0), ("b", 0)]);
        assert_eq!(decide(60, 100, &b), Verdict::default());
        assert_eq!(decide(60, 100, &[]), Verdict::default());
    }

    #[test]
    fn below_half_the_floor_everyone_is_refused() {
        let b = backlogs(&[("down", 900), ("ok", 0)]);
        let v = decide(49, 100, &b);
        assert!(v.everyone);
        assert!(v.refused.is_empty());
        assert!(!decide(50, 100, &b).everyone);
    }

    #[test]
    fn the_free_space_is_measured_from_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_sixteenth_of_the_floor_written_has_the_free_space_read_at_once() {
        use futures_util::FutureExt;
        let dir = tempfile::tempdir().unwrap();
        let r = DiskReserve::new(dir.path(), 16 * MIB);
        r.wrote(MIB - 1);
        assert!(r.wake.notified().now_or_never().is_none(), "not yet");
        r.wrote(1);
        assert!(r.wake.notified().now_or_never().is_some());
        let off = DiskReserve::new(dir.path(), 0);
        off.wrote(u64::MAX / 2);
        assert!(
            off.wake.notified().now_or_never().is_none(),
            "off: no reading needed"
        );
    }

    #[test]
    fn a_refusal_is_counted_and_names_the_floor_and_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A floor above any real disk's free space: below it, with no backlog anywhere.
        let r = DiskReserve::new(dir.path(), u64::MAX);
        assert_eq!(r.standing(&id("a")), None, "nothing before the first check");
        r.check(&store, 1 << 30).unwrap();
        assert!(r.free().is_some());
        assert!(r.everyone_refused(), "u64::MAX / 2 is more than any disk");
        let refusal = r.refusal(&id("a")).unwrap();
        assert!(matches!(refusal, Refusal::Everyone { .. }));
        assert!(refusal.message(&id("a")).contains("min_free_disk_bytes"));
        assert_eq!(r.refused_requests(&id("a")), 1);
        assert_eq!(r.refused_requests(&id("b")), 0);
        assert!(r.below_floor().unwrap().contains("every account"));
        let off = DiskReserve::new(dir.path(), 0);
        off.check(&store, 1 << 30).unwrap();
        assert_eq!(off.standing(&id("a")), None);
        assert_eq!(off.below_floor(), None);
    }
}
