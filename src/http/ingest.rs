//! Ingest API: the platform posts audit events and job snapshots. A request is
//! validated whole, stored atomically, and flushed to disk before it is answered.

use super::accounts::ingest_limit;
use super::auth::Caller;
use super::errors::ApiError;
use super::{account_of, read_body_sized, AppState};
use crate::hec::encode::EventSize;
use crate::ingest_limit::{Limit, Take};
use crate::metrics::{IngestLabels, RejectLabels};
use crate::model::fields::read_array;
use crate::model::{AccountId, AuditEvent, FieldError, JobSnapshot};
use crate::store::{Store, StoreError};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Reads a whole ingest body into validated items, the first bad one named.
type BodyReader<T> = fn(&[u8], DateTime<Utc>) -> Result<Vec<T>, FieldError>;

/// An item's size as a HEC event, measured exactly when above the limit given.
type Weigh<T> = fn(&mut EventSize<'_>, &T, usize) -> usize;

/// How one source's ingest body becomes items: read and validated, then each
/// weighed as the HEC event it will be.
struct Items<T> {
    read: BodyReader<T>,
    weigh: Weigh<T>,
}

/// Refuses the first item larger than `max_event_bytes` as a HEC event: no Splunk
/// would take it (Splunk's own limit is about 5 MB), so it would only wait in the
/// store and then in the dead letters.
fn within_event_limit<T>(
    items: &[T],
    state: &AppState,
    account: &AccountId,
    weigh: Weigh<T>,
) -> Result<(), FieldError> {
    let max = state.config.max_event_bytes();
    let mut size = EventSize::new(&state.config.host, account);
    for (index, item) in items.iter().enumerate() {
        let bytes = weigh(&mut size, item, max);
        if bytes > max {
            return Err(FieldError {
                index: Some(index),
                field: None,
                problem: format!(
                    "is {bytes} bytes as a Splunk event, more than max_event_bytes ({max}): Splunk refuses events this large; send it smaller"
                ),
            });
        }
    }
    Ok(())
}

/// The one ingest path: check the caller, read and validate every item (the first
/// bad one names its index and field, and nothing is stored), store them all in
/// one atomic write off the async workers, and answer only once they are on disk.
async fn ingest<T: Send + 'static, R: Send + 'static>(
    state: &AppState,
    caller: &Caller,
    account: &str,
    body: (web::Payload, Option<usize>),
    source: &str,
    items: Items<T>,
    write: fn(&Store, &AccountId, &mut Vec<T>) -> Result<R, StoreError>,
) -> Result<R, ApiError> {
    let Items { read, weigh } = items;
    let labels = IngestLabels {
        source: source.into(),
    };
    state.metrics.ingest_requests.get_or_create(&labels).inc();
    // Set when the disk reserve refuses the request, for the rejection's label.
    let for_disk = std::cell::Cell::new(false);
    let result = async {
        caller.require_ingest()?;
        let account = account_of(account)?;
        if let Some(reason) = state.store.fault() {
            // Before reading the body: nothing can be stored until the fault goes.
            return Err(StoreError::Unavailable(reason).into());
        }
        if let Some(refusal) = state.disk_reserve.refusal(&account) {
            // Before reading the body: below the disk reserve nothing of it is stored.
            for_disk.set(true);
            return Err(ApiError::unavailable(
                refusal.message(&account),
                crate::disk_reserve::RETRY_AFTER_SECS,
            ));
        }
        // On PostgreSQL a round trip: off the async worker (sled's read is local).
        let stored = if state.store.postgres().is_some() {
            let (store, account) = (state.store.clone(), account.clone());
            web::block(move || store.account(&account)).await??
        } else {
            state.store.account(&account)?
        };
        let limit = ingest_limit(state, stored.as_ref());
        let quota = stored
            .as_ref()
            .and_then(|a| a.max_backlog_bytes)
            .unwrap_or(state.config.account_max_backlog_bytes);
        if let Some(wait) = state.ingest_limits.dry(&account, limit, Instant::now()) {
            // Before reading the body: a flood costs little to refuse.
            return Err(over_rate(&account, limit, None, wait));
        }
        let body = read_body_sized(body.0, body.1, &state.config).await?;
        let body_bytes = body.len() as u64;
        let items = read(&body, Utc::now())?;
        within_event_limit(&items, state, &account, weigh)?;
        let n = items.len() as u64;
        match state.ingest_limits.take(&account, limit, n, Instant::now()) {
            Take::Granted => {}
            Take::Wait(wait) => return Err(over_rate(&account, limit, Some(n), wait)),
            Take::LargerThanBurst => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "a request of {n} events is more than account {}'s ingest burst ({} events): nothing was stored; send them in smaller requests",
                        account.as_str(),
                        limit.burst
                    ),
                ))
            }
        }
        let stored = async {
            let store = state.store.clone();
            // A write that lands in a database reopened after a fault is not acknowledged.
            let generation = store.generation()?;
            let account = account.clone();
            let mut items = items;
            let (out, items) = web::block(move || {
                let out = store.noted(write(&store, &account, &mut items));
                (out, items)
            })
            .await?;
            // Freed here, on the worker that read them: the allocator's cheaper path.
            drop(items);
            let out = out?;
            state.store.flush_since(generation).await?;
            Ok::<_, ApiError>(out)
        }
        .await;
        if stored.is_err() {
            // Nothing was acknowledged: the platform sends it again, uncharged.
            state.ingest_limits.refund(&account, n);
        } else {
            over_quota(state, &account, quota).await;
            // The stored events take about what their body did: a large write has
            // the free space read again at once, not at the next period.
            state.disk_reserve.wrote(body_bytes);
        }
        stored
    }
    .await;
    if let Err(e) = &result {
        let reason = match e.status.as_u16() {
            503 if for_disk.get() => "disk_reserve",
            413 => "too_large",
            429 => "rate_limited",
            401 | 403 => "unauthorized",
            400..=499 => "invalid",
            _ => "unavailable",
        };
        state
            .metrics
            .ingest_rejections
            .get_or_create(&RejectLabels {
                source: source.into(),
                reason: reason.into(),
            })
            .inc();
    }
    result
}

