//! EventStore on sled: the audit log, job snapshots, accounts, integrations and
//! checkpoints. Everything else reaches the data through this module, so the
//! engine can change without touching delivery.

mod events;
mod flusher;
mod keys;
mod registry;
mod retention;
pub mod secrets;
mod tokens;

pub use events::{Backlog, Heads, IngestOutcome, StoredAudit, StoredJob};
pub use registry::{Account, Checkpoint, DeadLetter};
pub use retention::{Gap, Reader};
pub use tokens::AccountToken;

use flusher::Flusher;
use std::path::Path;
use std::sync::{Arc, Mutex};

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
    #[error("{0}")]
    Secret(String),
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

struct Inner {
    db: sled::Db,
    /// Audit log, job snapshots and their indexes (see `keys`).
    events: sled::Tree,
    /// Accounts, integrations, checkpoints.
    registry: sled::Tree,
    /// One writer at a time for sequence assignment; readers never wait on it.
    ingest_lock: Mutex<()>,
    /// How many of an account's latest audit event ids a repeated id is looked for in.
    dedup_window: usize,
    flusher: Flusher,
    /// Seals HEC tokens at rest when the operator set a secret key.
    cipher: Option<secrets::TokenCipher>,
}

impl Store {
    /// Opens the store as the service runs it: with a secret key, HEC tokens are
    /// sealed at rest.
    pub fn open_with_options(dir: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        let mut store =
            Self::open_with(sled::Config::new().path(dir).cache_capacity(options.cache_bytes))?;
        let inner = Arc::get_mut(&mut store.inner).expect("just opened");
        inner.cipher = options.secret_key.as_deref().map(secrets::TokenCipher::new);
        inner.dedup_window = options.dedup_window;
        Ok(store)
    }

    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(sled::Config::new().path(dir))
    }

    fn open_with(config: sled::Config) -> Result<Store, StoreError> {
        let db = config.open()?;
        Ok(Store {
            inner: Arc::new(Inner {
                events: db.open_tree("events")?,
                registry: db.open_tree("registry")?,
                ingest_lock: Mutex::new(()),
                dedup_window: DEFAULT_DEDUP_WINDOW,
                flusher: Flusher::start(db.clone()),
                cipher: None,
                db,
            }),
        })
    }

    /// Waits until every write made before the call is on disk (shared with concurrent callers).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flusher.flush().await.map_err(StoreError::Flush)
    }

    /// Synchronous flush, for shutdown.
    pub fn flush_now(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        Ok(())
    }

    pub fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }
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
