//! Which accounts the nodes know and how many bytes their events take: what the
//! account API, the metrics and the disk view read (the embedded store's
//! `accounts.rs` and `stored_bytes`, in SQL).

use super::error::PgError;
use super::registry::account_of;
use super::{to_i64, to_u64, PgStore};
use crate::model::AccountId;
use crate::store::KnownAccount;

/// Every account with a feature switch, an integration, an account token or stored
/// events, with its switch and integration count, sorted by name.
const KNOWN: &str = "
    WITH names AS (
        SELECT account FROM accounts
        UNION SELECT account FROM integrations
        UNION SELECT account FROM account_tokens
        UNION SELECT account FROM account_heads)
    SELECT n.account, a.siem_enabled, a.updated_at, a.ingest_events_per_sec,
           a.ingest_burst, a.max_backlog_bytes,
           (SELECT count(*) FROM integrations i WHERE i.account = n.account)
    FROM names n LEFT JOIN accounts a ON a.account = n.account
    ORDER BY n.account COLLATE \"C\"";

impl PgStore {
    /// Every account siemsync has heard of, sorted by name (see `KNOWN`).
    pub async fn known_accounts(&self) -> Result<Vec<KnownAccount>, PgError> {
        self.run(|s| async move {
            let rows = s.pool.get().await?.query(KNOWN, &[]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let name: String = r.get(0);
                // Only valid names are ever stored; one that is not is skipped
                // as the embedded store skips it, never listed half-read.
                let Ok(id) = AccountId::parse(&name) else {
                    continue;
                };
                let switched: Option<bool> = r.get(1);
                out.push(KnownAccount {
                    id,
                    record: switched.map(|_| account_of(&r, 1)),
                    integrations: usize::try_from(r.get::<_, i64>(6)).unwrap_or(0),
                });
            }
            Ok(out)
        })
        .await
    }

    /// Whether siemsync has heard of the account at all (see `known_accounts`).
    pub async fn knows_account(&self, id: &AccountId) -> Result<bool, PgError> {
        let id = id.clone();
        self.run(move |s| async move {
            Ok(s.pool
                .get()
                .await?
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM accounts WHERE account = $1)
                         OR EXISTS (SELECT 1 FROM integrations WHERE account = $1)
                         OR EXISTS (SELECT 1 FROM account_tokens WHERE account = $1)
                         OR EXISTS (SELECT 1 FROM account_heads WHERE account = $1)",
                    &[&id.as_str()],
                )
                .await?
                .get(0))
        })
        .await
    }

    /// Accounts that have stored events (an ingest made their heads row).
    pub async fn accounts_with_events(&self) -> Result<Vec<AccountId>, PgError> {
        self.run(|s| async move {
            let rows = s
                .pool
                .get()
                .await?
                .query("SELECT account FROM account_heads ORDER BY account", &[])
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| AccountId::parse(r.get::<_, &str>(0)).ok())
                .collect())
        })
        .await
    }

    /// The bytes of the account's stored audit chunks after sequence `after`
    /// (0: all of them), as the embedded store counts them (the chunk records).
    pub async fn audit_bytes_after(&self, account: &AccountId, after: u64) -> Result<u64, PgError> {
        let account = account.clone();
        self.run(move |s| async move {
            let n: i64 = s
                .pool
                .get()
                .await?
                .query_one(
                    "SELECT COALESCE(sum(octet_length(body)), 0)::bigint FROM audit_chunks
                     WHERE account = $1 AND last_seq > $2",
                    &[&account.as_str(), &to_i64(after)],
                )
                .await?
                .get(0);
            Ok(to_u64(n))
        })
        .await
    }
}
