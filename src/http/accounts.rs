//! `PUT/GET /api/v1/accounts/{account}`: the per-account feature switch and ingest
//! allowance, and
//! `GET /api/v1/accounts`: every account siemsync knows, for the administrator.

use super::auth::Caller;
use super::bodies::AccountBody;
use super::errors::ApiError;
use super::errors::ErrorBody;
use super::{account_of, read_body, AccountPath, AppState};
use crate::ingest_limit::Limit;
use crate::model::account::AccountChange;
use crate::model::fields::parse_object;
use crate::model::AccountId;
use crate::retention::Usage;
use crate::store::{Account, StoreError};
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The ingest allowance in effect for `account`: its own where set, else the config's.
pub fn ingest_limit(state: &AppState, account: Option<&Account>) -> Limit {
    Limit {
        per_sec: account
            .and_then(|a| a.ingest_events_per_sec)
            .unwrap_or(state.config.account_ingest_events_per_sec),
        burst: account
            .and_then(|a| a.ingest_burst)
            .unwrap_or(state.config.account_ingest_burst),
    }
}

/// The ingest allowance in effect for an account.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IngestLimitView {
    /// Events per second it may post, sustained.
    pub events_per_sec: u64,
    /// Events it may post at once after a quiet period.
    pub burst: u64,
}

/// The account as the API shows it: the switch, the per-account overrides (`null`:
/// the operator's default, as in a `PUT`), the allowance in effect, how many
/// ingest requests were refused for it since siemsync started (for its rate, for
/// the disk reserve) and whether the disk reserve refuses it now, and its share of the
/// store (stored and backlog bytes, the quota, what the quota dropped).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"account": "acme", "siem_enabled": true,
    "updated_at": "2026-11-25T09:50:00Z", "ingest_events_per_sec": null, "ingest_burst": null,
    "ingest_limit": {"events_per_sec": 100000, "burst": 2000000}, "rate_limited_requests": 0,
    "disk_refused": false, "disk_refused_requests": 0, "max_backlog_bytes": null, "usage": {"stored_bytes": 52428800, "backlog_bytes": 1048576,
    "max_backlog_bytes": 1073741824, "quota_drops": null}}))]
pub struct AccountView {
    /// The account.
    pub account: AccountId,
    /// Whether its SIEM feature is on.
    pub siem_enabled: bool,
    /// When the switch was last set (`null`: never).
    pub updated_at: Option<DateTime<Utc>>,
    /// Its own ingest rate (`null`: the operator's default).
    pub ingest_events_per_sec: Option<u64>,
    /// Its own ingest burst (`null`: the operator's default).
    pub ingest_burst: Option<u64>,
    /// The allowance in effect.
    pub ingest_limit: IngestLimitView,
    /// Ingest requests refused for the rate since siemsync started (once more than
    /// 4096 accounts were refused, the counts of accounts quiet long enough to refill
    /// their allowance start again at 0).
    pub rate_limited_requests: u64,
    /// Whether its ingest is refused now for the disk reserve: the free space is
    /// under `min_free_disk_bytes` and it holds one of the largest backlogs (or the
    /// free space is under half of it, which refuses every account).
    pub disk_refused: bool,
    /// Ingest requests refused for the disk reserve since siemsync started.
    pub disk_refused_requests: u64,
    /// Its own backlog quota in bytes (`null`: the operator's default).
    pub max_backlog_bytes: Option<u64>,
    /// Its share of the store.
    pub usage: Usage,
}

/// One account in the administrator's list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountSummary {
    /// The account.
    pub account: AccountId,
    /// Whether its SIEM feature is on.
    pub siem_enabled: bool,
    /// When the switch was last set (`null`: never).
    pub updated_at: Option<DateTime<Utc>>,
    /// How many integrations it has.
    pub integrations: usize,
    /// Its share of the store.
    pub usage: Usage,
    /// Ingest requests refused for the rate since siemsync started (once more than
    /// 4096 accounts were refused, the counts of accounts quiet long enough to refill
    /// their allowance start again at 0).
    pub rate_limited_requests: u64,
    /// Whether its ingest is refused now for the disk reserve.
    pub disk_refused: bool,
    /// Ingest requests refused for the disk reserve since siemsync started.
    pub disk_refused_requests: u64,
}

fn view(
    state: &AppState,
    id: &AccountId,
    siem_enabled: bool,
    updated_at: Option<DateTime<Utc>>,
    account: Option<&Account>,
) -> Result<AccountView, ApiError> {
    let limit = ingest_limit(state, account);
    let usage = crate::retention::usage(&state.store, id, state.config.account_max_backlog_bytes)?;
    Ok(AccountView {
        account: id.clone(),
        siem_enabled,
        updated_at,
        ingest_events_per_sec: account.and_then(|a| a.ingest_events_per_sec),
        ingest_burst: account.and_then(|a| a.ingest_burst),
        ingest_limit: IngestLimitView {
            events_per_sec: limit.per_sec,
            burst: limit.burst,
        },
        rate_limited_requests: state.ingest_limits.refused(id),
        disk_refused: state.disk_reserve.standing(id).is_some(),
        disk_refused_requests: state.disk_reserve.refused_requests(id),
        max_backlog_bytes: account.and_then(|a| a.max_backlog_bytes),
        usage,
    })
}

