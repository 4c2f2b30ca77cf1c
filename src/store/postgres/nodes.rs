//! The operator's view of the nodes (`GET /api/v1/nodes`, `siemsync status`): each
//! live node with the shards it holds and the integrations of those shards. Kept
//! apart from the lease rounds (`leases.rs`): read-only, one query.

use super::PgStore;
use chrono::{DateTime, Utc};

/// A live node as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// The node's name (`node_name`).
    pub name: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat: every lease round renews it with its leases.
    pub heartbeat_at: DateTime<Utc>,
    /// When its leases lapse without another round.
    pub expires_at: DateTime<Utc>,
    /// Whether it is shutting down and handing its shards over.
    pub stopping: bool,
    /// Shards whose lease it holds now.
    pub shards: u64,
    /// Stored integrations of those shards: what it delivers.
    pub integrations: u64,
}

impl PgStore {
    /// Every live node (heartbeat not lapsed), by name, by the database's clock.
    pub async fn node_views(&self) -> Result<Vec<NodeView>, super::PgError> {
        self.run(|s| async move {
            let rows = s
                .pool
                .get()
                .await?
                .query(
                    "WITH held AS (
                       SELECT owner, shard FROM shard_leases
                       WHERE owner IS NOT NULL AND expires_at > clock_timestamp())
                     SELECT n.name, n.started_at, n.heartbeat_at, n.expires_at, n.stopping,
                            (SELECT count(*) FROM held h WHERE h.owner = n.name),
                            (SELECT count(*) FROM integrations i
                             JOIN held h ON h.shard = i.shard WHERE h.owner = n.name)
                     FROM nodes n WHERE n.expires_at > clock_timestamp()
                     ORDER BY n.name",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| NodeView {
                    name: r.get(0),
                    started_at: r.get(1),
                    heartbeat_at: r.get(2),
                    expires_at: r.get(3),
                    stopping: r.get(4),
                    shards: super::to_u64(r.get(5)),
                    integrations: super::to_u64(r.get(6)),
                })
                .collect())
        })
        .await
    }
}
