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
    let body = read_body(body, state.config.max_body_bytes).await?;
    let enabled = account_settings(&parse_object(&body)?)?;
    let account = Account {
        siem_enabled: enabled,
        updated_at: Utc::now(),
    };
    state.store.put_account(&id, &account)?;
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
