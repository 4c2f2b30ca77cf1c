//! `GET …/integrations/{id}/history`: an integration's syncs, for the page's chart and
//! table; and `GET /api/v1/overview` (admin): every integration of every account,
//! counted per state, sorted and paged here, from the summary each sync leaves — no
//! actor is asked and no backlog counted, so it answers fast for thousands.

use super::auth::Caller;
use super::errors::ApiError;
use super::integrations::lookup;
use super::AppState;
use crate::hec::response::FailureKind;
use crate::store::{OverviewRow, SyncRecord, HISTORY_MAX_RECORDS};
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::HashMap;

/// Reads the raw query string into its parameters, refusing unknown or repeated ones
/// (a typo must not be ignored silently).
pub(super) fn params(query: &str, known: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for (k, v) in url_pairs(query)? {
        if !known.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "`{k}` is not a parameter here; use {}",
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(ApiError::bad_request(format!("`{k}` is given twice")));
        }
    }
    Ok(out)
}

fn url_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    web::Query::<Vec<(String, String)>>::from_query(query)
        .map(|q| q.into_inner())
        .map_err(|e| ApiError::bad_request(format!("the query string is not readable: {e}")))
}

pub(super) fn number(
    p: &HashMap<String, String>,
    name: &str,
    default: u64,
    max: u64,
) -> Result<u64, ApiError> {
    let Some(raw) = p.get(name) else {
        return Ok(default);
    };
    match raw.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "`{name}` must be a whole number from 1 to {max}, not {raw:?}"
        ))),
    }
}

/// One sync as the API shows it: the record, with when it ended.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SyncView {
    /// The sync as recorded.
    #[serde(flatten)]
    pub record: SyncRecord,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
}

fn sync_view(r: &SyncRecord) -> SyncView {
    SyncView {
        record: r.clone(),
        finished_at: r.finished_at(),
    }
}

/// `GET …/history`'s answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct History {
    /// The integration.
    pub id: uuid::Uuid,
    /// Its syncs, newest first.
    pub syncs: Vec<SyncView>,
}

/// `…/history?since=&limit=`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from the raw query string, to refuse unknown and repeated keys.
pub struct HistoryQuery {
    /// Only syncs that started at or after this (RFC 3339; default: every one kept).
    since: Option<DateTime<Utc>>,
    /// At most this many, newest first (1–2,000; default 2,000).
    #[param(minimum = 1, maximum = 2000)]
    limit: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/accounts/{account}/integrations/{id}/history", operation_id = "integrationHistory", tag = "integrations",
    params(super::IntegrationPath, HistoryQuery), security(("admin" = []), ("account" = [])),
    responses((status = 200, description = "The integration's syncs, newest first", body = History)))]
/// `GET …/integrations/{id}/history?since=…&limit=…`: the syncs that started at or after
/// `since` (RFC 3339; default: all kept), newest first, at most `limit` (1–2,000,
/// default 2,000, the most kept).
pub async fn history(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let it = lookup(&state, &caller, &path)?;
    let p = params(req.query_string(), &["since", "limit"])?;
    let since = match p.get("since") {
        None => DateTime::<Utc>::MIN_UTC,
        Some(raw) => DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "`since` must be an RFC 3339 time such as 2026-11-25T10:00:00Z, not {raw:?}: {e}"
                ))
            })?,
    };
    let limit = number(&p, "limit", HISTORY_MAX_RECORDS, HISTORY_MAX_RECORDS)? as usize;
    let syncs: Vec<_> = state
        .store
        .history(&it.id, since, limit)?
        .iter()
        .map(sync_view)
        .collect();
    Ok(HttpResponse::Ok().json(History { id: it.id, syncs }))
}

/// An integration's state on the overview, in the page's words, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverviewState {
    /// The latest sync that posted failed on something the customer must fix.
    NeedsAction,
    /// The latest sync that posted failed on a busy or unreachable Splunk: retried by itself.
    Retrying,
    /// Active, and no sync has posted anything yet.
    Pending,
    /// The latest sync that posted ended without an error.
    Healthy,
    /// Turned off, or its account's feature is.
    Disabled,
}

impl OverviewState {
    const ALL: [OverviewState; 5] = [
        OverviewState::NeedsAction,
        OverviewState::Retrying,
        OverviewState::Pending,
        OverviewState::Healthy,
        OverviewState::Disabled,
    ];

