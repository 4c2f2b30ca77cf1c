//! EventStore on sled: the audit log, job snapshots, accounts, integrations and
//! checkpoints. Everything else reaches the data through this module, so the
//! engine can change without touching delivery.

mod accounts;
mod dedup;
mod events;
mod flusher;
mod history;
mod keys;
mod migrate;
pub mod postgres;
mod registry;
mod reseal;
mod retention;
pub mod secrets;
mod tokens;

pub use accounts::KnownAccount;
pub use events::{Backlog, Heads, IngestOutcome, StoredAudit, StoredJob};
pub use history::{
    Attempt, OverviewRow, PerSource, SyncError, SyncRecord, SyncResult, SyncSummary,
    HISTORY_MAX_AGE_DAYS, HISTORY_MAX_RECORDS,
};
pub use registry::{Account, Checkpoint, DeadLetter};
pub use reseal::seal_tokens_at_rest;
pub use retention::{Gap, PostClaim, Reader, Readers};
pub use tokens::AccountToken;

use flusher::Flusher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("storage could not make the data durable: {0}")]
    Flush(String),
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the integration no longer exists")]
    Gone,
    #[error("the integration was changed by another request meanwhile")]
    Changed,
    #[error("{0}")]
    Secret(String),
    #[error("storage is failing: {0}")]
    Unavailable(String),
    #[error("rewriting the store to seal its HEC tokens failed: {0}")]
    Rewrite(String),
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
    pub secret_key: Option<String>,
    pub cache_bytes: u64,
    /// Among how many of an account's latest audit events a repeated id is ignored.
    pub dedup_window: usize,
}

/// Cheap to clone: every clone is the same database.
#[derive(Clone)]
pub struct Store {
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
            flusher: Flusher::start(db.clone()),
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
}

impl Store {
    /// Opens the store as the service runs it: with a secret key, HEC tokens are
    /// sealed at rest. A watcher notices a failing disk and reopens sled once the
    /// fault is gone.
    pub fn open_with_options(dir: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        let mut store = Self::open_with(dir, Some(options.cache_bytes))?;
        let inner = Arc::get_mut(&mut store.inner).expect("just opened");
        inner.cipher = options.secret_key.as_deref().map(secrets::TokenCipher::new);
        inner.dedup_window = options.dedup_window;
        inner.recent = Mutex::new(dedup::RecentIds::new(options.dedup_window));
        store.watch();
        Ok(store)
    }

    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(dir, None)
    }

    fn open_with(dir: &Path, cache_bytes: Option<u64>) -> Result<Store, StoreError> {
        reseal::finish_interrupted(dir)?;
        let engine = Engine::open(dir, cache_bytes, 0)?;
        let id_floor = id_floor(&engine.registry)?;
        let store = Store {
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
            }),
        };
        migrate::audit_chunks(&store)?;
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

    /// Why the store cannot take writes right now (a full or read-only disk), if so.
    pub fn fault(&self) -> Option<String> {
        self.inner
            .fault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_fault(&self, reason: Option<String>) {
        if reason.is_some() {
            // Writes answered with an error may or may not be on disk: the in-memory
            // dedup windows are read again from what the store really holds.
            self.recent().clear();
        }
        let mut fault = self.inner.fault.lock().unwrap_or_else(|p| p.into_inner());
        match (&*fault, &reason) {
            (None, Some(r)) => log::error!(
                "store: cannot write to {}: {r}; ingest answers 503 and delivery pauses until it can",
                self.inner.dir.display()
            ),
            (Some(_), None) => log::warn!(
                "store: {} takes writes again; ingest and delivery resume",
                self.inner.dir.display()
            ),
            _ => {}
        }
        *fault = reason;
    }

    /// Passes `result` through, noting an I/O failure as the store's fault at once
    /// (the watcher then works on recovering).
    pub fn noted<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e @ (StoreError::Sled(sled::Error::Io(_)) | StoreError::Flush(_))) = &result {
            self.set_fault(Some(e.to_string()));
        }
        result
    }

    /// The watcher: every second while the store is failing (every 10 s otherwise),
    /// checks whether the disk takes writes; once it does again, reopens sled, since
    /// sled refuses writes for good after an I/O error.
    fn watch(&self) {
        let weak = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name("siemsync-store-watch".into())
            .spawn(move || {
                let mut since_probe = 0;
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    let Some(inner) = weak.upgrade() else { return };
                    let store = Store { inner };
                    since_probe += 1;
                    if store.fault().is_some() {
                        store.recover();
                    } else if since_probe >= 10 {
                        since_probe = 0;
                        let probed = store.engine().and_then(|e| e.probe());
                        let _ = store.noted(probed);
                    }
                }
            })
            .expect("spawning the store watcher");
    }

    /// One recovery attempt: if the data dir takes a write again, swap the failed
    /// sled for a freshly opened one. Everything flushed before the fault is kept.
    fn recover(&self) {
        if let Err(e) = disk_takes_writes(&self.inner.dir) {
            self.set_fault(Some(format!(
                "the data directory does not take writes: {e}"
            )));
            return;
        }
        let old = self
            .inner
            .engine
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let generation = old.as_ref().map_or(0, |e| e.generation) + 1;
        if let Some(old) = old {
            // Wait for operations in flight to let go, so that sled's file lock goes too.
            let t0 = std::time::Instant::now();
            while Arc::strong_count(&old) > 1 && t0.elapsed().as_secs() < 5 {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            drop(old);
        }
        // The flush thread lets go of the old database a moment after it is dropped.
        let mut opened = Engine::open(&self.inner.dir, self.inner.cache_bytes, generation);
        for _ in 0..20 {
            if opened.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            opened = Engine::open(&self.inner.dir, self.inner.cache_bytes, generation);
        }
        match opened {
            Ok(engine) => {
                self.recent().clear();
                let healthy = engine.probe();
                *self.inner.engine.write().unwrap_or_else(|p| p.into_inner()) =
                    Some(Arc::new(engine));
                match healthy {
                    Ok(()) => self.set_fault(None),
                    Err(e) => self.set_fault(Some(e.to_string())),
                }
            }
            Err(e) => self.set_fault(Some(format!("reopening the store failed: {e}"))),
        }
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

    pub fn size_on_disk(&self) -> u64 {
        self.engine()
            .ok()
            .and_then(|e| e.db.size_on_disk().ok())
            .unwrap_or(0)
    }
}

/// Where ids start in this database (see [`keys::ID_FLOOR`]).
fn id_floor(registry: &sled::Tree) -> Result<u64, StoreError> {
    Ok(registry
        .get(keys::ID_FLOOR)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// Writes, syncs and removes a small file in `dir`: whether the disk has room and
/// takes writes.
fn disk_takes_writes(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(".siemsync-write-check");
    let result = (|| {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&[0u8; 64 * 1024])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
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
