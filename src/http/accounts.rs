//! `PUT/GET /api/v1/accounts/{account}`: the per-account feature switch.

use super::auth::Caller;
use super::errors::ApiError;
use super::{account_of, read_body, AppState};
use crate::model::fields::parse_object;
use crate::model::integration::account_settings;
use crate::store::Account;
use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde_json::json;

fn view(id: &str, a: &Account) -> serde_json::Value {
    json!({"account": id, "siem_enabled": a.siem_enabled, "updated_at": a.updated_at})
}

pub async fn put(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = account_of(&path)?;
    let body = read_body(body, &state.config).await?;
    let enabled = account_settings(&parse_object(&body)?)?;
    let account = Account {
        siem_enabled: enabled,
        updated_at: Utc::now(),
    };
    state.store.put_account(&id, &account)?;
    state.store.flush().await?;
    // Turning the feature off stops the account's integrations; on starts the enabled ones.
    for it in state.store.integrations_of(&id)? {
        let active = state.store.is_active(&it);
        state
            .supervisor
            .send(crate::actors::messages::Upsert {
                integration: it,
                active,
            })
            .await?;
    }
    Ok(HttpResponse::Ok().json(view(id.as_str(), &account)))
}

pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = account_of(&path)?;
    caller.require_account(&id)?;
    match state.store.account(&id)? {
        Some(a) => Ok(HttpResponse::Ok().json(view(id.as_str(), &a))),
        None => Err(ApiError::not_found("account")),
    }
}
