//! Accounts, integrations (versioned, compare-and-set, tokens sealed), checkpoints
//! with their fenced commit, dead letters, replays, gaps, connection reports and
//! the delivery status a node publishes for the integrations it runs.

use super::super::secrets;
use super::error::{corrupt, PgError};
use super::leases::Fence;
use super::notify::{notify_in, ControlAction, ControlEvent, CONTROL_CHANNEL};
use super::partitions::gap_of;
use super::{to_i64, to_u64, PgStore, Shared};
use crate::model::{AccountId, Integration, Source};
use crate::store::{Account, Checkpoint, DeadLetter, Gap};
use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

/// One integration as the control re-read sees it (`PgStore::integration_stamps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationStamp {
    /// The integration.
    pub id: Uuid,
    /// Its account.
    pub account: AccountId,
    /// Its stored version.
    pub version: u64,
    /// Whether it should be delivering (where its shard is held).
    pub active: bool,
}

/// A stored value with its version (integrations: grows by one on every change).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version: the next write is made only over it.
    pub version: u64,
}

/// What a write of an integration expects to find: the compare of compare-and-set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// A new integration: no integration with its id exists.
    New,
    /// The integration as read at this version.
    Version(u64),
    /// Whatever is stored (the config file's integrations, which it owns).
    Any,
}

/// Which integrations a listing reads.
enum Which {
    All,
    Account(String),
    Shards(Vec<i32>),
}

/// What the node delivering an integration last published about it.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedStatus {
    /// The node that published it.
    pub node: String,
    /// When.
    pub observed_at: DateTime<Utc>,
    /// How long ago, by PostgreSQL's clock (so the nodes' clocks need not agree).
    pub age_secs: f64,
    /// The status it published, as the API shows it.
    pub status: serde_json::Value,
    /// Whether that node still holds the integration's shard under a live lease
    /// (read with the record): a record left by a node that lost the shard, and
    /// not yet replaced by its new holder's, is no answer.
    pub by_holder: bool,
}

fn to_doc<T: Serialize>(v: &T) -> serde_json::Value {
    // Our own types serialise infallibly (no maps with non-string keys).
    serde_json::to_value(v).expect("serialising a stored record")
}

fn from_doc<T: DeserializeOwned>(
    key: impl std::fmt::Display,
    doc: serde_json::Value,
) -> Result<T, PgError> {
    serde_json::from_value(doc).map_err(|e| corrupt(key, e))
}

impl Shared {
    fn seal(&self, it: &Integration) -> Result<Integration, PgError> {
        Ok(match &self.cipher {
            Some(c) => Integration {
                hec_token: c.seal(&it.hec_token, it.id.as_bytes())?,
                ..it.clone()
            },
            None => it.clone(),
        })
    }

    fn open(
        &self,
        doc: serde_json::Value,
        version: i64,
    ) -> Result<Versioned<Integration>, PgError> {
        let mut it: Integration = from_doc("an integration", doc)?;
        if secrets::is_sealed(&it.hec_token) {
            let c = self
                .cipher
                .as_ref()
                .ok_or(PgError::Secret(secrets::SecretError::NoKey("PostgreSQL")))?;
            it.hec_token = c.open(&it.hec_token, it.id.as_bytes())?;
        }
        Ok(Versioned {
            value: it,
            version: to_u64(version),
        })
    }