/// The body length the request declares, if it does (a chunked body does not).
fn declared_length(request: &HttpRequest) -> Option<usize> {
    request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Asks for a sweep of the account now when this ingest took its stored events over
/// its backlog quota, so that the quota holds within moments, not a sweep period. The
/// request itself is not refused: its events are the newest, the ones to keep.
///
/// `quota` is the account's as read for this request. On PostgreSQL the stored
/// bytes are one row's column (kept by every write), read off the async worker, and
/// the sweep runs on this node, whichever node runs the account's integrations.
async fn over_quota(state: &AppState, account: &AccountId, quota: u64) {
    let stored = if state.store.postgres().is_some() {
        let (store, a) = (state.store.clone(), account.clone());
        match web::block(move || store.stored_bytes(&a)).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    } else {
        state.store.stored_bytes(account)
    };
    match stored.map(|bytes| bytes > quota) {
        Ok(true) => state.store.ask_sweep(account),
        Ok(false) => {}
        // The events are stored; the periodic sweep still sees to the quota.
        Err(e) => log::warn!("ingest: cannot check account {account}'s backlog quota: {e}"),
    }
}

/// 429 for an account over its ingest rate; `Retry-After` in whole seconds, at
/// least one.
fn over_rate(account: &AccountId, limit: Limit, n: Option<u64>, wait: Duration) -> ApiError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0 || wait.is_zero());
    let request = n.map_or_else(
        || "this request".to_owned(),
        |n| format!("this request of {n} events"),
    );
    ApiError::too_many_requests(
        format!(
            "account {} is over its ingest rate ({} events/s, burst {}): nothing of {request} was stored; retry after {secs} s",
            account.as_str(),
            limit.per_sec,
            limit.burst
        ),
        secs,
    )
}

/// `POST …/audit`'s answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"accepted": 1, "duplicates": 0}))]
pub struct AuditAccepted {
    /// Events stored.
    pub accepted: usize,
    /// Events whose id the account already had (a retry): ignored.
    pub duplicates: usize,
}

