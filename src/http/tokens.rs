//! `…/accounts/{account}/tokens`: account-scoped API tokens, managed by the admin.

use super::auth::Caller;
use super::errors::ApiError;
use super::{account_of, read_body, AppState};
use crate::model::fields::{parse_object, Fields};
use actix_web::{web, HttpResponse};
use serde_json::json;
use uuid::Uuid;

/// `POST`: makes a token; its secret is in this answer and never again.
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let account = account_of(&path)?;
    let body = read_body(body, &state.config).await?;
    let name = if body.iter().all(|b| b.is_ascii_whitespace()) {
        None
    } else {
        let v = parse_object(&body)?;
        let mut f = Fields::new(&v, None)?;
        let name = f.text("name")?;
        if name.as_ref().is_some_and(|n| n.chars().count() > 100) {
            return Err(f.error("name", "must be at most 100 characters").into());
        }
        f.finish()?;
        name
    };
    let (token, secret) = state.store.create_token(&account, name)?;
    state.store.flush().await?;
    log::info!("account token {} created for account {}", token.id, account);
    Ok(HttpResponse::Created().json(json!({
        "id": token.id,
        "account": token.account,
        "name": token.name,
        "created_at": token.created_at,
        "token": secret,
        "note": "This is the only time the token is shown: store it now.",
    })))
}

/// `GET`: the account's tokens, without their secrets.
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let account = account_of(&path)?;
    Ok(HttpResponse::Ok().json(state.store.tokens_of(&account)?))
}

/// `DELETE …/tokens/{id}`: revokes at once.
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let account = account_of(&path.0)?;
    let id = Uuid::parse_str(&path.1).map_err(|_| ApiError::not_found("token"))?;
    if state.store.delete_token(&account, &id)? {
        state.store.flush().await?;
        log::info!("account token {id} of account {account} revoked");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found("token"))
    }
}
