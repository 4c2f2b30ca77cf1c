//! Sync history on PostgreSQL: the same records, pruning and summary as the
//! embedded store's (`crate::store::history`), kept in `sync_history` and
//! `sync_summaries`, so that whichever node delivers an integration next finds its
//! history, and a deleted integration takes its history with it (`ON DELETE CASCADE`).

use super::error::{corrupt, PgError};
use super::{to_i64, to_u64, PgStore, Shared};
use crate::model::AccountId;
use crate::store::history::history_cutoff;
use crate::store::{Attempt, OverviewRow, SyncRecord, SyncSummary, HISTORY_MAX_RECORDS};
use chrono::{DateTime, SubsecRound, Utc};
use std::sync::Arc;
use uuid::Uuid;

/// The first key of the advisory lock that serialises one integration's records
/// (the two-key form: a key space apart from the migration lock's).
const LOCK_CLASS: i32 = 0x7379_6e63; // "sync"

/// The second key: the integration's id folded into 32 bits (two integrations that
/// share one merely wait for each other).
fn lock_key(id: &Uuid) -> i32 {
    let b = id.as_bytes();
    let words = b
        .chunks_exact(4)
        .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    words.fold(0, |acc, w| acc ^ w)
}

fn to_doc(record: &SyncRecord) -> Result<serde_json::Value, PgError> {
    serde_json::to_value(record).map_err(|e| corrupt("a sync record", e))
}

fn from_doc<T: serde::de::DeserializeOwned>(
    what: &str,
    id: &Uuid,
    doc: serde_json::Value,
) -> Result<T, PgError> {
    serde_json::from_value(doc).map_err(|e| corrupt(format!("{what} of integration {id}"), e))
}

/// A summary row: `first_seq, next_seq, last, last_success, last_attempt` from `at`.
fn summary_of(
    id: &Uuid,
    row: &tokio_postgres::Row,
    at: usize,
) -> Result<Option<SyncSummary>, PgError> {
    let Some(last) = row.get::<_, Option<serde_json::Value>>(at + 2) else {
        return Ok(None);
    };
    let attempt: Option<serde_json::Value> = row.get(at + 4);
    Ok(Some(SyncSummary::stored(
        to_u64(row.get(at)),
        to_u64(row.get(at + 1)),
        from_doc("the latest sync", id, last)?,
        row.get(at + 3),
        attempt
            .map(|a| from_doc::<Attempt>("the latest attempt", id, a))
            .transpose()?,
    )))
}

/// Takes the integration's record lock and reads its summary so far; `Gone` when
/// the integration is deleted.
async fn lock_for_record(
    tx: &tokio_postgres::Transaction<'_>,
    account: &AccountId,
    id: &Uuid,
) -> Result<Option<SyncSummary>, PgError> {
    // While a shard changes hands two nodes may record for one integration: they
    // take turns, so each sequence number is used once.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_CLASS, &lock_key(id)],
    )
    .await?;
    // Share-locked until the commit: a delete waits for this record and then
    // removes it with the rest; a record after a delete finds nothing.
    let exists = tx
        .query_opt(
            "SELECT 1 FROM integrations WHERE id = $1 AND account = $2 FOR SHARE",
            &[id, &account.as_str()],
        )
        .await?;
    if exists.is_none() {
        return Err(PgError::Gone);
    }
    let before = match tx
        .query_opt(
            "SELECT first_seq, next_seq, last, last_success, last_attempt
                 FROM sync_summaries WHERE integration = $1",
            &[id],
        )
        .await?
    {
        Some(row) => summary_of(id, &row, 0)?,
        None => None,
    };
    Ok(before)
}

/// Writes the integration's summary after a record: sequence range, latest sync,
/// latest success and latest attempt.
async fn write_summary(
    tx: &tokio_postgres::Transaction<'_>,
    id: &Uuid,
    first: i64,
    next: u64,
    summary: &SyncSummary,
) -> Result<(), PgError> {
    let attempt = summary
        .last_attempt
        .as_ref()
        .map(|a| serde_json::to_value(a).map_err(|e| corrupt("a sync attempt", e)))
        .transpose()?;
    tx.execute(
            "INSERT INTO sync_summaries AS s (integration, first_seq, next_seq, last, last_success, last_attempt)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (integration) DO UPDATE SET first_seq = excluded.first_seq,
               next_seq = excluded.next_seq, last = excluded.last,
               last_success = excluded.last_success, last_attempt = excluded.last_attempt",
            &[
                id,
                &first,
                &to_i64(next),
                &to_doc(&summary.last)?,
                &summary.last_success,
                &attempt,
            ],
        )
        .await?;
    Ok(())
}