    async fn put_integration(&self, it: &Integration, expected: Expected) -> Result<u64, PgError> {
        let doc = to_doc(&self.seal(it)?);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let current: Option<i64> = tx
            .query_opt(
                "SELECT version FROM integrations WHERE id = $1 FOR UPDATE",
                &[&it.id],
            )
            .await?
            .map(|r| r.get(0));
        let conflict = || PgError::VersionConflict {
            id: it.id,
            expected: match expected {
                Expected::Version(v) => Some(v),
                _ => None,
            },
            actual: current.map(to_u64),
        };
        let version = match (expected, current) {
            (Expected::New, Some(_)) => return Err(conflict()),
            (Expected::Version(_), None) => return Err(PgError::Gone),
            (Expected::Version(v), Some(c)) if to_i64(v) != c => return Err(conflict()),
            (_, None) => {
                // An insert racing another insert of the same id: the primary key decides.
                let n = tx
                    .execute(
                        "INSERT INTO integrations (id, account, shard, version, created_at, doc)
                         VALUES ($1, $2, $3, 1, $4, $5) ON CONFLICT (id) DO NOTHING",
                        &[
                            &it.id,
                            &it.account.as_str(),
                            &self.shard_of(&it.id),
                            &it.created_at,
                            &doc,
                        ],
                    )
                    .await?;
                if n == 0 {
                    return Err(conflict());
                }
                1
            }
            (_, Some(c)) => {
                tx.execute(
                    "UPDATE integrations SET version = $2, doc = $3 WHERE id = $1",
                    &[&it.id, &(c + 1), &doc],
                )
                .await?;
                c + 1
            }
        };
        let version = to_u64(version);
        notify_in(
            &tx,
            &ControlEvent {
                integration: it.id,
                account: it.account.clone(),
                shard: self.shard_of(&it.id),
                action: ControlAction::Changed { version },
            },
        )
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    async fn commit(
        &self,
        account: &AccountId,
        id: Uuid,
        cp: &Checkpoint,
        dead: &[DeadLetter],
        fence: &Fence,
        posted: &Posted,
    ) -> Result<Checkpoint, PgError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Prepared once per connection (parsing each statement again was a visible
        // part of PostgreSQL's time per post).
        let (lease, shard, upsert) = futures_util::future::try_join3(
            tx.prepare_cached(LEASE_HELD),
            tx.prepare_cached(SHARD_OF),
            tx.prepare_cached(MOVE_CHECKPOINT),
        )
        .await?;
        let checkpoint = match posted {
            Some((source, _)) => Some(tx.prepare_cached(stored_checkpoint_sql(*source)).await?),
            None => None,
        };
        // Where the stored checkpoint of the post's source stood before the move
        // (0: none stored), its row locked (see `uncount_delivered`).
        let before = async {
            match &checkpoint {
                Some(statement) => tx
                    .query_opt(statement, &[&id])
                    .await
                    .map(|r| r.map_or(0, |r| to_u64(r.get(0)))),
                None => Ok(0),
            }
        };
        // The fence's two checks, the read of the checkpoint as stored and the move
        // are sent together (pipelined: one round trip, not four) and run in this
        // order. The move is kept only when both checks passed: otherwise the
        // transaction is rolled back (dropped uncommitted), so a node that lost its
        // lease still moves nothing. The checks lock their rows before the move as
        // `fenced` does.
        let (held, in_shard, before, moved) = futures_util::future::join4(
            tx.query_opt(&lease, &[&fence.shard, &fence.node, &fence.epoch]),
            tx.query_opt(&shard, &[&id, &account.as_str()]),
            before,
            // While a restarted actor's predecessor finishes its last post, both may
            // commit under the same lease: neither may move a cursor or a count
            // backwards. The commit's log row (with the lease) is written by the
            // same statement.
            tx.query_one(
                &upsert,
                &[
                    &id,
                    &to_i64(cp.audit_seq),
                    &to_i64(cp.job_seq),
                    &to_i64(cp.delivered_audit),
                    &to_i64(cp.delivered_jobs),
                    &cp.last_success,
                    &fence.node,
                    &fence.shard,
                    &fence.epoch,
                ],
            ),
        )
        .await;
        // The first failure in the order the statements ran is the cause; the
        // later ones only report the aborted transaction.
        fence_verdict(id, fence, held?, in_shard?)?;
        let before = before?;
        let row = moved?;
        // What the post delivered past the checkpoint as it was stored: a second
        // commit of the same post (a restarted actor's predecessor finishing)
        // takes nothing out twice. Taken out of the quota's gap in a statement of
        // its own, after the move (see `uncount_delivered`).
        if let Some((source, seqs)) = posted {
            let delivered: Vec<i64> = seqs
                .iter()
                .filter(|s| **s > before)
                .map(|s| to_i64(*s))
                .collect();
            uncount_delivered(&tx, account, id, *source, &delivered).await?;
        }
        for d in dead {
            tx.execute(
                "INSERT INTO dead_letters (integration, id, doc) VALUES ($1, $2, $3)
                 ON CONFLICT (integration, id) DO NOTHING",
                &[&id, &to_i64(d.id), &to_doc(d)],
            )
            .await?;
        }
        let merged = checkpoint_of(&row);
        tx.commit().await?;
        Ok(merged)
    }
}

/// The events a checkpoint commit delivered: their source and sequences.
pub type Posted = Option<(Source, Vec<u64>)>;

/// Reads the integration's stored checkpoint of `source` and locks its row, as the
/// sweep share-locks it while it counts.
fn stored_checkpoint_sql(source: Source) -> &'static str {
    match source {
        Source::Audit => "SELECT audit_seq FROM checkpoints WHERE integration = $1 FOR UPDATE",
        Source::Jobs => "SELECT job_seq FROM checkpoints WHERE integration = $1 FOR UPDATE",
    }
}

/// Takes the events a post delivered (`seqs`, past the checkpoint as stored before the move) out of the
/// integration's `backlog_quota` gap where a sweep counted them: the post was in
/// flight (on this node) when a sweep (on any node) dropped them from the store.
/// Runs after the checkpoint upsert, in a statement of its own: the sweep
/// share-locks the checkpoint row (making it for an integration that never
/// committed), so the upsert waits for a sweep under way, and this statement then
/// sees what it dropped. Either the sweep counted from this commit's checkpoint,
/// or this commit sees what the sweep dropped.
async fn uncount_delivered(
    tx: &tokio_postgres::Transaction<'_>,
    account: &AccountId,
    id: Uuid,
    source: Source,
    seqs: &[i64],
) -> Result<(), PgError> {
    let (Some(low), Some(high)) = (seqs.iter().min(), seqs.iter().max()) else {
        return Ok(());
    };
    tx.execute(
        "WITH r AS (SELECT first_seq, last_seq FROM quota_dropped
                    WHERE account = $1 AND source = $3 AND first_seq <= $5 AND last_seq >= $4),
              hit AS (SELECT count(*) AS n FROM unnest($6::int8[]) AS s
                      WHERE EXISTS (SELECT 1 FROM r WHERE s BETWEEN r.first_seq AND r.last_seq))
         UPDATE gaps g SET count = greatest(g.count - hit.n, 0) FROM hit
         WHERE hit.n > 0 AND g.integration = $2 AND g.source = $3 AND g.reason = 'backlog_quota'",
        &[&account.as_str(), &id, &source.as_str(), low, high, &seqs],
    )
    .await?;
    Ok(())
}

