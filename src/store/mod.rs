//! EventStore on sled: the audit log, job snapshots, accounts, integrations and
//! checkpoints. Everything else reaches the data through this module, so the
//! engine can change without touching delivery.

mod accounts;
mod audit;
mod backend;
mod backlog;
mod chunk;
mod dedup;
mod fault;
mod flusher;
mod heads;
mod history;
mod jobs;
mod keys;
mod migrate;
mod pace;
pub mod postgres;
mod registry;
mod reseal;
mod retention;
pub mod secrets;
pub mod sled_export;
#[cfg(test)]
pub(crate) mod testing;
pub mod to_postgres;
mod tokens;

pub use accounts::KnownAccount;
pub use audit::IngestOutcome;
pub use backend::Store;
pub use backlog::Backlog;
pub use chunk::StoredAudit;
pub use heads::Heads;
pub use history::{
    Attempt, OverviewRow, PerSource, SyncError, SyncRecord, SyncResult, SyncSummary,
    HISTORY_MAX_AGE_DAYS, HISTORY_MAX_RECORDS,
};
pub use jobs::StoredJob;
#[cfg(feature = "test-hooks")]
pub use pace::Pace;
pub use registry::{Account, Checkpoint, DeadLetter};
pub use reseal::seal_tokens_at_rest;
pub use retention::{
    AuditSweep, Gap, GapReason, PendingNotice, PostClaim, QuotaDrops, Reader, Readers,
    SourceReaders, Told,
};
pub use tokens::AccountToken;

