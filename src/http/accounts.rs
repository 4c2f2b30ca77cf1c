//! `PUT/GET /api/v1/accounts/{account}`: the per-account feature switch, and
//! `GET /api/v1/accounts`: every account siemsync knows, for the administrator.

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
        // Known (a token, an integration, events) but never switched: the feature is
        // off. Only an account siemsync never heard of is "not found", so that an
        // administrator's typo does not read as "feature off".
        None if state.store.knows_account(&id)? => Ok(HttpResponse::Ok()
            .json(json!({"account": id, "siem_enabled": false, "updated_at": null}))),
        None => Err(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            format!("no account {:?} is known to siemsync: it has no integrations, tokens or events, and its SIEM feature was never switched; check the name", id.as_str()),
        )),
    }
}

/// `GET /api/v1/accounts` (admin): every known account with its feature switch and
/// how many integrations it has, sorted by name.
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let accounts: Vec<_> = state
        .store
        .known_accounts()?
        .into_iter()
        .map(|a| {
            json!({
                "account": a.id,
                "siem_enabled": a.record.as_ref().is_some_and(|r| r.siem_enabled),
                "updated_at": a.record.map(|r| r.updated_at),
                "integrations": a.integrations,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(accounts))
}
