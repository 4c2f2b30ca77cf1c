//! `GET /metrics` (admin): the Prometheus text format. Gauges about stored state are
//! refreshed from the store at each scrape, off the async workers.

use super::auth::Caller;
use super::errors::ApiError;
use super::AppState;
use crate::metrics::{AccountLabels, GapLabels, IntegrationLabels, Metrics, NodeLabels};
use crate::model::Source;
use crate::store::StoreError;
use actix_web::{web, HttpResponse};
use chrono::Utc;
use std::sync::Arc;

fn refresh(state: &AppState, m: &Metrics) -> Result<(), StoreError> {
    let store = &state.store;
    m.backlog_events.clear();
    m.gap_events.clear();
    m.backlog_oldest_seconds.clear();
    m.last_success.clear();
    m.dead_letters.clear();
    let now = Utc::now();
    for it in store.all_integrations()? {
        let labels = IntegrationLabels::of(&it);
        let cp = store.checkpoint(&it.id)?;
        let backlog = store.backlog(&it, &cp)?;
        for source in Source::ALL.into_iter().filter(|s| it.wants(*s)) {
            m.backlog_events
                .get_or_create(&labels.with_source(source))
                .set(backlog.of(source) as i64);
        }
        let age = backlog
            .oldest
            .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
        m.backlog_oldest_seconds.get_or_create(&labels).set(age);
        if let Some(t) = cp.last_success {
            m.last_success
                .get_or_create(&labels)
                .set(t.timestamp_millis() as f64 / 1000.0);
        }
        m.dead_letters
            .get_or_create(&labels)
            .set(store.dead_letters(&it.id, 0)?.0 as i64);
        for gap in store.gaps(&it.id)? {
            m.gap_events
                .get_or_create(&GapLabels {
                    account: labels.account.clone(),
                    integration: labels.integration.clone(),
                    source: gap.source.as_str().to_owned(),
                    reason: gap.reason.as_str().to_owned(),
                })
                .set(gap.count as i64);
        }
    }
    accounts(state, m)?;
    nodes(state, m)?;
    // A store that cannot say its size (failing, being reopened) keeps the last
    // figure; `store_writable` says why.
    match store.size_on_disk() {
        Ok(bytes) => {
            m.store_bytes.set(bytes as i64);
        }
        Err(e) => log::warn!("metrics: cannot read the store's size on disk: {e}"),
    }
    m.store_writable.set(i64::from(store.fault().is_none()));
    let reserve = &state.disk_reserve;
    m.disk_free_bytes
        .set(reserve.free().map_or(-1, |f| f.min(i64::MAX as u64) as i64));
    m.min_free_disk_bytes
        .set(reserve.floor().min(i64::MAX as u64) as i64);
    // Reported as -1 where /proc or the limit cannot be read, rather than as 0.
    m.open_fds
        .set(crate::fd_limit::open().map_or(-1, |n| n as i64));
    m.max_fds
        .set(crate::fd_limit::max().map_or(-1, |n| n.min(i64::MAX as u64) as i64));
    Ok(())
}

/// PostgreSQL: each live node's shards and integrations, as `GET /api/v1/nodes`
/// shows them (nothing on sled, which has no shards).
fn nodes(state: &AppState, m: &Metrics) -> Result<(), StoreError> {
    m.shards_held.clear();
    m.integrations_owned.clear();
    let Some(pg) = state.store.postgres() else {
        return Ok(());
    };
    let gauge = |v: u64| v.min(i64::MAX as u64) as i64;
    for n in pg.wait(pg.node_views())? {
        let labels = NodeLabels { node: n.name };
        m.shards_held.get_or_create(&labels).set(gauge(n.shards));
        m.integrations_owned
            .get_or_create(&labels)
            .set(gauge(n.integrations));
    }
    Ok(())
}

/// The per-account gauges, for every account with stored events.
fn accounts(state: &AppState, m: &Metrics) -> Result<(), StoreError> {
    for family in [
        &m.account_stored_bytes,
        &m.account_backlog_bytes,
        &m.account_max_backlog_bytes,
        &m.account_quota_dropped,
        &m.account_rate_limited,
    ] {
        family.clear();
    }
    let gauge = |v: u64| v.min(i64::MAX as u64) as i64;
    for account in state.store.accounts_with_events()? {
        let u = crate::retention::usage(
            &state.store,
            &account,
            state.config.account_max_backlog_bytes,
        )?;
        let labels = AccountLabels {
            account: account.to_string(),
        };
        m.account_stored_bytes
            .get_or_create(&labels)
            .set(gauge(u.stored_bytes));
        m.account_backlog_bytes
            .get_or_create(&labels)
            .set(gauge(u.backlog_bytes));
        m.account_max_backlog_bytes
            .get_or_create(&labels)
            .set(gauge(u.max_backlog_bytes));
        m.account_quota_dropped
            .get_or_create(&labels)
            .set(gauge(u.quota_drops.map_or(0, |d| d.events)));
        m.account_rate_limited
            .get_or_create(&labels)
            .set(gauge(state.ingest_limits.refused(&account)));
    }
    disk_refusals(state, m);
    Ok(())
}

/// The disk reserve's per-account gauges: every account refused since start (it
/// may hold no events), and those refused now.
fn disk_refusals(state: &AppState, m: &Metrics) {
    m.account_disk_refused_requests.clear();
    m.account_disk_refused.clear();
    let reserve = &state.disk_reserve;
    for (account, n) in reserve.refusal_counts() {
        let labels = AccountLabels {
            account: account.to_string(),
        };
        m.account_disk_refused_requests
            .get_or_create(&labels)
            .set(n.min(i64::MAX as u64) as i64);
        m.account_disk_refused
            .get_or_create(&labels)
            .set(i64::from(reserve.standing(&account).is_some()));
    }
    for account in reserve.verdict().refused.keys() {
        m.account_disk_refused
            .get_or_create(&AccountLabels {
                account: account.to_string(),
            })
            .set(1);
    }
}

#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "service", security(("admin" = [])),
    responses((status = 200, description = "The metrics, in the OpenMetrics text format",
        content_type = "application/openmetrics-text", body = String)))]
/// `GET /metrics` (admin): the OpenMetrics text, with the stored gauges read now.
pub async fn metrics(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let m: Arc<Metrics> = state.metrics.clone();
    let state = state.into_inner();
    let text = web::block(move || refresh(&state, &m).map(|()| m.encode())).await??;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}
