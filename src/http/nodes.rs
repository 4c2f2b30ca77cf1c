//! `GET /api/v1/nodes` (admin): the operator's view of the siemsync nodes. On
//! PostgreSQL every live node (heartbeat not lapsed) with the shards it holds, the
//! integrations of those shards and its last lease renewal; on sled this process
//! alone, which delivers every integration.

use super::auth::Caller;
use super::errors::ApiError;
use super::AppState;
use crate::store::{Store, StoreError};
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One node.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "siemsync-1", "this_node": true, "store": "postgres",
    "shards": 128, "integrations": 5012, "started_at": "2026-11-25T08:00:00Z",
    "last_renewal": "2026-11-25T10:00:58Z", "lease_expires_at": "2026-11-25T10:01:28Z",
    "stopping": false}))]
pub struct NodeEntry {
    /// The node's name (`node_name`; on sled this machine's host name unless set).
    pub name: String,
    /// Whether it is the node that answered.
    pub this_node: bool,
    /// `postgres` or `sled`.
    pub store: &'static str,
    /// Shards whose lease it holds now (`null` on sled, which has no shards).
    pub shards: Option<u64>,
    /// Integrations it delivers: those of its shards (on sled, every stored one;
    /// disabled ones included, whose actors do not run).
    pub integrations: u64,
    /// When it started (`null` on sled).
    pub started_at: Option<DateTime<Utc>>,
    /// Its last lease renewal, the heartbeat that keeps it live (`null` on sled).
    pub last_renewal: Option<DateTime<Utc>>,
    /// When its leases lapse without another renewal, and other nodes take its
    /// shards over (`null` on sled).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Whether it is shutting down and handing its shards back.
    pub stopping: bool,
}

/// Every live node, by name (the store is read off the async workers).
pub fn nodes_of(store: &Store, sled_name: &str) -> Result<Vec<NodeEntry>, StoreError> {
    let Some(pg) = store.postgres() else {
        return Ok(vec![NodeEntry {
            name: sled_name.to_owned(),
            this_node: true,
            store: "sled",
            shards: None,
            // Counted by key: no token is opened (nor needs the secret key).
            integrations: store.integration_count()?,
            started_at: None,
            last_renewal: None,
            lease_expires_at: None,
            stopping: false,
        }]);
    };
    let me = pg.node_name();
    Ok(pg
        .wait(pg.node_views())?
        .into_iter()
        .map(|n| NodeEntry {
            this_node: n.name == me,
            name: n.name,
            store: "postgres",
            shards: Some(n.shards),
            integrations: n.integrations,
            started_at: Some(n.started_at),
            last_renewal: Some(n.heartbeat_at),
            lease_expires_at: Some(n.expires_at),
            stopping: n.stopping,
        })
        .collect())
}

/// The name the sled entry shows: `node_name` when set, else the host name.
fn sled_name(state: &AppState) -> String {
    if !state.config.node_name.is_empty() {
        return state.config.node_name.clone();
    }
    crate::config::host_name().unwrap_or_else(|e| {
        log::warn!(
            "the host name cannot be read ({e}): the nodes view names this node \"this node\""
        );
        "this node".into()
    })
}

#[utoipa::path(get, path = "/api/v1/nodes", operation_id = "listNodes", tag = "service", security(("admin" = [])),
    responses((status = 200, description = "Every live node by name; on sled one, this process", body = Vec<NodeEntry>),
        (status = 503, description = "The store cannot be read now (PostgreSQL unreachable)", body = super::errors::ErrorBody)))]
/// `GET /api/v1/nodes` (admin): each live node with its shard count, its
/// integrations and its last lease renewal.
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let name = sled_name(&state);
    let store = state.store.clone();
    let nodes = web::block(move || nodes_of(&store, &name)).await??;
    Ok(HttpResponse::Ok().json(nodes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, IntegrationChange, IntegrationPolicy};
    use crate::store::testing::reopen;
    use crate::store::{SledStore, StoreOptions};
    use serde_json::json;

    #[test]
    fn the_sled_nodes_view_counts_integrations_without_opening_their_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let sealed = StoreOptions {
            secret_key: Some("a-secret-key-of-enough-length-0123456789".into()),
            ..StoreOptions::new()
        };
        let store = SledStore::open_with_options(dir.path(), &sealed).unwrap();
        for name in ["one", "two"] {
            let it = IntegrationChange::from_json(&json!({
                "name": name, "hec_token": "11111111-2222-3333-4444-555555556789",
                "hec_uri": "https://splunk.example.com:8088", "sources": ["audit"], "enabled": true
            }))
            .unwrap()
            .create(
                AccountId::parse("acme").unwrap(),
                Utc::now(),
                IntegrationPolicy::default(),
            )
            .unwrap();
            store.put_integration(&it, None).unwrap();
        }
        drop(store);
        // Opened without the key: no token can be opened, and none needs to be to
        // count the integrations.
        let store = Store::Sled(reopen(dir.path(), &StoreOptions::new()));
        assert!(store.all_integrations().is_err(), "the tokens are sealed");
        let nodes = nodes_of(&store, "h").unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].integrations, 2);
    }
}