/// Serialises account changes (read, then write) in this process.
static ACCOUNT_CHANGES: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[utoipa::path(put, path = "/api/v1/accounts/{account}", operation_id = "putAccount", tag = "accounts",
    params(AccountPath), security(("admin" = [])),
    request_body(content = AccountBody, description = "The switch, and optionally the account's own ingest rate",
        example = json!({"siem_enabled": true})),
    responses((status = 200, description = "The account as stored", body = AccountView,
        links(("createIntegration" = (operation_id = "createIntegration", parameters(("account" = "$request.path.account"))))))))]
/// `PUT /api/v1/accounts/{account}` (admin): turns the account's SIEM feature on
/// or off and sets its own ingest rate; the Supervisor starts or stops its
/// integrations.
pub async fn put(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = account_of(&path)?;
    let body = read_body(body, &state.config).await?;
    let change = AccountChange::from_json(&parse_object(&body)?)?;
    // One account change at a time: a change keeps the fields it leaves out, so two
    // at once must not both start from the same stored record.
    // Held only for these two store calls, never across an await (a worker thread
    // would block on it while the holder waits on that thread).
    let account = {
        let _one_at_a_time = ACCOUNT_CHANGES.lock().unwrap_or_else(|p| p.into_inner());
        let old = state.store.account(&id)?;
        let account = Account {
            siem_enabled: change.siem_enabled,
            updated_at: Utc::now(),
            ingest_events_per_sec: change
                .ingest_events_per_sec
                .apply(old.as_ref().and_then(|a| a.ingest_events_per_sec)),
            ingest_burst: change
                .ingest_burst
                .apply(old.as_ref().and_then(|a| a.ingest_burst)),
            max_backlog_bytes: change
                .max_backlog_bytes
                .apply(old.as_ref().and_then(|a| a.max_backlog_bytes)),
        };
        state.store.put_account(&id, &account)?;
        account
    };
    // Turning the feature off stops the account's integrations; on starts the enabled
    // ones. Each is read again by the Supervisor, after this write.
    let integrations = state.store.integrations_of(&id).inspect_err(|_| {
        // Written, but the list to tell the Supervisor about is unreadable: it reads
        // everything again (and keeps trying while the store fails).
        state.supervisor.do_send(crate::actors::messages::Reconcile);
    })?;
    for it in integrations {
        state.supervisor.do_send(crate::actors::messages::Refresh {
            account: it.account,
            id: it.id,
        });
    }
    state.store.flush().await?;
    // A lowered quota applies now, not at the next period.
    state.store.ask_sweep(&id);
    Ok(HttpResponse::Ok().json(view(
        &state,
        &id,
        account.siem_enabled,
        Some(account.updated_at),
        Some(&account),
    )?))
}

/// `GET /api/v1/accounts/{account}`: the account's feature switch.
#[utoipa::path(get, path = "/api/v1/accounts/{account}", operation_id = "getAccount", tag = "accounts",
    params(AccountPath), security(("admin" = []), ("account" = [])),
    responses((status = 200, description = "The account; `siem_enabled` false for a known account never switched on", body = AccountView),
        (status = 404, description = "siemsync never heard of this account (or it is another account's)", body = ErrorBody)))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = account_of(&path)?;
    caller.require_account(&id)?;
    match state.store.account(&id)? {
        Some(a) => Ok(HttpResponse::Ok().json(view(
            &state,
            &id,
            a.siem_enabled,
            Some(a.updated_at),
            Some(&a),
        )?)),
        // Known (a token, an integration, events) but never switched: the feature is
        // off. Only an account siemsync never heard of is "not found", so that an
        // administrator's typo does not read as "feature off".
        None if state.store.knows_account(&id)? => {
            Ok(HttpResponse::Ok().json(view(&state, &id, false, None, None)?))
        }
        None => Err(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            format!("no account {:?} is known to siemsync: it has no integrations, tokens or events, and its SIEM feature was never switched; check the name", id.as_str()),
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/accounts", operation_id = "listAccounts", tag = "accounts", security(("admin" = [])),
    responses((status = 200, description = "Every account siemsync knows, sorted", body = Vec<AccountSummary>)))]
/// `GET /api/v1/accounts` (admin): every known account with its feature switch and
/// how many integrations it has, sorted by name.
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let accounts: Vec<_> = state
        .store
        .known_accounts()?
        .into_iter()
        .map(|a| {
            let usage = crate::retention::usage(
                &state.store,
                &a.id,
                state.config.account_max_backlog_bytes,
            )?;
            Ok(AccountSummary {
                siem_enabled: a.record.as_ref().is_some_and(|r| r.siem_enabled),
                updated_at: a.record.map(|r| r.updated_at),
                rate_limited_requests: state.ingest_limits.refused(&a.id),
                disk_refused: state.disk_reserve.standing(&a.id).is_some(),
                disk_refused_requests: state.disk_reserve.refused_requests(&a.id),
                account: a.id,
                integrations: a.integrations,
                usage,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(HttpResponse::Ok().json(accounts))
}
