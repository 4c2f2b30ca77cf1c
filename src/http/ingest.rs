//! Ingest API: the platform posts audit events and job snapshots. A request is
//! validated whole, stored atomically, and flushed to disk before it is answered.

use super::auth::Caller;
use super::errors::ApiError;
use super::{account_of, read_body, AppState};
use crate::model::fields::parse_array;
use crate::model::{AuditEvent, JobSnapshot};
use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde_json::json;

pub async fn audit(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require_ingest()?;
    let account = account_of(&path)?;
    let body = read_body(body, state.config.max_body_bytes).await?;
    let now = Utc::now();
    let events = parse_array(&body)?
        .iter()
        .enumerate()
        .map(|(i, v)| AuditEvent::from_json(v, i, now))
        .collect::<Result<Vec<_>, _>>()?;
    let store = state.store.clone();
    let out = web::block(move || store.append_audit(&account, events)).await??;
    state.store.flush().await?;
    Ok(HttpResponse::Ok().json(json!({"accepted": out.accepted, "duplicates": out.duplicates})))
}

pub async fn jobs(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require_ingest()?;
    let account = account_of(&path)?;
    let body = read_body(body, state.config.max_body_bytes).await?;
    let now = Utc::now();
    let jobs = parse_array(&body)?
        .iter()
        .enumerate()
        .map(|(i, v)| JobSnapshot::from_json(v, i, now))
        .collect::<Result<Vec<_>, _>>()?;
    let store = state.store.clone();
    let accepted = web::block(move || store.put_jobs(&account, jobs)).await??;
    state.store.flush().await?;
    Ok(HttpResponse::Ok().json(json!({"accepted": accepted})))
}
