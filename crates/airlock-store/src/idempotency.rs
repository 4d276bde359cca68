//! Idempotency keys: a repeated POST with the same key returns the first result.

use airlock_core::AccountId;

use crate::{Result, Store, StoreError};

/// How long a key is remembered.
pub(crate) const IDEMPOTENCY_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// What to do with a request that carries an idempotency key.
#[derive(Debug, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First time: run it, then `complete` or `abandon` the key.
    Proceed,
    /// Seen and finished: answer with the stored result.
    Replay { status: u16, body: String },
    /// Seen, still running.
    InProgress,
    /// Seen with another request (method, path or body differ).
    Mismatch,
}

impl Store {
    /// Claims `key` for a request with this fingerprint, or reports what happened to it before.
    pub async fn idempotency_begin(
        &self,
        account: &AccountId,
        key: &str,
        fingerprint: &str,
        now_ms: i64,
    ) -> Result<IdempotencyBegin> {
        // Forget expired keys of this account first so they can be claimed again.
        sqlx::query("DELETE FROM idempotency_keys WHERE account_id = $1 AND create_time_ms < $2")
            .bind(account.as_str().to_owned())
            .bind(now_ms - IDEMPOTENCY_TTL_MS)
            .execute(self.pool())
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (account_id, key, fingerprint, create_time_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (account_id, key) DO NOTHING",
        )
        .bind(account.as_str().to_owned())
        .bind(key.to_owned())
        .bind(fingerprint.to_owned())
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(IdempotencyBegin::Proceed);
        }
        let row: Option<(String, Option<i64>, Option<String>)> =
            sqlx::query_as("SELECT fingerprint, status, response FROM idempotency_keys WHERE account_id = $1 AND key = $2")
                .bind(account.as_str().to_owned())
                .bind(key.to_owned())
                .fetch_optional(self.pool())
                .await?;
        Ok(match row {
            // Abandoned between our insert and select: let the caller retry from scratch.
            None => IdempotencyBegin::InProgress,
            Some((fp, _, _)) if fp != fingerprint => IdempotencyBegin::Mismatch,
            Some((_, Some(status), Some(body))) => IdempotencyBegin::Replay {
                status: u16::try_from(status)
                    .map_err(|_| StoreError::Corrupt("idempotency status".into()))?,
                body,
            },
            Some(_) => IdempotencyBegin::InProgress,
        })
    }

    /// Stores the result of a claimed key.
    pub async fn idempotency_complete(
        &self,
        account: &AccountId,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE idempotency_keys SET status = $1, response = $2 WHERE account_id = $3 AND key = $4")
            .bind(i64::from(status))
            .bind(body.to_owned())
            .bind(account.as_str().to_owned())
            .bind(key.to_owned())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Releases a claimed key whose request failed in a way worth retrying.
    pub async fn idempotency_abandon(&self, account: &AccountId, key: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2 AND status IS NULL",
        )
        .bind(account.as_str().to_owned())
        .bind(key.to_owned())
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