    fn of(row: &OverviewRow) -> OverviewState {
        if !row.active {
            return OverviewState::Disabled;
        }
        match row.summary.as_ref().and_then(|s| s.last_attempt.as_ref()) {
            None => OverviewState::Pending,
            Some(a) => match &a.error {
                None => OverviewState::Healthy,
                Some(e) if e.kind == FailureKind::Transient => OverviewState::Retrying,
                Some(_) => OverviewState::NeedsAction,
            },
        }
    }

    fn name(self) -> &'static str {
        match self {
            OverviewState::NeedsAction => "needs_action",
            OverviewState::Retrying => "retrying",
            OverviewState::Pending => "pending",
            OverviewState::Healthy => "healthy",
            OverviewState::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SortKey {
    State,
    Backlog,
    LastSuccess,
    Account,
}

impl SortKey {
    fn parse(raw: &str) -> Result<SortKey, ApiError> {
        Ok(match raw {
            "state" => SortKey::State,
            "backlog" => SortKey::Backlog,
            "last_success" => SortKey::LastSuccess,
            "account" => SortKey::Account,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "`sort` must be state, backlog, last_success or account, not {raw:?}"
                )))
            }
        })
    }

    fn word(self) -> OverviewSort {
        match self {
            SortKey::State => OverviewSort::State,
            SortKey::Backlog => OverviewSort::Backlog,
            SortKey::LastSuccess => OverviewSort::LastSuccess,
            SortKey::Account => OverviewSort::Account,
        }
    }

    /// The most alarming first: the worst state, the largest backlog, the oldest success.
    fn default_descending(self) -> bool {
        self == SortKey::Backlog
    }
}

/// A row with what it is sorted by, read once.
struct Keyed {
    state: OverviewState,
    backlog: Option<u64>,
    last_success: Option<DateTime<Utc>>,
    row: OverviewRow,
}

/// Orders two rows by `key` (a missing backlog or success first, as the smallest) and
/// then by account, name and id, so that pages never overlap.
fn compare(a: &Keyed, b: &Keyed, key: SortKey, descending: bool) -> Ordering {
    let by_key = match key {
        SortKey::State => a.state.cmp(&b.state),
        SortKey::Backlog => a.backlog.cmp(&b.backlog),
        SortKey::LastSuccess => a.last_success.cmp(&b.last_success),
        SortKey::Account => Ordering::Equal,
    };
    let by_key = if descending { by_key.reverse() } else { by_key };
    let tie =
        (&a.row.account, &a.row.name, &a.row.id).cmp(&(&b.row.account, &b.row.name, &b.row.id));
    let tie = if descending && key == SortKey::Account {
        tie.reverse()
    } else {
        tie
    };
    by_key.then(tie)
}

/// What `GET /api/v1/overview` asks for: the order, the page and the state shown.
struct OverviewQuery {
    key: SortKey,
    descending: bool,
    page: u64,
    per_page: u64,
    only: Option<OverviewState>,
}

/// Reads the overview's query string, refusing an unknown sort, order or state.
fn overview_query(query: &str) -> Result<OverviewQuery, ApiError> {
    let p = params(query, &["sort", "order", "page", "per_page", "state"])?;
    let key = SortKey::parse(p.get("sort").map_or("state", String::as_str))?;
    let descending = match p.get("order").map(String::as_str) {
        None => key.default_descending(),
        Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`order` must be asc or desc, not {other:?}"
            )))
        }
    };
    let page = number(&p, "page", 1, u32::MAX as u64)?;
    let per_page = number(&p, "per_page", 50, 500)?;
    let only = match p.get("state") {
        None => None,
        Some(raw) => Some(
            OverviewState::ALL
                .into_iter()
                .find(|s| s.name() == raw)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "`state` must be needs_action, retrying, pending, healthy or disabled, not {raw:?}"
                    ))
                })?,
        ),
    };
    Ok(OverviewQuery {
        key,
        descending,
        page,
        per_page,
        only,
    })
}

/// What the overview is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverviewSort {
    /// Worst first: needs action, retrying, pending, healthy, disabled.
    State,
    /// The latest sync's backlog after it.
    Backlog,
    /// When the latest sync without an error ended.
    LastSuccess,
    /// The account, then the name.
    Account,
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    /// Smallest (or worst state) first.
    Asc,
    /// Largest first.
    Desc,
}

/// `/api/v1/overview?sort=&order=&page=&per_page=&state=`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from the raw query string, to refuse unknown and repeated keys.
pub struct OverviewParams {
    /// The order (default `state`).
    sort: Option<OverviewSort>,
    /// Default: the most alarming first (`desc` for `backlog`, `asc` otherwise).
    order: Option<SortOrder>,
    /// From 1 (default 1).
    #[param(minimum = 1, maximum = 4294967295_u64)]
    page: Option<u64>,
    /// 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    per_page: Option<u64>,
    /// Only integrations in this state (the counts are always of all).
    state: Option<OverviewState>,
}

