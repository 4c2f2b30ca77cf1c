//! Ingest API: the platform posts audit events and job snapshots. A request is
//! validated whole, stored atomically, and flushed to disk before it is answered.

use super::auth::Caller;
use super::errors::ApiError;
use super::{account_of, read_body, AppState};
use crate::metrics::{IngestLabels, RejectLabels};
use crate::model::fields::read_array;
use crate::model::{AccountId, AuditEvent, FieldError, JobSnapshot};
use crate::store::{Store, StoreError};
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::json;

/// Reads a whole ingest body into validated items, the first bad one named.
type BodyReader<T> = fn(&[u8], DateTime<Utc>) -> Result<Vec<T>, FieldError>;

/// The one ingest path: check the caller, read and validate every item (the first
/// bad one names its index and field, and nothing is stored), store them all in
/// one atomic write off the async workers, and answer only once they are on disk.
async fn ingest<T: Send + 'static, R: Send + 'static>(
    state: &AppState,
    caller: &Caller,
    account: &str,
    body: web::Payload,
    source: &str,
    read: BodyReader<T>,
    write: fn(&Store, &AccountId, Vec<T>) -> Result<R, StoreError>,
) -> Result<R, ApiError> {
    let labels = IngestLabels {
        source: source.into(),
    };
    state.metrics.ingest_requests.get_or_create(&labels).inc();
    let result = async {
        caller.require_ingest()?;
        let account = account_of(account)?;
        if let Some(reason) = state.store.fault() {
            // Before reading the body: nothing can be stored until the fault goes.
            return Err(StoreError::Unavailable(reason).into());
        }
        let body = read_body(body, &state.config).await?;
        let items = read(&body, Utc::now())?;
        let store = state.store.clone();
        // A write that lands in a database reopened after a fault is not acknowledged.
        let generation = store.generation()?;
        let out = web::block(move || store.noted(write(&store, &account, items))).await??;
        state.store.flush_since(generation).await?;
        Ok::<_, ApiError>(out)
    }
    .await;
    if let Err(e) = &result {
        let reason = match e.status.as_u16() {
            413 => "too_large",
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

pub async fn audit(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let read = AuditEvent::read_body;
    let out = ingest(
        &state,
        &caller,
        &path,
        body,
        "audit",
        read,
        Store::append_audit,
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
    Ok(HttpResponse::Ok().json(json!({"accepted": out.accepted, "duplicates": out.duplicates})))
}

pub async fn jobs(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let read = |body: &[u8], now| read_array(body, now, JobSnapshot::from_json);
    let accepted = ingest(&state, &caller, &path, body, "jobs", read, Store::put_jobs).await?;
    let labels = IngestLabels {
        source: "jobs".into(),
    };
    state
        .metrics
        .ingest_events
        .get_or_create(&labels)
        .inc_by(accepted as u64);
    Ok(HttpResponse::Ok().json(json!({"accepted": accepted})))
}