/// Whether `fence` still holds: selects the lease row while it does, and
/// key-share-locks it until the transaction ends. The lease row is key-share-locked
/// until the commit: a node claiming (or handing back) the shard locks it FOR
/// UPDATE and so waits for this commit to end (or skips the shard), and a commit
/// after a claim sees the new epoch. Either way no two owners ever commit for one
/// shard at once. The holder's renewals change no key column and are not held up
/// by its commits.
const LEASE_HELD: &str = "SELECT 1 FROM shard_leases
     WHERE shard = $1 AND owner = $2 AND epoch = $3 AND expires_at > clock_timestamp()
     FOR KEY SHARE";

/// The shard of a stored integration of the account, share-locked until the
/// transaction ends (no delete or move under a commit).
const SHARD_OF: &str = "SELECT shard FROM integrations WHERE id = $1 AND account = $2 FOR SHARE";

/// Moves a checkpoint, never backwards, and logs the commit with its lease
/// (`checkpoint_commits`: who moved which checkpoint under which epoch); answers
/// the checkpoint as stored.
const MOVE_CHECKPOINT: &str = "WITH c AS (
       INSERT INTO checkpoints AS c (integration, audit_seq, job_seq, delivered_audit, delivered_jobs, last_success)
       VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (integration) DO UPDATE SET
         audit_seq = greatest(c.audit_seq, excluded.audit_seq),
         job_seq = greatest(c.job_seq, excluded.job_seq),
         delivered_audit = greatest(c.delivered_audit, excluded.delivered_audit),
         delivered_jobs = greatest(c.delivered_jobs, excluded.delivered_jobs),
         last_success = greatest(c.last_success, excluded.last_success)
       RETURNING audit_seq, job_seq, delivered_audit, delivered_jobs, last_success
     ), logged AS (
       INSERT INTO checkpoint_commits (integration, node, shard, epoch, audit_seq, job_seq)
       SELECT $1, $7::text, $8::integer, $9::bigint, audit_seq, job_seq FROM c
     )
     SELECT audit_seq, job_seq, delivered_audit, delivered_jobs, last_success FROM c";

/// Whether this node may commit for integration `id` of `account` under `fence`: it
/// still holds the lease on the integration's shard, and the integration (still
/// stored) is in that shard. Locks both rows until the transaction ends.
async fn fenced(
    tx: &deadpool_postgres::Transaction<'_>,
    account: &AccountId,
    id: Uuid,
    fence: &Fence,
) -> Result<(), PgError> {
    let lease = tx.prepare_cached(LEASE_HELD).await?;
    let held = tx
        .query_opt(&lease, &[&fence.shard, &fence.node, &fence.epoch])
        .await?;
    let shard = tx.prepare_cached(SHARD_OF).await?;
    let stored = tx.query_opt(&shard, &[&id, &account.as_str()]).await?;
    fence_verdict(id, fence, held, stored)
}

/// The fence's verdict from its two reads (`LEASE_HELD`, `SHARD_OF`).
fn fence_verdict(
    id: Uuid,
    fence: &Fence,
    held: Option<tokio_postgres::Row>,
    stored: Option<tokio_postgres::Row>,
) -> Result<(), PgError> {
    if held.is_none() {
        return Err(PgError::LeaseLost {
            node: fence.node.clone(),
            shard: fence.shard,
            epoch: fence.epoch,
        });
    }
    match stored.map(|r| r.get::<_, i32>(0)) {
        None => Err(PgError::Gone),
        Some(s) if s != fence.shard => Err(PgError::Db(format!(
            "integration {id} is in shard {s}, not in the fencing shard {}",
            fence.shard
        ))),
        Some(_) => Ok(()),
    }
}

/// `Gone` unless integration `id` is stored: why a write for it wrote nothing.
async fn gone_unless_stored(client: &tokio_postgres::Client, id: Uuid) -> Result<(), PgError> {
    match client
        .query_opt("SELECT 1 FROM integrations WHERE id = $1", &[&id])
        .await?
    {
        Some(_) => Ok(()),
        None => Err(PgError::Gone),
    }
}

fn checkpoint_of(row: &tokio_postgres::Row) -> Checkpoint {
    Checkpoint {
        audit_seq: to_u64(row.get(0)),
        job_seq: to_u64(row.get(1)),
        delivered_audit: to_u64(row.get(2)),
        delivered_jobs: to_u64(row.get(3)),
        last_success: row.get(4),
    }
}

