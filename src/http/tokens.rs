//! `…/accounts/{account}/tokens`: account-scoped API tokens, managed by the admin.

use super::auth::Caller;
use super::bodies::TokenBody;
use super::errors::ApiError;
use super::{account_of, read_body, AccountPath, AppState};
use crate::model::fields::{parse_object, Fields};
use crate::model::AccountId;
use crate::store::AccountToken;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A new account token: its secret is here and never again.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "0b7f3c1e-5a4d-4f7e-9a51-2d8c6b0e4f11", "account": "acme",
    "name": "acme's SIEM admins", "created_at": "2026-11-25T09:50:00Z",
    "token": "ssa_5f1c0e9a8b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e",
    "note": "This is the only time the token is shown: store it now."}))]
pub struct NewToken {
    /// Its id, to revoke it by.
    pub id: Uuid,
    /// The one account it may act for.
    pub account: AccountId,
    /// The name it was given.
    pub name: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// The bearer secret (`ssa_` and 64 hex digits), shown this once.
    pub token: String,
    /// A reminder that it is shown once.
    pub note: String,
}

#[utoipa::path(post, path = "/api/v1/accounts/{account}/tokens", operation_id = "createToken", tag = "tokens",
    params(AccountPath), security(("admin" = [])),
    request_body(content = Option<TokenBody>, description = "Optional: a name (the body may be empty)"),
    responses((status = 201, description = "The token, with its secret shown this once", body = NewToken)))]
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
    Ok(HttpResponse::Created().json(NewToken {
        id: token.id,
        account: token.account,
        name: token.name,
        created_at: token.created_at,
        token: secret,
        note: "This is the only time the token is shown: store it now.".into(),
    }))
}

#[utoipa::path(get, path = "/api/v1/accounts/{account}/tokens", operation_id = "listTokens", tag = "tokens",
    params(AccountPath), security(("admin" = [])),
    responses((status = 200, description = "The account's tokens, never their secrets", body = Vec<AccountToken>)))]
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

#[utoipa::path(delete, path = "/api/v1/accounts/{account}/tokens/{id}", operation_id = "deleteToken", tag = "tokens",
    params(("account" = AccountId, Path, description = "The account", example = "acme"),
        ("id" = Uuid, Path, description = "The token's id")),
    security(("admin" = [])),
    responses((status = 204, description = "Revoked at once"),
        (status = 404, description = "No such token of this account", body = super::errors::ErrorBody)))]
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
