//! Secrets: metadata and the current sealed value.

use airlock_core::state::Change;
use airlock_core::{AccountId, EnvName, SecretId};
use sqlx::any::AnyRow;

use crate::sql::Sql;
use crate::{col, insert_audit, AuditRow, Listed, Page, Result, SecretRow, Store, StoreError};

const COLUMNS: &str =
    "id, account_id, name, version, sealed, key_id, create_time_ms, update_time_ms";

fn secret(row: &AnyRow) -> Result<SecretRow> {
    Ok(SecretRow {
        id: SecretId::from_trusted(col(row, "id")?),
        account_id: AccountId::from_trusted(col(row, "account_id")?),
        name: EnvName::from_trusted(col(row, "name")?),
        version: col(row, "version")?,
        sealed: col(row, "sealed")?,
        key_id: u32::try_from(col::<i64>(row, "key_id")?)
            .map_err(|_| StoreError::Corrupt("key_id out of range".into()))?,
        create_time_ms: col(row, "create_time_ms")?,
        update_time_ms: col(row, "update_time_ms")?,
    })
}

/// How a secret is referred to: by `sec_` id or by name.
#[derive(Clone, Debug)]
pub enum SecretRef<'a> {
    Id(&'a str),
    Name(&'a str),
}

impl Store {
    pub async fn insert_secret(&self, row: &SecretRow, audit: &AuditRow) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO secrets (id, account_id, name, version, sealed, key_id, create_time_ms, update_time_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(row.id.as_str().to_owned())
        .bind(row.account_id.as_str().to_owned())
        .bind(row.name.as_str().to_owned())
        .bind(row.version)
        .bind(row.sealed.clone())
        .bind(i64::from(row.key_id))
        .bind(row.create_time_ms)
        .bind(row.update_time_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("a secret named {} already exists", row.name)),
            other => other,
        })?;
        insert_audit(&mut tx, audit).await?;
        self.commit(tx, &[Change::Secret(row.id.clone())]).await
    }

    /// A live secret of this account, by id or name.
    pub async fn get_secret(&self, account: &AccountId, by: SecretRef<'_>) -> Result<SecretRow> {
        let (sql, key) = match by {
            SecretRef::Id(id) => (
                format!("SELECT {COLUMNS} FROM secrets WHERE account_id = $1 AND id = $2 AND delete_time_ms IS NULL"),
                id,
            ),
            SecretRef::Name(name) => (
                format!("SELECT {COLUMNS} FROM secrets WHERE account_id = $1 AND name = $2 AND delete_time_ms IS NULL"),
                name,
            ),
        };
        let row = sqlx::query(&sql)
            .bind(account.as_str().to_owned())
            .bind(key.to_owned())
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        secret(&row)
    }

    pub async fn list_secrets(
        &self,
        account: &AccountId,
        page: &Page,
    ) -> Result<Listed<SecretRow>> {
        let from = |q: &mut Sql| {
            q.push(" FROM secrets WHERE delete_time_ms IS NULL AND account_id = ")
                .bind(account.as_str().to_owned());
        };
        self.list_page(
            "SELECT id, account_id, name, version, sealed, key_id, create_time_ms, update_time_ms",
            from,
            page,
            secret,
        )
        .await
    }

    /// Replaces the value with a new version, if the secret is still at `expected_version` (so
    /// that two concurrent rotations cannot both claim the same version number).
    pub async fn rotate_secret(
        &self,
        row: &SecretRow,
        expected_version: i64,
        audit: &AuditRow,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE secrets SET version = $1, sealed = $2, key_id = $3, update_time_ms = $4
             WHERE id = $5 AND account_id = $6 AND version = $7 AND delete_time_ms IS NULL",
        )
        .bind(row.version)
        .bind(row.sealed.clone())
        .bind(i64::from(row.key_id))
        .bind(row.update_time_ms)
        .bind(row.id.as_str().to_owned())
        .bind(row.account_id.as_str().to_owned())
        .bind(expected_version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "the secret changed concurrently; retry".into(),
            ));
        }
        insert_audit(&mut tx, audit).await?;
        self.commit(tx, &[Change::Secret(row.id.clone())]).await
    }

    /// Deletes a secret and destroys its sealed value. Refused while a live token of a running
    /// devbox or a gateway config's custom header uses it.
    pub async fn delete_secret(
        &self,
        account: &AccountId,
        id: &SecretId,
        now_ms: i64,
        audit: &AuditRow,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let in_use: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM gateway_tokens t JOIN devboxes d ON d.id = t.devbox_id
             WHERE t.secret_id = $1 AND t.revoke_time_ms IS NULL AND d.status = 'running'",
        )
        .bind(id.as_str().to_owned())
        .fetch_one(&mut *tx)
        .await?;
        if in_use > 0 {
            return Err(StoreError::Refused(
                "the secret is in use by a running devbox; shut it down first".into(),
            ));
        }
        let pattern = crate::sql::contains_pattern(&format!("\"{}\"", id.as_str()));
        let in_headers: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM gateway_configs WHERE account_id = $1 AND delete_time_ms IS NULL
             AND LOWER(custom_headers) LIKE $2 ESCAPE '\\'",
        )
        .bind(account.as_str().to_owned())
        .bind(pattern)
        .fetch_one(&mut *tx)
        .await?;
        if in_headers > 0 {
            return Err(StoreError::Refused(
                "the secret is used by a gateway config's custom headers; change that config first"
                    .into(),
            ));
        }
        let in_routers: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM gateway_configs WHERE account_id = $1 AND delete_time_ms IS NULL
             AND router IS NOT NULL AND LOWER(router) LIKE $2 ESCAPE '\\'",
        )
        .bind(account.as_str().to_owned())
        .bind(crate::sql::contains_pattern(&format!(
            "\"{}\"",
            id.as_str()
        )))
        .fetch_one(&mut *tx)
        .await?;
        if in_routers > 0 {
            return Err(StoreError::Refused(
                "the secret is used by a router gateway's backend; change that router first".into(),
            ));
        }
        let done = sqlx::query(
            "UPDATE secrets SET delete_time_ms = $1, sealed = $2 WHERE account_id = $3 AND id = $4 AND delete_time_ms IS NULL",
        )
        .bind(now_ms)
        .bind(Vec::<u8>::new())
        .bind(account.as_str().to_owned())
        .bind(id.as_str().to_owned())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&mut tx, audit).await?;
        self.commit(tx, &[Change::Secret(id.clone())]).await
    }

    /// Every live secret's sealed value, for re-wrapping under a new master key.
    pub async fn all_sealed_secrets(&self) -> Result<Vec<SecretRow>> {
        let sql = format!("SELECT {COLUMNS} FROM secrets WHERE delete_time_ms IS NULL ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;
        rows.iter().map(secret).collect()
    }

    /// Stores a re-wrapped value; the version stays (the plaintext did not change). Returns
    /// false when the secret was rotated or deleted meanwhile.
    pub async fn store_rewrapped(
        &self,
        id: &SecretId,
        version: i64,
        sealed: &[u8],
        key_id: u32,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE secrets SET sealed = $1, key_id = $2 WHERE id = $3 AND version = $4 AND delete_time_ms IS NULL",
        )
        .bind(sealed.to_vec())
        .bind(i64::from(key_id))
        .bind(id.as_str().to_owned())
        .bind(version)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
