//! Account-scoped API tokens on PostgreSQL: only the SHA-256 hash of the secret is kept.

use super::super::tokens::{hash_hex, new_secret};
use super::super::AccountToken;
use super::error::PgError;
use super::PgStore;
use crate::model::AccountId;
use chrono::{SubsecRound, Utc};
use uuid::Uuid;

fn token_of(r: &tokio_postgres::Row) -> Result<AccountToken, PgError> {
    let account: String = r.get(1);
    Ok(AccountToken {
        id: r.get(0),
        account: AccountId::parse(&account)
            .map_err(|e| super::error::corrupt("an account token", e))?,
        name: r.get(2),
        created_at: r.get(3),
    })
}

impl PgStore {
    /// Makes a token for `account`; returns what is kept and the secret, which is
    /// never stored or shown again.
    pub async fn create_token(
        &self,
        account: &AccountId,
        name: Option<String>,
    ) -> Result<(AccountToken, String), PgError> {
        let secret = new_secret().map_err(PgError::Secret)?;
        let token = AccountToken {
            id: Uuid::new_v4(),
            account: account.clone(),
            name,
            // PostgreSQL keeps microseconds: what is returned is what is stored.
            created_at: Utc::now().trunc_subsecs(6),
        };
        let (t, hash) = (token.clone(), hash_hex(&secret));
        self.run(move |s| async move {
            s.pool
                .get()
                .await?
                .execute(
                    "INSERT INTO account_tokens (id, hash, account, name, created_at) VALUES ($1, $2, $3, $4, $5)",
                    &[&t.id, &hash, &t.account.as_str(), &t.name, &t.created_at],
                )
                .await?;
            Ok(())
        })
        .await?;
        Ok((token, secret))
    }

    /// The account token a bearer secret stands for, if any.
    pub async fn token_for_secret(&self, secret: &str) -> Result<Option<AccountToken>, PgError> {
        let hash = hash_hex(secret);
        self.run(move |s| async move {
            s.pool
                .get()
                .await?
                .query_opt(
                    "SELECT id, account, name, created_at FROM account_tokens WHERE hash = $1",
                    &[&hash],
                )
                .await?
                .as_ref()
                .map(token_of)
                .transpose()
        })
        .await
    }

    pub async fn tokens_of(&self, account: &AccountId) -> Result<Vec<AccountToken>, PgError> {
        let account = account.clone();
        self.run(move |s| async move {
            s.pool
                .get()
                .await?
                .query(
                    "SELECT id, account, name, created_at FROM account_tokens
                     WHERE account = $1 ORDER BY created_at",
                    &[&account.as_str()],
                )
                .await?
                .iter()
                .map(token_of)
                .collect()
        })
        .await
    }

    /// Revokes a token of `account`; false when it has no such token.
    pub async fn delete_token(&self, account: &AccountId, id: &Uuid) -> Result<bool, PgError> {
        let (account, id) = (account.clone(), *id);
        self.run(move |s| async move {
            let n = s
                .pool
                .get()
                .await?
                .execute(
                    "DELETE FROM account_tokens WHERE id = $1 AND account = $2",
                    &[&id, &account.as_str()],
                )
                .await?;
            Ok(n > 0)
        })
        .await
    }
}
