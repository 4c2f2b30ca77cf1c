//! What can go wrong talking to PostgreSQL, sorted the way callers act on it:
//! `Unavailable` (no writable PostgreSQL right now: answer 503, pause delivery,
//! retry) apart from everything else (a bug or bad data: log it, do not retry).

use uuid::Uuid;

/// What went wrong with PostgreSQL (see the module's note on how callers act on it).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No writable PostgreSQL: connection refused or lost, a read-only standby, an
    /// administrator shutdown, a full disk. Callers answer 503 and retry later.
    #[error("PostgreSQL is unavailable: {0}")]
    Unavailable(String),
    /// PostgreSQL answers, but this operation could not get its turn: no pooled
    /// connection came free in time, or the dedup cache was too contended. Retry
    /// (503) like `Unavailable`, but it is no fault of the store: `/healthz` and
    /// ingest carry on.
    #[error("PostgreSQL is busy: {0}")]
    Busy(String),
    /// PostgreSQL refused a statement for another reason (a bug, or a schema that
    /// does not match this build).
    #[error("PostgreSQL error: {0}")]
    Db(String),
    /// A stored record does not decode: named, so it can be found and repaired.
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt {
        /// The record, readable.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The integration was deleted meanwhile: nothing was written for it.
    #[error("the integration no longer exists")]
    Gone,
    /// A HEC token could not be sealed or opened.
    #[error("{0}")]
    Secret(#[from] crate::store::secrets::SecretError),
    /// Compare-and-set on an integration failed: someone changed it meanwhile.
    #[error("integration {id} was changed meanwhile (stored version {actual:?}, expected {expected:?}): read it again and retry")]
    VersionConflict {
        /// The integration.
        id: Uuid,
        /// The version the write was based on (`None`: a new integration).
        expected: Option<u64>,
        /// The version stored (`None`: none is).
        actual: Option<u64>,
    },
    /// A fenced write was refused: this node no longer holds the shard's lease
    /// (it expired, or another node claimed it with a newer epoch).
    #[error("this node ({node}) no longer holds the lease on shard {shard} (epoch {epoch}); another node delivers its integrations now")]
    LeaseLost {
        /// This node.
        node: String,
        /// The shard.
        shard: i32,
        /// The epoch it held.
        epoch: i64,
    },
    /// Another process runs under this node's name (its heartbeat is live, under
    /// another instance id): both would hold the same leases and deliver and
    /// commit the same integrations.
    #[error("another process runs as node {node} on this database (its heartbeat is live): each process needs a node_name of its own (SIEMSYNC_NODE_NAME). A process that stopped cleanly frees its name at once; one that was killed frees it when its heartbeat lapses (the lease time, {lease_secs} s)")]
    NameInUse {
        /// The name.
        node: String,
        /// The lease time, after which a killed process's name is free.
        lease_secs: f64,
    },
    /// A copy into PostgreSQL (`siemsync migrate`) found other data under the same
    /// ids than it is copying: what, named.
    #[error("PostgreSQL already holds different data for {0}")]
    Differs(String),
    /// `siemsync migrate --from-sled` into this database has not finished: a node
    /// starting now would give out sequences and ids the copy is still writing.
    #[error("a migrate from sled is under way or was interrupted: run it again to finish (siemsync migrate --from-sled DIR --to-postgres URL, the same directory); nodes start once it is done")]
    ImportUnfinished,
    /// The schema could not be brought to this build's version.
    #[error("database schema: {0}")]
    Schema(String),
    /// `postgres_url` does not parse.
    #[error("invalid postgres_url: {0}")]
    Config(String),
}

impl PgError {
    /// Whether the caller should answer 503 / pause and retry (nothing is wrong
    /// with the request, PostgreSQL cannot take it right now).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, PgError::Unavailable(_) | PgError::Busy(_))
    }
}

/// SQLSTATEs that mean "no writable PostgreSQL here right now".
fn unavailable_state(code: &str) -> bool {
    // 08: connection exception; 53: insufficient resources (disk full, out of
    // memory, too many connections); 57P01-03: administrator / crash shutdown,
    // cannot connect now; 25006: read-only transaction (a standby); 58030: I/O error;
    // 40001 / 40P01 would be retryable too, but our transactions take their locks
    // in one order and run at READ COMMITTED, so they do not arise.
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "25006" | "58030")
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> PgError {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let text = format!("{} (SQLSTATE {code})", db.message());
            return if unavailable_state(code) {
                PgError::Unavailable(text)
            } else if matches!(code, "55P03" | "57014" | "25P03") {
                // A lock, statement or idle-in-transaction timeout (the lease
                // rounds set all three): a stalled transaction elsewhere or a
                // round slowed by load, not an outage; retried.
                PgError::Busy(text)
            } else {
                PgError::Db(text)
            };
        }
        // Without a SQLSTATE: the connection closed, an I/O error, a timeout or a
        // failed connect — all of them "cannot reach a working server".
        let source = std::error::Error::source(&e);
        let io = source.is_some_and(|s| s.is::<std::io::Error>());
        // "error connecting to server" alone does not say why: add the cause
        // ("Connection refused", a timeout). It never holds the URL.
        let text = match source {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        };
        if e.is_closed() || io || text.contains("connect") || text.contains("does not allow writes")
        {
            PgError::Unavailable(text)
        } else {
            PgError::Db(text)
        }
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> PgError {
        use deadpool_postgres::PoolError;
        match e {
            // Making a connection failed: every configured host refused, or only a
            // read-only standby answered.
            PoolError::Backend(e) => match PgError::from(e) {
                PgError::Db(text) => PgError::Unavailable(text),
                other => other,
            },
            // Every pooled connection is in use (contention, not an outage).
            PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                PgError::Busy("no pooled connection came free within the timeout".into())
            }
            // Connecting, or checking a connection, took too long: no server reached.
            PoolError::Timeout(kind) => {
                PgError::Unavailable(format!("no connection within the timeout ({kind:?})"))
            }
            PoolError::Closed => PgError::Unavailable("the connection pool is closed".into()),
            other => PgError::Unavailable(other.to_string()),
        }
    }
}

/// A stored JSON document that does not read back: names the record.
pub(super) fn corrupt(key: impl std::fmt::Display, e: impl std::fmt::Display) -> PgError {
    PgError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_a_pooled_connection_is_busy_not_unavailable() {
        use deadpool_postgres::{PoolError, TimeoutType};
        let busy = PgError::from(PoolError::Timeout(TimeoutType::Wait));
        assert!(matches!(busy, PgError::Busy(_)), "{busy:?}");
        assert!(busy.is_unavailable(), "callers still answer 503 and retry");
        for kind in [TimeoutType::Create, TimeoutType::Recycle] {
            let e = PgError::from(PoolError::Timeout(kind));
            assert!(matches!(e, PgError::Unavailable(_)), "{e:?}");
        }
    }

    #[test]
    fn only_states_of_a_missing_or_read_only_server_count_as_unavailable() {
        for code in [
            "08006", "08001", "57P01", "57P03", "25006", "53100", "53300", "58030",
        ] {
            assert!(unavailable_state(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02", "23514", "40001"] {
            assert!(!unavailable_state(code), "{code}");
        }
    }
}