use flusher::Flusher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// What can go wrong with the store, sorted the way callers act on it: `Gone` and
/// `Changed` are answers about the data; the rest mean the store cannot serve now.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (an I/O error marks the store faulty until the disk recovers).
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// A write could not be made durable.
    #[error("storage could not make the data durable: {0}")]
    Flush(#[from] flusher::FlushError),
    /// A stored record does not decode: named, so it can be found and repaired.
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt {
        /// The record's key, readable.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The integration was deleted meanwhile: nothing was written for it.
    #[error("the integration no longer exists")]
    Gone,
    /// Another write of the integration came first: read it again.
    #[error("the integration was changed by another request meanwhile")]
    Changed,
    /// A HEC token could not be sealed or opened.
    #[error("{0}")]
    Secret(#[from] secrets::SecretError),
    /// The store is failing or being reopened after a fault: retry later.
    #[error("storage is failing: {0}")]
    Unavailable(String),
    /// The rewrite that seals tokens at rest failed (the old store is kept).
    #[error("rewriting the store to seal its HEC tokens failed: {0}")]
    Rewrite(String),
    /// PostgreSQL refused for a reason other than being unreachable (see `PgError`).
    #[error("{0}")]
    Postgres(postgres::PgError),
    /// Not possible on this backend (yet): the message says what and why.
    #[error("{0}")]
    Unsupported(String),
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// The default of the `dedup_window` setting.
pub const DEFAULT_DEDUP_WINDOW: usize = 100_000;

/// How the service opens its store (from the config).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The key sealing HEC tokens at rest; `None` stores them in clear.
    pub secret_key: Option<String>,
    /// sled's page cache, in bytes: bounds the store's memory.
    pub cache_bytes: u64,
    /// Among how many of an account's latest audit events a repeated id is ignored.
    pub dedup_window: usize,
    /// How often the fault watcher checks a failing disk (a healthy one every tenth time).
    pub watch_every: Duration,
}

impl StoreOptions {
    /// How the store is opened for tools and tests: no key, and the defaults of the
    /// service's settings (`cache_mb = 256`, the default dedup window, the watcher
    /// every second).
    pub fn new() -> StoreOptions {
        StoreOptions {
            secret_key: None,
            cache_bytes: 256 << 20,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            watch_every: DEFAULT_WATCH_EVERY,
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// The default period of the fault watcher.
pub const DEFAULT_WATCH_EVERY: Duration = Duration::from_secs(1);

/// The embedded store on sled. Cheap to clone: every clone is the same database.
/// The service reaches it through [`Store`] (see `backend`).
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

/// The open sled database. Swapped for a fresh one when sled has failed (it refuses
/// every write after an I/O error such as a full disk, until it is opened again).
struct Engine {
    db: sled::Db,
    /// Audit log, job snapshots and their indexes (see `keys`).
    events: sled::Tree,
    /// Accounts, integrations, checkpoints.
    registry: sled::Tree,
    flusher: Flusher,
    /// Counts the reopenings: a write made in one engine is not made durable by
    /// flushing another.
    generation: u64,
}

impl Engine {
    fn open(dir: &Path, cache_bytes: Option<u64>, generation: u64) -> Result<Engine, StoreError> {
        let mut config = sled::Config::new().path(dir);
        if let Some(bytes) = cache_bytes {
            config = config.cache_capacity(bytes);
        }
        let db = config.open()?;
        Ok(Engine {
            events: db.open_tree("events")?,
            registry: db.open_tree("registry")?,
            flusher: Flusher::start(db.clone()).map_err(|e| {
                StoreError::Unavailable(format!("cannot start the flush thread: {e}"))
            })?,
            db,
            generation,
        })
    }

    /// Writes and syncs a small record: fails when the disk is full or read-only.
    fn probe(&self) -> Result<(), StoreError> {
        self.registry.insert(
            keys::PROBE,
            &chrono::Utc::now().timestamp_millis().to_be_bytes(),
        )?;
        self.db.flush()?;
        Ok(())
    }
}

/// A tree of the engine, holding the engine while in use: a reopen waits until no
/// operation holds the old one (sled's file lock goes with its last handle).
struct TreeRef {
    tree: sled::Tree,
    _engine: Arc<Engine>,
}

impl std::ops::Deref for TreeRef {
    type Target = sled::Tree;
    fn deref(&self) -> &sled::Tree {
        &self.tree
    }
}

struct Inner {
    dir: PathBuf,
    cache_bytes: Option<u64>,
    /// `None` only for the moment a failed database is being reopened.
    engine: RwLock<Option<Arc<Engine>>>,
    /// Why the store cannot take writes, while it cannot.
    fault: Mutex<Option<String>>,
    /// One writer at a time for sequence assignment; readers never wait on it.
    ingest_lock: Mutex<()>,
    /// How many of an account's latest audit event ids a repeated id is looked for in.
    dedup_window: usize,
    /// Recently active accounts' dedup windows, in memory.
    recent: Mutex<dedup::RecentIds>,
    /// Seals HEC tokens at rest when the operator set a secret key.
    cipher: Option<secrets::TokenCipher>,
    /// The overview's records as last decoded, so that only changed ones are decoded again.
    overview: Mutex<history::OverviewMemo>,
    /// Posts in flight, which retention leaves alone (see `retention`).
    in_flight: Mutex<retention::InFlight>,
    /// Added to sled's id generator, which a rewrite of the store starts again.
    id_floor: u64,
    /// Accounts an ingest found over their backlog quota, for the sweep to see to now.
    sweep_due: retention::SweepDue,
    /// Test builds only: how much slower a test made the store (`pace`).
    #[cfg(feature = "test-hooks")]
    paced: pace::Paced,
}

impl SledStore {
    /// Opens the store as the service runs it: with a secret key, HEC tokens are
    /// sealed at rest. A watcher notices a failing disk and reopens sled once the
    /// fault is gone.
    pub fn open_with_options(dir: &Path, options: &StoreOptions) -> Result<SledStore, StoreError> {
        let mut store = Self::open_with(dir, Some(options.cache_bytes))?;
        let inner = Arc::get_mut(&mut store.inner).expect("just opened");
        inner.cipher = options.secret_key.as_deref().map(secrets::TokenCipher::new);
        inner.dedup_window = options.dedup_window;
        inner.recent = Mutex::new(dedup::RecentIds::new(options.dedup_window));
        store.watch(options.watch_every)?;
        Ok(store)
    }

    /// Opens the store in `dir` with sled's defaults and no fault watcher: for tools
    /// and tests that need no service settings.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        Self::open_with(dir, None)
    }

    fn open_with(dir: &Path, cache_bytes: Option<u64>) -> Result<SledStore, StoreError> {
        reseal::finish_interrupted(dir)?;
        let store = Self::open_engine(dir, cache_bytes)?;
        migrate::audit_chunks(&store)?;
        migrate::stored_bytes(&store)?;
        migrate::job_bytes(&store)?;
        Ok(store)
    }

    /// Opens the store for reading it out (`siemsync migrate --from-sled`) without
    /// changing anything in `dir`: sled's lock is taken first (a running service
    /// holds it), an interrupted token reseal is not finished and an older layout
    /// is not converted; either answers the inner `Err`, saying what to do.
    /// sled's cache is `cache_bytes`: the copy reads each record about once.
    pub fn open_unchanged(
        dir: &Path,
        cache_bytes: u64,
    ) -> Result<Result<SledStore, String>, StoreError> {
        let unfinished = || {
            reseal::interrupted(dir).then(|| {
                "a rewrite sealing its HEC tokens was interrupted: start and stop the service once with this version first".to_owned()
            })
        };
        if let Some(why) = unfinished() {
            return Ok(Err(why));
        }
        let store = Self::open_engine(dir, Some(cache_bytes))?;
        if let Some(why) = unfinished() {
            return Ok(Err(why));
        }
        if !migrate::is_current(&store)? {
            return Ok(Err("it was written by an older version, whose layout this one converts when it starts: start and stop the service once with this version first".to_owned()));
        }
        Ok(Ok(store))
    }

    fn open_engine(dir: &Path, cache_bytes: Option<u64>) -> Result<SledStore, StoreError> {
        let engine = Engine::open(dir, cache_bytes, 0)?;
        let id_floor = id_floor(&engine.registry)?;
        let store = SledStore {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                cache_bytes,
                engine: RwLock::new(Some(Arc::new(engine))),
                fault: Mutex::new(None),
                ingest_lock: Mutex::new(()),
                dedup_window: DEFAULT_DEDUP_WINDOW,
                recent: Mutex::new(dedup::RecentIds::new(DEFAULT_DEDUP_WINDOW)),
                cipher: None,
                overview: Mutex::default(),
                in_flight: Default::default(),
                id_floor,
                sweep_due: Default::default(),
                #[cfg(feature = "test-hooks")]
                paced: Default::default(),
            }),
        };
        Ok(store)
    }

    fn engine(&self) -> Result<Arc<Engine>, StoreError> {
        self.inner
            .engine
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                StoreError::Unavailable(self.fault().unwrap_or_else(|| "reopening".into()))
            })
    }

    fn events(&self) -> Result<TreeRef, StoreError> {
        let engine = self.engine()?;
        Ok(TreeRef {
            tree: engine.events.clone(),
            _engine: engine,
        })
    }

    fn registry(&self) -> Result<TreeRef, StoreError> {
        let engine = self.engine()?;
        Ok(TreeRef {
            tree: engine.registry.clone(),
            _engine: engine,
        })
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, dedup::RecentIds> {
        self.inner.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The one writer's turn: sequence numbers and stored bytes change only under it.
    fn writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .ingest_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until every write made before the call is on disk (shared with concurrent callers).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.flush_since(self.generation()?).await
    }

    /// Which opening of the database writes go to now: take it before a write that
    /// must be acknowledged, and flush with [`Store::flush_since`].
    pub fn generation(&self) -> Result<u64, StoreError> {
        Ok(self.engine()?.generation)
    }

    /// Like `flush`, but fails when the database was reopened since `generation`:
    /// the writes made before may have been lost with the failed one.
    pub async fn flush_since(&self, generation: u64) -> Result<(), StoreError> {
        let engine = self.engine()?;
        if engine.generation != generation {
            return Err(StoreError::Unavailable(
                "the store was reopened after a fault while this request was written; retry".into(),
            ));
        }
        let result = engine.flusher.flush().await.map_err(StoreError::Flush);
        self.noted(result)
    }

    /// Synchronous flush, for shutdown.
    pub fn flush_now(&self) -> Result<(), StoreError> {
        self.engine()?.db.flush()?;
        Ok(())
    }

    /// The bytes sled's files take on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.engine()?.db.size_on_disk()?)
    }
}