/// The account record in `row`'s columns from `at` on: siem_enabled, updated_at,
/// ingest_events_per_sec, ingest_burst, max_backlog_bytes.
pub(super) fn account_of(r: &tokio_postgres::Row, at: usize) -> Account {
    Account {
        siem_enabled: r.get(at),
        updated_at: r.get(at + 1),
        ingest_events_per_sec: r.get::<_, Option<i64>>(at + 2).map(|v| v as u64),
        ingest_burst: r.get::<_, Option<i64>>(at + 3).map(|v| v as u64),
        max_backlog_bytes: r.get::<_, Option<i64>>(at + 4).map(|v| v as u64),
    }
}

/// When a replay record may be written over the stored one (SQL, in an upsert's
/// `DO UPDATE … WHERE`): the same replay (`progress.id`) while it runs — once it
/// ended (done, failed, or cancelled: a cancel made on another node is final,
/// though the actor running the replay here may record once more before it hears
/// of it) no late write of it changes the record — or another replay unless the
/// stored one is `running` (a replay asked for on another node, not yet picked up
/// here, is not overwritten by a late write of the one it replaces).
macro_rules! replay_write_allowed {
    () => {
        "(replays.doc->'progress'->>'id' IS NOT DISTINCT FROM excluded.doc->'progress'->>'id'
           AND coalesce(replays.doc->'progress'->>'state', '') NOT IN ('done', 'failed', 'cancelled'))
         OR (replays.doc->'progress'->>'id' IS DISTINCT FROM excluded.doc->'progress'->>'id'
           AND replays.doc->'progress'->>'state' IS DISTINCT FROM 'running')"
    };
}

/// Publishes statuses (`$1` ids, `$2` their documents, `$3` this node): only for the
/// integrations that exist and whose shard this node holds under a live lease, so
/// that a node that lost a shard (paused past its lease, then resumed, before its
/// lease loop noticed) never overwrites the status its new holder publishes.
const PUBLISH_HELD: &str = "INSERT INTO delivery_status (integration, node, observed_at, doc)
     SELECT u.id, $3, now(), u.doc FROM unnest($1::uuid[], $2::jsonb[]) AS u(id, doc)
     JOIN integrations i ON i.id = u.id
     JOIN shard_leases l ON l.shard = i.shard AND l.owner = $3
       AND l.expires_at > clock_timestamp()
     ON CONFLICT (integration) DO UPDATE SET node = excluded.node,
       observed_at = excluded.observed_at, doc = excluded.doc";

/// The integrations whose replay record says running: the condition is the
/// predicate of the partial index `replays_running` (migration 7), which only a
/// query with the same expression can use.
pub const RUNNING_REPLAYS_QUERY: &str =
    "SELECT integration FROM replays WHERE doc->'progress'->>'state' = 'running'";

