//! Accounts and control-plane API keys.

use airlock_core::{AccountId, ApiKeyId, TokenDigest};
use sqlx::any::AnyRow;

use crate::sql::Sql;
use crate::{
    col, insert_audit, AccountRow, ApiKeyRow, AuditRow, Listed, Page, Result, Scope, Store,
    StoreError,
};

fn account(row: &AnyRow) -> Result<AccountRow> {
    Ok(AccountRow {
        id: AccountId::from_trusted(col(row, "id")?),
        name: col(row, "name")?,
        operator: col::<i64>(row, "operator")? != 0,
        create_time_ms: col(row, "create_time_ms")?,
    })
}

fn api_key(row: &AnyRow) -> Result<ApiKeyRow> {
    let scope: String = col(row, "scope")?;
    let digest: String = col(row, "digest")?;
    Ok(ApiKeyRow {
        id: ApiKeyId::from_trusted(col(row, "id")?),
        account_id: AccountId::from_trusted(col(row, "account_id")?),
        name: col(row, "name")?,
        scope: Scope::parse(&scope)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown scope {scope}")))?,
        digest: TokenDigest::from_hex(&digest)
            .ok_or_else(|| StoreError::Corrupt("bad api key digest".into()))?,
        create_time_ms: col(row, "create_time_ms")?,
        revoke_time_ms: col(row, "revoke_time_ms")?,
    })
}

const KEY_COLUMNS: &str = "id, account_id, name, scope, digest, create_time_ms, revoke_time_ms";

impl Store {
    /// Whether any account exists (the first start creates the operator account).
    pub async fn has_accounts(&self) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
            .fetch_one(self.pool())
            .await?;
        Ok(n > 0)
    }

    /// The first operator account, if any.
    pub async fn operator_account(&self) -> Result<Option<AccountRow>> {
        let row = sqlx::query("SELECT id, name, operator, create_time_ms FROM accounts WHERE operator = 1 ORDER BY id LIMIT 1")
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(account).transpose()
    }

    /// Creates an account and, optionally, its first API key, in one transaction.
    pub async fn create_account(
        &self,
        acc: &AccountRow,
        first_key: Option<&ApiKeyRow>,
        audit: Option<&AuditRow>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO accounts (id, name, operator, create_time_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(acc.id.as_str().to_owned())
        .bind(acc.name.clone())
        .bind(i64::from(acc.operator))
        .bind(acc.create_time_ms)
        .execute(&mut *tx)
        .await?;
        if let Some(key) = first_key {
            insert_key(&mut tx, key).await?;
        }
        if let Some(audit) = audit {
            insert_audit(&mut tx, audit).await?;
        }
        self.commit(tx, &[]).await
    }

    pub async fn get_account(&self, id: &str) -> Result<AccountRow> {
        let row =
            sqlx::query("SELECT id, name, operator, create_time_ms FROM accounts WHERE id = $1")
                .bind(id.to_owned())
                .fetch_optional(self.pool())
                .await?
                .ok_or(StoreError::NotFound)?;
        account(&row)
    }

    pub async fn list_accounts(&self, page: &Page) -> Result<Listed<AccountRow>> {
        let from = |q: &mut Sql| {
            q.push(" FROM accounts WHERE 1 = 1");
        };
        self.list_page(
            "SELECT id, name, operator, create_time_ms",
            from,
            page,
            account,
        )
        .await
    }

    pub async fn insert_api_key(&self, key: &ApiKeyRow, audit: &AuditRow) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_key(&mut tx, key).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit(tx, &[]).await
    }

    /// The live key with this digest and its account.
    pub async fn api_key_by_digest(
        &self,
        digest: &TokenDigest,
    ) -> Result<Option<(ApiKeyRow, AccountRow)>> {
        let row = sqlx::query(
            "SELECT k.id, k.account_id, k.name, k.scope, k.digest, k.create_time_ms, k.revoke_time_ms,
                    a.name AS account_name, a.operator, a.create_time_ms AS account_create_time_ms
             FROM api_keys k JOIN accounts a ON a.id = k.account_id
             WHERE k.digest = $1 AND k.revoke_time_ms IS NULL",
        )
        .bind(digest.to_hex())
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key = api_key(&row)?;
        // The digest matched by index; compare again in constant time as the rule for secrets.
        if !key.digest.ct_eq(digest) {
            return Ok(None);
        }
        let acc = AccountRow {
            id: key.account_id.clone(),
            name: col(&row, "account_name")?,
            operator: col::<i64>(&row, "operator")? != 0,
            create_time_ms: col(&row, "account_create_time_ms")?,
        };
        Ok(Some((key, acc)))
    }

    pub async fn list_api_keys(
        &self,
        account: &AccountId,
        page: &Page,
    ) -> Result<Listed<ApiKeyRow>> {
        let from = |q: &mut Sql| {
            q.push(" FROM api_keys WHERE revoke_time_ms IS NULL AND account_id = ")
                .bind(account.as_str().to_owned());
        };
        self.list_page(
            "SELECT id, account_id, name, scope, digest, create_time_ms, revoke_time_ms",
            from,
            page,
            api_key,
        )
        .await
    }

    pub async fn get_api_key(&self, account: &AccountId, id: &str) -> Result<ApiKeyRow> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = $1 AND id = $2 AND revoke_time_ms IS NULL");
        let row = sqlx::query(&sql)
            .bind(account.as_str().to_owned())
            .bind(id.to_owned())
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        api_key(&row)
    }

    pub async fn revoke_api_key(
        &self,
        account: &AccountId,
        id: &str,
        now_ms: i64,
        audit: &AuditRow,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE api_keys SET revoke_time_ms = $1 WHERE account_id = $2 AND id = $3 AND revoke_time_ms IS NULL")
            .bind(now_ms)
            .bind(account.as_str().to_owned())
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&mut tx, audit).await?;
        self.commit(tx, &[]).await
    }
}

async fn insert_key(tx: &mut crate::Tx, key: &ApiKeyRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, name, scope, digest, create_time_ms, revoke_time_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(key.id.as_str().to_owned())
    .bind(key.account_id.as_str().to_owned())
    .bind(key.name.clone())
    .bind(key.scope.as_str())
    .bind(key.digest.to_hex())
    .bind(key.create_time_ms)
    .bind(key.revoke_time_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