/// `POST …/jobs`'s answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"accepted": 1}))]
pub struct JobsAccepted {
    /// Snapshots taken.
    pub accepted: usize,
}

/// Posts audit events: validated whole, stored atomically, on disk before the answer.
#[utoipa::path(post, path = "/api/v1/accounts/{account}/audit", operation_id = "postAudit", tag = "ingest",
    params(super::AccountPath), security(("admin" = []), ("ingest" = [])),
    request_body(content = Vec<super::bodies::AuditEventBody>, example = json!([
        {"id": "evt-1", "time": "2026-11-25T10:00:00Z", "connector": "m365-1", "acl": "admin",
         "method": "POST", "user": "ann@example.com", "ip": "192.0.2.7",
         "metadata": {"target": "mailbox"}, "event": "Restore started"}])),
    responses((status = 200, description = "Stored, and on disk", body = AuditAccepted),
        (status = 413, description = "The body is larger than max_body_bytes, or holds more events than the account's burst", body = super::errors::ErrorBody),
        (status = 503, description = "Nothing was stored: the store cannot write (full or read-only disk), or the free space is under min_free_disk_bytes and this account holds one of the largest backlogs (under half of it: every account); retry after `Retry-After` seconds where given", body = super::errors::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait (given when the disk reserve refused)"))),
        (status = 429, description = "The account is over its ingest rate: nothing was stored; retry after `Retry-After` seconds", body = super::errors::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait")))))]
pub async fn audit(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    request: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let read = AuditEvent::read_body;
    let out = ingest(
        &state,
        &caller,
        &path,
        (body, declared_length(&request)),
        "audit",
        Items {
            read,
            weigh: |size, ev, max| size.encoded_audit(ev, max),
        },
        Store::append_encoded_audit,
    )
    .await?;
    let labels = IngestLabels {
        source: "audit".into(),
    };
    state
        .metrics
        .ingest_events
        .get_or_create(&labels)
        .inc_by(out.accepted as u64);
    Ok(HttpResponse::Ok().json(AuditAccepted {
        accepted: out.accepted,
        duplicates: out.duplicates,
    }))
}

/// Posts job snapshots: validated whole, stored atomically, on disk before the answer.
#[utoipa::path(post, path = "/api/v1/accounts/{account}/jobs", operation_id = "postJobs", tag = "ingest",
    params(super::AccountPath), security(("admin" = []), ("ingest" = [])),
    request_body(content = Vec<super::bodies::JobSnapshotBody>, example = json!([
        {"job": "job-42", "connector": "m365-1", "type": "backup", "status": "in progress",
         "progress": 0.4, "description": "Backup of Microsoft 365", "start_time": "2026-11-25T09:55:00Z"}])),
    responses((status = 200, description = "Stored, and on disk", body = JobsAccepted),
        (status = 413, description = "The body is larger than max_body_bytes, or holds more snapshots than the account's burst", body = super::errors::ErrorBody),
        (status = 503, description = "Nothing was stored: the store cannot write (full or read-only disk), or the free space is under min_free_disk_bytes and this account holds one of the largest backlogs (under half of it: every account); retry after `Retry-After` seconds where given", body = super::errors::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait (given when the disk reserve refused)"))),
        (status = 429, description = "The account is over its ingest rate: nothing was stored; retry after `Retry-After` seconds", body = super::errors::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait")))))]
pub async fn jobs(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    request: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let read = |body: &[u8], now| read_array(body, now, JobSnapshot::from_json);
    let accepted = ingest(
        &state,
        &caller,
        &path,
        (body, declared_length(&request)),
        "jobs",
        Items {
            read,
            weigh: |size, job, max| size.job(job, max),
        },
        |store, account, jobs| store.put_jobs(account, std::mem::take(jobs)),
    )
    .await?;
    let labels = IngestLabels {
        source: "jobs".into(),
    };
    state
        .metrics
        .ingest_events
        .get_or_create(&labels)
        .inc_by(accepted as u64);
    Ok(HttpResponse::Ok().json(JobsAccepted { accepted }))
}