/// Where ids start in this database (see [`keys::ID_FLOOR`]).
fn id_floor(registry: &sled::Tree) -> Result<u64, StoreError> {
    let Some(v) = registry.get(keys::ID_FLOOR)? else {
        return Ok(0);
    };
    let floor = <[u8; 8]>::try_from(v.as_ref()).map_err(|_| StoreError::Corrupt {
        key: String::from_utf8_lossy(keys::ID_FLOOR).into_owned(),
        reason: format!("{} bytes where 8 were expected", v.len()),
    })?;
    Ok(u64::from_be_bytes(floor))
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Our own types serialise infallibly (no maps with non-string keys).
    serde_json::to_vec(v).expect("serialising a stored record")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_damaged_id_floor_refuses_to_open_instead_of_reading_as_zero() {
        let (dir, s) = testing::store();
        s.registry()
            .unwrap()
            .insert(keys::ID_FLOOR, &[1u8, 2, 3][..])
            .unwrap();
        s.flush_now().unwrap();
        drop(s);
        // sled lets go of its file lock a moment after the store is dropped.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match SledStore::open(dir.path()) {
                Err(StoreError::Corrupt { key, .. }) => {
                    assert_eq!(key, "idfloor");
                    return;
                }
                Err(e) if Instant::now() < deadline && e.to_string().contains("lock") => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("opening: {e}"),
                Ok(_) => panic!("a damaged id floor was read as 0"),
            }
        }
    }
}