impl Shared {
    async fn record_sync(
        &self,
        account: &AccountId,
        id: Uuid,
        record: &SyncRecord,
    ) -> Result<(), PgError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let before = lock_for_record(&tx, account, &id).await?;
        let seq = before.as_ref().map_or(0, |s| s.seqs().1);
        let next = seq + 1;
        tx.execute(
            "INSERT INTO sync_history (integration, seq, started_at, doc) VALUES ($1, $2, $3, $4)",
            &[&id, &to_i64(seq), &record.started_at, &to_doc(record)?],
        )
        .await?;
        // The new record stays; older ones go beyond the count or the age limit.
        tx.execute(
            "DELETE FROM sync_history WHERE integration = $1 AND seq < $2
               AND (seq <= $2 - $3 OR started_at < $4)",
            &[
                &id,
                &to_i64(seq),
                &to_i64(HISTORY_MAX_RECORDS),
                &history_cutoff(),
            ],
        )
        .await?;
        let first: i64 = tx
            .query_one(
                "SELECT min(seq) FROM sync_history WHERE integration = $1",
                &[&id],
            )
            .await?
            .get::<_, Option<i64>>(0)
            .unwrap_or(to_i64(seq));
        let summary = SyncSummary::following(before, record, to_u64(first), next);
        write_summary(&tx, &id, first, next, &summary).await?;
        tx.commit().await?;
        Ok(())
    }
}

impl PgStore {
    /// Records a sync that ended, pruning what is too old (7 days) or too many
    /// (2,000), only while the integration exists (`Gone` otherwise). Durable when it
    /// returns.
    pub async fn record_sync(
        &self,
        account: &AccountId,
        id: &Uuid,
        record: &SyncRecord,
    ) -> Result<(), PgError> {
        // Kept to the microsecond, as PostgreSQL and the embedded store keep times.
        let record = SyncRecord {
            started_at: record.started_at.trunc_subsecs(6),
            ..record.clone()
        };
        let (account, id) = (account.clone(), *id);
        self.run_write(move |s| async move { s.record_sync(&account, id, &record).await })
            .await
    }

    /// An integration's syncs that started at or after `since`, newest first, at most `limit`.
    pub async fn history(
        &self,
        id: &Uuid,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SyncRecord>, PgError> {
        let id = *id;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // "Since the beginning" arrives as chrono's earliest time, which PostgreSQL's
        // timestamptz cannot hold; no kept sync started before 1970.
        let since = since.max(DateTime::UNIX_EPOCH);
        self.run(move |s| async move {
            s.pool
                .get()
                .await?
                .query(
                    "SELECT doc FROM sync_history WHERE integration = $1 AND started_at >= $2
                     ORDER BY seq DESC LIMIT $3",
                    &[&id, &since, &limit],
                )
                .await?
                .into_iter()
                .map(|r| from_doc("a sync record", &id, r.get(0)))
                .collect()
        })
        .await
    }

    /// The integration's summary: its latest sync and last sync without an error.
    pub async fn sync_summary(&self, id: &Uuid) -> Result<Option<SyncSummary>, PgError> {
        let id = *id;
        self.run(move |s| async move {
            match s
                .pool
                .get()
                .await?
                .query_opt(
                    "SELECT first_seq, next_seq, last, last_success, last_attempt
                     FROM sync_summaries WHERE integration = $1",
                    &[&id],
                )
                .await?
            {
                Some(row) => summary_of(&id, &row, 0),
                None => Ok(None),
            }
        })
        .await
    }

    /// Every integration of every account with its summary, for the overview: one
    /// query, no token opened.
    pub async fn overview_rows(&self) -> Result<Vec<OverviewRow>, PgError> {
        self.run(|s| async move {
            let rows = s
                .pool
                .get()
                .await?
                .query(
                    "SELECT i.id, i.account, i.doc ->> 'name', (i.doc ->> 'enabled')::boolean,
                       coalesce((i.doc ->> 'file_managed')::boolean, false),
                       coalesce(a.siem_enabled, false),
                       m.first_seq, m.next_seq, m.last, m.last_success, m.last_attempt
                     FROM integrations i
                     LEFT JOIN accounts a ON a.account = i.account
                     LEFT JOIN sync_summaries m ON m.integration = i.id
                     ORDER BY i.created_at, i.id",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let id: Uuid = r.get(0);
                    let account: String = r.get(1);
                    let account = AccountId::parse(&account)
                        .map_err(|e| corrupt(format!("the account of integration {id}"), e))?;
                    let name: Option<String> = r.get(2);
                    let enabled: Option<bool> = r.get(3);
                    let (Some(name), Some(enabled)) = (name, enabled) else {
                        return Err(corrupt(
                            format!("integration {id}"),
                            "no name or no enabled flag",
                        ));
                    };
                    let (file_managed, feature_on): (bool, bool) = (r.get(4), r.get(5));
                    Ok(OverviewRow {
                        id,
                        account,
                        name,
                        enabled,
                        active: enabled && (file_managed || feature_on),
                        summary: summary_of(&id, r, 6)?.map(Arc::new),
                    })
                })
                .collect()
        })
        .await
    }
}