impl PgStore {
    /// Sets an account's feature switch (the platform's call).
    pub async fn put_account(&self, id: &AccountId, account: &Account) -> Result<(), PgError> {
        let (id, account) = (id.clone(), account.clone());
        self.run_write(move |s| async move {
            let mut client = s.pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO accounts (account, siem_enabled, updated_at,
                       ingest_events_per_sec, ingest_burst, max_backlog_bytes)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (account) DO UPDATE SET siem_enabled = excluded.siem_enabled,
                       updated_at = excluded.updated_at,
                       ingest_events_per_sec = excluded.ingest_events_per_sec,
                       ingest_burst = excluded.ingest_burst,
                       max_backlog_bytes = excluded.max_backlog_bytes",
                &[
                    &id.as_str(),
                    &account.siem_enabled,
                    &account.updated_at,
                    &account.ingest_events_per_sec.map(to_bigint),
                    &account.ingest_burst.map(to_bigint),
                    &account.max_backlog_bytes.map(to_bigint),
                ],
            )
            .await?;
            // Every node running one of the account's integrations starts or stops
            // it at once (`ControlAction::AccountChanged`, one notification per
            // integration, sent when this commits), not at its next re-read.
            tx.execute(
                "SELECT pg_notify($1, json_build_object('integration', id, 'account', account,
                   'shard', shard, 'action', 'account_changed')::text)
                 FROM integrations WHERE account = $2",
                &[&CONTROL_CHANNEL, &id.as_str()],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// An account's feature switch, if it was ever set.
    pub async fn account(&self, id: &AccountId) -> Result<Option<Account>, PgError> {
        let id = id.clone();
        self.run(move |s| async move {
            Ok(s.pool
                .get()
                .await?
                .query_opt(
                    "SELECT siem_enabled, updated_at, ingest_events_per_sec, ingest_burst,
                       max_backlog_bytes
                     FROM accounts WHERE account = $1",
                    &[&id.as_str()],
                )
                .await?
                .map(|r| account_of(&r, 0)))
        })
        .await
    }

    /// Stores an integration if the stored one is what `expected` says (sealing its
    /// token), and tells every node (NOTIFY, sent when the write commits). Returns
    /// the new version; `VersionConflict` when someone changed it meanwhile.
    pub async fn put_integration(
        &self,
        it: &Integration,
        expected: Expected,
    ) -> Result<u64, PgError> {
        let it = it.clone();
        self.run_write(move |s| async move { s.put_integration(&it, expected).await })
            .await
    }

    /// Whether an integration should be delivering: enabled, and either declared by
    /// the operator in the config file or on an account with the feature turned on.
    pub async fn is_active(&self, it: &Integration) -> Result<bool, PgError> {
        if !it.enabled {
            return Ok(false);
        }
        if it.file_managed {
            return Ok(true);
        }
        Ok(self
            .account(&it.account)
            .await?
            .is_some_and(|a| a.siem_enabled))
    }

    /// Integration `id` of `account`, with its token opened, and its version.
    pub async fn integration(
        &self,
        account: &AccountId,
        id: &Uuid,
    ) -> Result<Option<Versioned<Integration>>, PgError> {
        let (account, id) = (account.clone(), *id);
        self.run(move |s| async move {
            let row = s
                .pool
                .get()
                .await?
                .query_opt(
                    "SELECT doc, version FROM integrations WHERE id = $1 AND account = $2",
                    &[&id, &account.as_str()],
                )
                .await?;
            row.map(|r| s.open(r.get(0), r.get(1))).transpose()
        })
        .await
    }

    async fn integrations_where(
        &self,
        which: Which,
    ) -> Result<Vec<Versioned<Integration>>, PgError> {
        self.run(move |s| async move {
            let client = s.pool.get().await?;
            const COLUMNS: &str = "SELECT doc, version FROM integrations";
            const ORDER: &str = "ORDER BY created_at, id";
            let rows = match &which {
                Which::All => client.query(&format!("{COLUMNS} {ORDER}"), &[]).await?,
                Which::Account(a) => {
                    client
                        .query(&format!("{COLUMNS} WHERE account = $1 {ORDER}"), &[a])
                        .await?
                }
                Which::Shards(list) => {
                    client
                        .query(&format!("{COLUMNS} WHERE shard = ANY($1) {ORDER}"), &[list])
                        .await?
                }
            };
            rows.into_iter()
                .map(|r| s.open(r.get(0), r.get(1)))
                .collect()
        })
        .await
    }

    /// Every integration of `account`.
    pub async fn integrations_of(
        &self,
        account: &AccountId,
    ) -> Result<Vec<Versioned<Integration>>, PgError> {
        self.integrations_where(Which::Account(account.to_string()))
            .await
    }

    /// Every stored integration of every account.
    pub async fn all_integrations(&self) -> Result<Vec<Versioned<Integration>>, PgError> {
        self.integrations_where(Which::All).await
    }

    /// What the periodic control re-read compares with the actors running: every
    /// integration's id, account, version and whether it should be delivering
    /// (`is_active`: enabled, and declared in the config file or on an account with
    /// the feature on), in one query that opens no token, so that it stays cheap
    /// with many integrations.
    pub async fn integration_stamps(&self) -> Result<Vec<IntegrationStamp>, PgError> {
        self.run(|s| async move {
            let rows = s
                .pool
                .get()
                .await?
                .query(
                    "SELECT i.id, i.account, i.version,
                            COALESCE((i.doc ->> 'enabled')::boolean, false)
                            AND (COALESCE((i.doc ->> 'file_managed')::boolean, false)
                                 OR COALESCE(a.siem_enabled, false))
                     FROM integrations i LEFT JOIN accounts a ON a.account = i.account",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let id: Uuid = r.get(0);
                    let account = AccountId::parse(r.get::<_, &str>(1))
                        .map_err(|e| corrupt(format!("the account of integration {id}"), e))?;
                    Ok(IntegrationStamp {
                        id,
                        account,
                        version: to_u64(r.get(2)),
                        active: r.get(3),
                    })
                })
                .collect()
        })
        .await
    }

    /// The integrations of the given shards: what a node delivers.
    pub async fn integrations_in(
        &self,
        shards: &[i32],
    ) -> Result<Vec<Versioned<Integration>>, PgError> {
        self.integrations_where(Which::Shards(shards.to_vec()))
            .await
    }