/// How many integrations are in each state.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct OverviewCounts {
    /// Failed on something the customer must fix.
    pub needs_action: usize,
    /// Failed on a busy or unreachable Splunk: retried by itself.
    pub retrying: usize,
    /// No sync has posted yet.
    pub pending: usize,
    /// The latest sync that posted ended without an error.
    pub healthy: usize,
    /// Off, or its account's feature is.
    pub disabled: usize,
}

impl OverviewCounts {
    fn count(&mut self, state: OverviewState) {
        *match state {
            OverviewState::NeedsAction => &mut self.needs_action,
            OverviewState::Retrying => &mut self.retrying,
            OverviewState::Pending => &mut self.pending,
            OverviewState::Healthy => &mut self.healthy,
            OverviewState::Disabled => &mut self.disabled,
        } += 1;
    }
}

/// One integration on the overview.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OverviewRowView {
    /// The integration.
    pub id: uuid::Uuid,
    /// Its account.
    pub account: crate::model::AccountId,
    /// Its name.
    pub name: String,
    /// Its Enable toggle.
    pub enabled: bool,
    /// The page's badge.
    pub state: OverviewState,
    /// The latest sync's `backlog_after` (`null`: unknown).
    pub backlog: Option<u64>,
    /// When the latest sync without an error ended.
    pub last_success: Option<DateTime<Utc>>,
    /// The latest sync.
    pub last_sync: Option<SyncView>,
}

/// `GET /api/v1/overview`'s answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Overview {
    /// Integrations per state, of all of them.
    pub counts: OverviewCounts,
    /// Integrations listed (of `state`, when given).
    pub total: usize,
    /// The order used.
    pub sort: OverviewSort,
    /// Ascending or descending.
    pub order: SortOrder,
    /// This page, from 1.
    pub page: u64,
    /// Integrations per page.
    pub per_page: u64,
    /// Pages in all.
    pub pages: u64,
    /// The state listed (`null`: all).
    pub state: Option<OverviewState>,
    /// This page's integrations.
    pub integrations: Vec<OverviewRowView>,
}

/// `GET /api/v1/overview?sort=&order=&page=&per_page=&state=` (admin).
#[utoipa::path(get, path = "/api/v1/overview", operation_id = "overview", tag = "integrations",
    params(OverviewParams), security(("admin" = [])),
    responses((status = 200, description = "One page of every integration, sorted and counted", body = Overview)))]
pub async fn overview(
    state: web::Data<AppState>,
    caller: Caller,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let OverviewQuery {
        key,
        descending,
        page,
        per_page,
        only,
    } = overview_query(req.query_string())?;
    let store = state.store.clone();
    let rows = web::block(move || store.overview_rows()).await??;
    let mut counts = OverviewCounts::default();
    let mut keyed: Vec<Keyed> = Vec::with_capacity(rows.len());
    for row in rows {
        let st = OverviewState::of(&row);
        counts.count(st);
        if only.is_some_and(|o| o != st) {
            continue;
        }
        keyed.push(Keyed {
            state: st,
            backlog: row.summary.as_ref().and_then(|s| s.last.backlog_after),
            last_success: row.summary.as_ref().and_then(|s| s.last_success),
            row,
        });
    }
    let total = keyed.len();
    let skip = ((page - 1) * per_page).min(total as u64) as usize;
    let end = (skip + per_page as usize).min(total);
    // Only the requested page needs to be in order.
    if end < total {
        keyed.select_nth_unstable_by(end, |a, b| compare(a, b, key, descending));
        keyed.truncate(end);
    }
    keyed.sort_unstable_by(|a, b| compare(a, b, key, descending));
    let page_rows: Vec<_> = keyed[skip..]
        .iter()
        .map(|k| OverviewRowView {
            id: k.row.id,
            account: k.row.account.clone(),
            name: k.row.name.clone(),
            enabled: k.row.enabled,
            state: k.state,
            backlog: k.backlog,
            last_success: k.last_success,
            last_sync: k.row.summary.as_ref().map(|s| sync_view(&s.last)),
        })
        .collect();
    Ok(HttpResponse::Ok().json(Overview {
        counts,
        total,
        sort: key.word(),
        order: if descending {
            SortOrder::Desc
        } else {
            SortOrder::Asc
        },
        page,
        per_page,
        pages: (total as u64).div_ceil(per_page),
        state: only,
        integrations: page_rows,
    }))
}
