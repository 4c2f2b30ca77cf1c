//! Who is calling: `Authorization: Bearer <token>` mapped to a role: the admin and
//! ingest tokens of the config, or an account token made through the API.

use super::errors::ApiError;
use super::AppState;
use crate::model::AccountId;
use crate::store::AccountToken;
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use std::future::ready;

/// Who is calling, from the bearer token: the admin, the platform's ingest, or an account's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// May do everything.
    Admin,
    /// May only post events.
    Ingest,
    /// May read and manage one account's integrations.
    Account(AccountToken),
}

/// Compares SHA-256 digests of both sides in constant time: neither where a guess
/// first differs nor its length shows in how long the comparison takes.
fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    digest(a).as_ref().ct_eq(digest(b).as_ref()).into()
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let unauthorized = |m: &str| Err(ApiError::new(StatusCode::UNAUTHORIZED, m));
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return Box::pin(ready(Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "app state missing",
            ))));
        };
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = match header.and_then(|h| h.strip_prefix("Bearer ")) {
            Some(t) => t.trim(),
            None if header.is_some() => {
                return Box::pin(ready(unauthorized(
                    "the Authorization header must be `Bearer <token>`",
                )))
            }
            None => {
                return Box::pin(ready(unauthorized(
                    "this endpoint needs `Authorization: Bearer <token>`",
                )))
            }
        };
        let config = &state.config;
        // Both compared every time, so the time taken does not say which one matched.
        let (admin, ingest) = (
            same(token, &config.admin_token),
            same(token, &config.ingest_token),
        );
        if admin {
            return Box::pin(ready(Ok(Caller::Admin)));
        }
        if ingest {
            return Box::pin(ready(Ok(Caller::Ingest)));
        }
        // Account tokens are looked up by hash, so comparing timing reveals nothing.
        let found = move |r: Result<Option<AccountToken>, crate::store::StoreError>| match r {
            Ok(Some(t)) => Ok(Caller::Account(t)),
            Ok(None) => unauthorized("the bearer token is not valid"),
            Err(e) => Err(e.into()),
        };
        if state.store.postgres().is_none() {
            return Box::pin(ready(found(state.store.token_for_secret(token))));
        }
        // On PostgreSQL the lookup is a round trip (up to the connect timeout while
        // PostgreSQL is down): off the async worker, so that unknown tokens cannot
        // park the workers that answer `/healthz`.
        let store = state.store.clone();
        let token = token.to_owned();
        Box::pin(async move {
            let r = web::block(move || store.token_for_secret(&token)).await?;
            found(r)
        })
    }
}

impl Caller {
    /// Who did it, for the account's audit log.
    pub fn owner(&self) -> String {
        match self {
            Caller::Admin => "siemsync admin".into(),
            Caller::Ingest => "siemsync ingest".into(),
            Caller::Account(t) => match &t.name {
                Some(n) => format!("account token {n:?} ({})", t.id),
                None => format!("account token {}", t.id),
            },
        }
    }

    fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "this token may not do that")
    }

    /// Refuses (403) anyone but the admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            _ => Err(Self::forbidden()),
        }
    }

    /// Posting events: admin and ingest tokens.
    pub fn require_ingest(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin | Caller::Ingest => Ok(()),
            Caller::Account(_) => Err(Self::forbidden()),
        }
    }

    /// Reading or managing one account: admin, or that account's own token. Another
    /// account's token gets 404, so it learns nothing about whether the account exists.
    pub fn require_account(&self, account: &AccountId) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Account(t) if &t.account == account => Ok(()),
            Caller::Account(_) => Err(ApiError::not_found("account")),
            Caller::Ingest => Err(Self::forbidden()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_match_only_exactly_whatever_their_length() {
        let t = "test-admin-token-0123456789";
        assert!(same(t, t));
        for other in [
            "",
            "test-admin-token-012345678",
            "test-admin-token-01234567890",
            "Test-admin-token-0123456789",
            "test-admin-token-0123456788",
        ] {
            assert!(!same(other, t), "{other:?}");
        }
    }
}