    /// Integrations whose token is stored in clear (to seal them once a key is set).
    pub async fn unsealed_integrations(&self) -> Result<Vec<Versioned<Integration>>, PgError> {
        self.run(|s| async move {
            let rows = s
                .pool
                .get()
                .await?
                .query(
                    "SELECT doc, version FROM integrations WHERE doc ->> 'hec_token' NOT LIKE 'enc:v1:%'",
                    &[],
                )
                .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(Versioned {
                        value: from_doc("an integration", r.get(0))?,
                        version: to_u64(r.get(1)),
                    })
                })
                .collect()
        })
        .await
    }

    /// Removes an integration with everything that belongs to it, and tells every node.
    pub async fn delete_integration(
        &self,
        account: &AccountId,
        id: &Uuid,
    ) -> Result<bool, PgError> {
        let (account, id) = (account.clone(), *id);
        self.run_write(move |s| async move {
            let mut client = s.pool.get().await?;
            let tx = client.transaction().await?;
            let n = tx
                .execute(
                    "DELETE FROM integrations WHERE id = $1 AND account = $2",
                    &[&id, &account.as_str()],
                )
                .await?;
            if n > 0 {
                notify_in(
                    &tx,
                    &ControlEvent {
                        integration: id,
                        account,
                        shard: s.shard_of(&id),
                        action: ControlAction::Deleted,
                    },
                )
                .await?;
            }
            tx.commit().await?;
            Ok(n > 0)
        })
        .await
    }

    /// How far integration `id` has delivered (nothing yet: the default).
    pub async fn checkpoint(&self, id: &Uuid) -> Result<Checkpoint, PgError> {
        let id = *id;
        self.run(move |s| async move {
            Ok(s.pool
                .get()
                .await?
                .query_opt(
                    "SELECT audit_seq, job_seq, delivered_audit, delivered_jobs, last_success
                     FROM checkpoints WHERE integration = $1",
                    &[&id],
                )
                .await?
                .map(|r| checkpoint_of(&r))
                .unwrap_or_default())
        })
        .await
    }

    /// A fresh id for a dead letter, increasing over time, unique in the cluster.
    pub async fn next_id(&self) -> Result<u64, PgError> {
        self.run(|s| async move {
            let v: i64 = s
                .pool
                .get()
                .await?
                .query_one("SELECT nextval('dead_letter_ids')", &[])
                .await?
                .get(0);
            Ok(to_u64(v))
        })
        .await
    }

    /// Moves a checkpoint and stores the dead letters it skips, together, only while
    /// the integration exists and only while `fence` (this node's lease on the
    /// integration's shard, at that epoch) still holds: a node that lost its lease
    /// can never move a checkpoint again (`LeaseLost`). Every commit is logged in
    /// `checkpoint_commits` with its lease. Durable when it returns.
    pub async fn commit(
        &self,
        account: &AccountId,
        id: &Uuid,
        cp: &Checkpoint,
        dead: &[DeadLetter],
        fence: &Fence,
    ) -> Result<Checkpoint, PgError> {
        self.commit_posted(account, id, cp, dead, fence, None).await
    }

    /// [`PgStore::commit`] of a post that delivered the events `posted`: those a
    /// quota sweep dropped while the post was in flight are taken out of the gap.
    pub async fn commit_posted(
        &self,
        account: &AccountId,
        id: &Uuid,
        cp: &Checkpoint,
        dead: &[DeadLetter],
        fence: &Fence,
        posted: Posted,
    ) -> Result<Checkpoint, PgError> {
        let (account, id, cp, dead, fence) = (
            account.clone(),
            *id,
            cp.clone(),
            dead.to_vec(),
            fence.clone(),
        );
        self.run_write(
            move |s| async move { s.commit(&account, id, &cp, &dead, &fence, &posted).await },
        )
        .await
    }

    /// How many dead letters an integration has, and the newest `limit` of them, newest first.
    pub async fn dead_letters(
        &self,
        id: &Uuid,
        limit: usize,
    ) -> Result<(usize, Vec<DeadLetter>), PgError> {
        let id = *id;
        self.run(move |s| async move {
            let client = s.pool.get().await?;
            let total: i64 = client
                .query_one(
                    "SELECT count(*) FROM dead_letters WHERE integration = $1",
                    &[&id],
                )
                .await?
                .get(0);
            let rows = client
                .query(
                    "SELECT doc FROM dead_letters WHERE integration = $1 ORDER BY id DESC LIMIT $2",
                    &[&id, &(limit as i64)],
                )
                .await?;
            let newest = rows
                .into_iter()
                .map(|r| from_doc("a dead letter", r.get(0)))
                .collect::<Result<_, _>>()?;
            Ok((usize::try_from(total).unwrap_or(0), newest))
        })
        .await
    }

    /// Records an integration's replay (what the replay actor makes of it is its own),
    /// unless `replay_write_allowed!` refuses it: a cancel made on another node
    /// is final, and a replay asked for on another node is not overwritten by one
    /// that ran here before it (their actor may record once more before it learns).
    pub async fn put_replay(&self, id: &Uuid, replay: &impl Serialize) -> Result<(), PgError> {
        let (id, doc) = (*id, to_doc(replay));
        self.run(move |s| async move {
            let client = s.pool.get().await?;
            let n = client
                .execute(
                    concat!(
                        "INSERT INTO replays (integration, doc)
                     SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM integrations WHERE id = $1)
                     ON CONFLICT (integration) DO UPDATE SET doc = excluded.doc
                     WHERE ",
                        replay_write_allowed!()
                    ),
                    &[&id, &doc],
                )
                .await?;
            if n == 0 {
                // Nothing written: the integration is gone, its replay was cancelled,
                // or another replay is asked for (`replay_write_allowed!`).
                gone_unless_stored(&client, id).await?;
            }
            Ok(())
        })
        .await
    }

    /// Changes integration `id`'s replay record on behalf of another node (a replay
    /// asked for, or cancelled, on a node that does not run the integration), and
    /// announces it to the node that does: under a lock on the integration, so two
    /// such changes never interleave. `change` sees the record (`None`: none) and
    /// says what to store instead (`None`: leave it) and what to answer.
    pub async fn change_replay<R, F>(
        &self,
        account: &AccountId,
        id: &Uuid,
        change: F,
    ) -> Result<R, PgError>
    where
        R: Send + 'static,
        F: FnOnce(Option<serde_json::Value>) -> (Option<serde_json::Value>, R) + Send + 'static,
    {
        let (account, id, shard) = (account.clone(), *id, self.shard_of(id));
        self.run_write(move |s| async move {
            let mut client = s.pool.get().await?;
            let tx = client.transaction().await?;
            // An API request waits here (and a local replay start holds the
            // Supervisor): a lock held long elsewhere (a stalled transaction on the
            // integration) answers 503 and retry after 2 s (`Busy`), not a request
            // that hangs until the caller gives up.
            tx.batch_execute("SET LOCAL lock_timeout = '2s'").await?;
            // FOR NO KEY UPDATE: it serialises the changes of one integration's
            // replay (it conflicts with itself), and waits for a change or delete of
            // the integration (FOR UPDATE), but not for the key-share locks of the
            // inserts referencing the integration (checkpoints, dead letters, sync
            // records, the replay's own progress). The fenced commits' FOR SHARE on
            // the integration still conflicts with it: a commit waits for this short
            // transaction, as it did for FOR UPDATE.
            if tx
                .query_opt(
                    "SELECT 1 FROM integrations WHERE id = $1 AND account = $2 FOR NO KEY UPDATE",
                    &[&id, &account.as_str()],
                )
                .await?
                .is_none()
            {
                return Err(PgError::Gone);
            }
            let stored: Option<serde_json::Value> = tx
                .query_opt("SELECT doc FROM replays WHERE integration = $1", &[&id])
                .await?
                .map(|r| r.get(0));
            let (write, answer) = change(stored);
            if let Some(doc) = write {
                tx.execute(
                    "INSERT INTO replays (integration, doc) VALUES ($1, $2)
                     ON CONFLICT (integration) DO UPDATE SET doc = excluded.doc",
                    &[&id, &doc],
                )
                .await?;
                notify_in(
                    &tx,
                    &ControlEvent {
                        integration: id,
                        account,
                        shard,
                        action: ControlAction::Replay,
                    },
                )
                .await?;
            }
            tx.commit().await?;
            Ok(answer)
        })
        .await
    }

    /// The integrations whose replay record says `running`: the periodic re-read
    /// resumes those whose request's NOTIFY was lost.
    pub async fn running_replays(&self) -> Result<Vec<Uuid>, PgError> {
        self.run(move |s| async move {
            Ok(s.pool
                .get()
                .await?
                .query(RUNNING_REPLAYS_QUERY, &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
        .await
    }

    /// Records a replay's progress as its running actor does, fenced like a
    /// checkpoint commit: only while `fence` still holds (`LeaseLost` otherwise),
    /// so a node that lost the shard (paused, then resumed) never overwrites the
    /// progress of the replay its new holder resumed; and, as [`Self::put_replay`],
    /// never over a cancel or over another replay still `running` (asked for on
    /// another node: this actor stops when the node hears of it).
    pub async fn put_replay_fenced(
        &self,
        account: &AccountId,
        id: &Uuid,
        replay: &impl Serialize,
        fence: &Fence,
    ) -> Result<(), PgError> {
        let (account, id, doc, fence) = (account.clone(), *id, to_doc(replay), fence.clone());
        self.run_write(move |s| async move {
            let mut client = s.pool.get().await?;
            let tx = client.transaction().await?;
            fenced(&tx, &account, id, &fence).await?;
            tx.execute(
                concat!(
                    "INSERT INTO replays (integration, doc) VALUES ($1, $2)
                     ON CONFLICT (integration) DO UPDATE SET doc = excluded.doc WHERE ",
                    replay_write_allowed!()
                ),
                &[&id, &doc],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Forgets integration `id`'s replay record.
    pub async fn delete_replay(&self, id: &Uuid) -> Result<(), PgError> {
        let id = *id;
        self.run(move |s| async move {
            s.pool
                .get()
                .await?
                .execute("DELETE FROM replays WHERE integration = $1", &[&id])
                .await?;
            Ok(())
        })
        .await
    }

    /// The integration's last recorded replay, if any.
    pub async fn replay<T: DeserializeOwned + Send + 'static>(
        &self,
        id: &Uuid,
    ) -> Result<Option<T>, PgError> {
        self.get_doc("replays", *id)
            .await?
            .map(|d| from_doc("a replay", d))
            .transpose()
    }

    /// Keeps the outcome of the latest connection test, while the integration exists.
    pub async fn put_connection_report(
        &self,
        id: &Uuid,
        report: &impl Serialize,
    ) -> Result<(), PgError> {
        self.put_doc("connection_reports", *id, to_doc(report))
            .await
    }

    /// Integration `id`'s latest connection test, if one was kept.
    pub async fn connection_report<T: serde::de::DeserializeOwned>(
        &self,
        id: &Uuid,
    ) -> Result<Option<T>, PgError> {
        self.get_doc("connection_reports", *id)
            .await?
            .map(|d| from_doc("a connection report", d))
            .transpose()
    }

    /// Publishes what this node observes of an integration it delivers, so that any
    /// node can answer for it: only while this node holds the integration's shard
    /// under a live lease (`Ok(false)`: it does not, nothing was written), so that
    /// a node that lost the shard never overwrites its new holder's status. `Gone`
    /// when the integration was deleted.
    pub async fn publish_status(
        &self,
        id: &Uuid,
        status: &impl Serialize,
    ) -> Result<bool, PgError> {
        let (id, doc) = (*id, to_doc(status));
        self.run_write(move |s| async move {
            let client = s.pool.get().await?;
            let n = client
                .execute(PUBLISH_HELD, &[&vec![id], &vec![doc], &s.options.node_name])
                .await?;
            if n == 0 {
                gone_unless_stored(&client, id).await?;
            }
            Ok(n > 0)
        })
        .await
    }

    /// [`PgStore::publish_status`] for many integrations in one statement (the
    /// status publisher's round); deleted integrations, and those whose shard this
    /// node does not hold under a live lease (lost, or not yet noticed lost by its
    /// lease loop), are skipped.
    pub async fn publish_statuses(
        &self,
        statuses: Vec<(Uuid, serde_json::Value)>,
    ) -> Result<(), PgError> {
        if statuses.is_empty() {
            return Ok(());
        }
        let (ids, docs): (Vec<Uuid>, Vec<serde_json::Value>) = statuses.into_iter().unzip();
        self.run_write(move |s| async move {
            s.pool
                .get()
                .await?
                .execute(PUBLISH_HELD, &[&ids, &docs, &s.options.node_name])
                .await?;
            Ok(())
        })
        .await
    }

    /// What the node delivering the integration last published, if any, and
    /// whether that node still holds the integration's shard under a live lease.
    pub async fn delivery_status(&self, id: &Uuid) -> Result<Option<PublishedStatus>, PgError> {
        let id = *id;
        self.run(move |s| async move {
            Ok(s.pool
                .get()
                .await?
                .query_opt(
                    "SELECT d.node, d.observed_at, d.doc,
                       extract(epoch FROM now() - d.observed_at)::float8,
                       EXISTS (SELECT 1 FROM integrations i JOIN shard_leases l ON l.shard = i.shard
                               WHERE i.id = d.integration AND l.owner = d.node
                                 AND l.expires_at > clock_timestamp())
                     FROM delivery_status d WHERE d.integration = $1",
                    &[&id],
                )
                .await?
                .map(|r| PublishedStatus {
                    node: r.get(0),
                    observed_at: r.get(1),
                    status: r.get(2),
                    age_secs: r.get(3),
                    by_holder: r.get(4),
                }))
        })
        .await
    }

    /// The gaps retention and the backlog quota left in an integration's delivery.
    pub async fn gaps(&self, id: &Uuid) -> Result<Vec<Gap>, PgError> {
        let id = *id;
        self.run(move |s| async move {
            s.pool
                .get()
                .await?
                .query(
                    "SELECT source, first_at, last_at, count, recorded_at, reason FROM gaps
                     WHERE integration = $1 AND count > 0 ORDER BY source, reason DESC",
                    &[&id],
                )
                .await?
                .iter()
                .map(gap_of)
                .collect()
        })
        .await
    }

    /// Upserts a per-integration document in `table`; `Gone` when the integration is not there.
    async fn put_doc(
        &self,
        table: &'static str,
        id: Uuid,
        doc: serde_json::Value,
    ) -> Result<(), PgError> {
        self.run(move |s| async move {
            let n = s
                .pool
                .get()
                .await?
                .execute(
                    &format!(
                        "INSERT INTO {table} (integration, doc)
                         SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM integrations WHERE id = $1)
                         ON CONFLICT (integration) DO UPDATE SET doc = excluded.doc"
                    ),
                    &[&id, &doc],
                )
                .await?;
            if n == 0 {
                return Err(PgError::Gone);
            }
            Ok(())
        })
        .await
    }

    async fn get_doc(
        &self,
        table: &'static str,
        id: Uuid,
    ) -> Result<Option<serde_json::Value>, PgError> {
        self.run(move |s| async move {
            Ok(s.pool
                .get()
                .await?
                .query_opt(
                    &format!("SELECT doc FROM {table} WHERE integration = $1"),
                    &[&id],
                )
                .await?
                .map(|r| r.get(0)))
        })
        .await
    }
}

/// A limit as PostgreSQL's `bigint`: the API bounds them far below `i64::MAX`.
fn to_bigint(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
