//! Devbox records and the gateway tokens bound to them.

use airlock_core::state::Change;
use airlock_core::{
    AccountId, DevboxId, EnvName, GatewayConfigId, SecretId, SourceAddresses, TokenId, TokenScope,
};
use sqlx::any::AnyRow;

use crate::sql::Sql;
use crate::{
    col, insert_audit, AuditRow, DevboxRow, DevboxStatus, GatewaySpec, Listed, Page, Result, Store,
    StoreError, TokenInfo, TokenRow,
};

const COLUMNS: &str = "id, account_id, name, status, source_addresses, metadata, create_time_ms, update_time_ms, shutdown_time_ms";

pub(crate) fn decode_addresses(text: &str) -> Result<SourceAddresses> {
    let list: Vec<String> =
        serde_json::from_str(text).map_err(|_| StoreError::Corrupt("source_addresses".into()))?;
    SourceAddresses::parse("source_addresses", &list)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn encode_addresses(addrs: &SourceAddresses) -> String {
    serde_json::Value::from(addrs.to_strings()).to_string()
}

pub(crate) fn devbox_status(text: &str) -> Result<DevboxStatus> {
    match text {
        "running" => Ok(DevboxStatus::Running),
        "shutdown" => Ok(DevboxStatus::Shutdown),
        other => Err(StoreError::Corrupt(format!("devbox status {other}"))),
    }
}

fn devbox(row: &AnyRow) -> Result<DevboxRow> {
    let status: String = col(row, "status")?;
    let addrs: String = col(row, "source_addresses")?;
    Ok(DevboxRow {
        id: DevboxId::from_trusted(col(row, "id")?),
        account_id: AccountId::from_trusted(col(row, "account_id")?),
        name: col(row, "name")?,
        status: devbox_status(&status)?,
        source_addresses: decode_addresses(&addrs)?,
        metadata: col(row, "metadata")?,
        create_time_ms: col(row, "create_time_ms")?,
        update_time_ms: col(row, "update_time_ms")?,
        shutdown_time_ms: col(row, "shutdown_time_ms")?,
        gateway_specs: Vec::new(),
    })
}

/// A token's scope as its column holds it.
pub(crate) fn encode_scope(scope: &TokenScope) -> String {
    let mut v = serde_json::json!({"methods": scope.methods, "path_prefixes": scope.path_prefixes});
    if let Some(n) = scope.max_requests {
        v["max_requests"] = n.into();
    }
    v.to_string()
}

/// The scope column read back; re-checked, since the row is outside the control plane.
pub(crate) fn decode_scope(text: Option<String>) -> Result<Option<TokenScope>> {
    let Some(text) = text else {
        return Ok(None);
    };
    let corrupt = || StoreError::Corrupt("token scope".into());
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| corrupt())?;
    let list = |key: &str| -> Result<Vec<String>> {
        v.get(key)
            .and_then(serde_json::Value::as_array)
            .ok_or_else(corrupt)?
            .iter()
            .map(|s| s.as_str().map(str::to_owned).ok_or_else(corrupt))
            .collect()
    };
    let scope =
        TokenScope::parse(&list("methods")?, &list("path_prefixes")?).map_err(|_| corrupt())?;
    let max_requests = match v.get("max_requests") {
        None => None,
        Some(n) => Some(n.as_u64().ok_or_else(corrupt)?),
    };
    Ok(TokenScope::with_max_requests(scope, max_requests))
}

async fn insert_token(tx: &mut crate::Tx, t: &TokenRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO gateway_tokens (id, account_id, devbox_id, gateway_config_id, secret_id, prefix, digest, create_time_ms, expire_time_ms, scope)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(t.id.as_str().to_owned())
    .bind(t.account_id.as_str().to_owned())
    .bind(t.devbox_id.as_str().to_owned())
    .bind(t.gateway_config_id.as_str().to_owned())
    .bind(t.secret_id.as_ref().map(|s| s.as_str().to_owned()))
    .bind(t.prefix.as_ref().map(|p| p.as_str().to_owned()))
    .bind(t.digest.to_hex())
    .bind(t.create_time_ms)
    .bind(t.expire_time_ms)
    .bind(t.scope.as_ref().map(encode_scope))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Registers a devbox and the tokens minted for its gateway map, in one transaction.
    pub async fn register_devbox(
        &self,
        row: &DevboxRow,
        tokens: &[TokenRow],
        audit: &AuditRow,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO devboxes (id, account_id, name, status, source_addresses, metadata, create_time_ms, update_time_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(row.id.as_str().to_owned())
        .bind(row.account_id.as_str().to_owned())
        .bind(row.name.clone())
        .bind(row.status.as_str())
        .bind(encode_addresses(&row.source_addresses))
        .bind(row.metadata.clone())
        .bind(row.create_time_ms)
        .bind(row.update_time_ms)
        .execute(&mut *tx)
        .await?;
        let mut changes = vec![Change::Devbox(row.id.clone())];
        for t in tokens {
            insert_token(&mut tx, t).await?;
            changes.push(Change::Token(t.id.clone()));
        }
        insert_audit(&mut tx, audit).await?;
        self.commit(tx, &changes).await
    }

    pub async fn get_devbox(&self, account: &AccountId, id: &str) -> Result<DevboxRow> {
        let sql = format!("SELECT {COLUMNS} FROM devboxes WHERE account_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(account.as_str().to_owned())
            .bind(id.to_owned())
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut d = devbox(&row)?;
        d.gateway_specs = self
            .gateway_specs(&[d.id.clone()])
            .await?
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        Ok(d)
    }

    /// PREFIX → gateway and secret for each devbox, from the tokens minted at registration.
    async fn gateway_specs(&self, ids: &[DevboxId]) -> Result<Vec<(DevboxId, GatewaySpec)>> {
        let mut out = Vec::new();
        for id in ids {
            let rows = sqlx::query(
                "SELECT devbox_id, prefix, gateway_config_id, secret_id FROM gateway_tokens
                 WHERE devbox_id = $1 AND prefix IS NOT NULL ORDER BY prefix",
            )
            .bind(id.as_str().to_owned())
            .fetch_all(self.pool())
            .await?;
            for r in &rows {
                out.push((
                    id.clone(),
                    GatewaySpec {
                        prefix: EnvName::from_trusted(col(r, "prefix")?),
                        gateway_config_id: GatewayConfigId::from_trusted(col(
                            r,
                            "gateway_config_id",
                        )?),
                        secret_id: col::<Option<String>>(r, "secret_id")?
                            .map(SecretId::from_trusted),
                    },
                ));
            }
        }
        Ok(out)
    }

    pub async fn list_devboxes(
        &self,
        account: &AccountId,
        status: Option<DevboxStatus>,
        page: &Page,
    ) -> Result<Listed<DevboxRow>> {
        let from = |q: &mut Sql| {
            q.push(" FROM devboxes WHERE account_id = ")
                .bind(account.as_str().to_owned());
            if let Some(status) = status {
                q.push(" AND status = ").bind(status.as_str());
            }
        };
        let mut listed = self
            .list_page(
                "SELECT id, account_id, name, status, source_addresses, metadata, create_time_ms, update_time_ms, shutdown_time_ms",
                from,
                page,
                devbox,
            )
            .await?;
        let ids: Vec<DevboxId> = listed.items.iter().map(|d| d.id.clone()).collect();
        for (id, spec) in self.gateway_specs(&ids).await? {
            if let Some(d) = listed.items.iter_mut().find(|d| d.id == id) {
                d.gateway_specs.push(spec);
            }
        }
        Ok(listed)
    }

    pub async fn update_devbox_addresses(
        &self,
        account: &AccountId,
        id: &DevboxId,
        addrs: &SourceAddresses,
        now_ms: i64,
        audit: &AuditRow,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE devboxes SET source_addresses = $1, update_time_ms = $2 WHERE account_id = $3 AND id = $4")
            .bind(encode_addresses(addrs))
            .bind(now_ms)
            .bind(account.as_str().to_owned())
            .bind(id.as_str().to_owned())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&mut tx, audit).await?;
        self.commit(tx, &[Change::Devbox(id.clone())]).await
    }

    /// Marks the devbox shut down and revokes every token bound to it, in one transaction.
    /// Shutting down a devbox that is already shut down changes nothing and succeeds.
    pub async fn shutdown_devbox(
        &self,
        account: &AccountId,
        id: &DevboxId,
        now_ms: i64,
        audit: &AuditRow,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM devboxes WHERE account_id = $1 AND id = $2")
                .bind(account.as_str().to_owned())
                .bind(id.as_str().to_owned())
                .fetch_optional(&mut *tx)
                .await?;
        match status.as_deref() {
            None => return Err(StoreError::NotFound),
            Some("shutdown") => return Ok(()),
            Some(_) => {}
        }
        sqlx::query(
            "UPDATE devboxes SET status = 'shutdown', shutdown_time_ms = $1, update_time_ms = $1 WHERE account_id = $2 AND id = $3",
        )
        .bind(now_ms)
        .bind(account.as_str().to_owned())
        .bind(id.as_str().to_owned())
        .execute(&mut *tx)
        .await?;
        let revoked: Vec<String> = sqlx::query_scalar(
            "UPDATE gateway_tokens SET revoke_time_ms = $1 WHERE devbox_id = $2 AND revoke_time_ms IS NULL RETURNING id",
        )
        .bind(now_ms)
        .bind(id.as_str().to_owned())
        .fetch_all(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        let mut changes = vec![Change::Devbox(id.clone())];
        changes.extend(
            revoked
                .into_iter()
                .map(|t| Change::Token(TokenId::from_trusted(t))),
        );
        self.commit(tx, &changes).await
    }

    /// The tokens of a devbox (newest first), with their last use and use count from the request
    /// events. `NotFound` when the devbox is not the account's.
    ///
    /// The counts read the account's request events through their account index: no index by
    /// token is kept, because one more index on every audit insert is paid by every proxied
    /// request, while this listing is an operator's occasional call. Its cost grows with the
    /// account's audit trail.
    pub async fn list_gateway_tokens(
        &self,
        account: &AccountId,
        devbox: &DevboxId,
    ) -> Result<Vec<TokenInfo>> {
        self.get_devbox(account, devbox.as_str()).await?;
        let rows = sqlx::query(
            "SELECT t.id, t.devbox_id, t.gateway_config_id, t.secret_id, t.prefix, t.create_time_ms,
                    t.expire_time_ms, t.revoke_time_ms, t.scope,
                    (SELECT MAX(e.time_ms) FROM request_events e
                      WHERE e.account_id = t.account_id AND e.token_id = t.id) AS last_used_time_ms,
                    (SELECT COUNT(*) FROM request_events e
                      WHERE e.account_id = t.account_id AND e.token_id = t.id) AS use_count
             FROM gateway_tokens t WHERE t.account_id = $1 AND t.devbox_id = $2 ORDER BY t.id DESC",
        )
        .bind(account.as_str().to_owned())
        .bind(devbox.as_str().to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TokenInfo {
                    id: TokenId::from_trusted(col(row, "id")?),
                    devbox_id: DevboxId::from_trusted(col(row, "devbox_id")?),
                    gateway_config_id: GatewayConfigId::from_trusted(col(
                        row,
                        "gateway_config_id",
                    )?),
                    secret_id: col::<Option<String>>(row, "secret_id")?.map(SecretId::from_trusted),
                    prefix: col(row, "prefix")?,
                    create_time_ms: col(row, "create_time_ms")?,
                    expire_time_ms: col(row, "expire_time_ms")?,
                    revoke_time_ms: col(row, "revoke_time_ms")?,
                    scope: decode_scope(col(row, "scope")?)?,
                    last_used_time_ms: col(row, "last_used_time_ms")?,
                    use_count: col(row, "use_count")?,
                })
            })
            .collect()
    }

    /// Revokes one token of a devbox, leaving the devbox and its other tokens as they are; every
    /// data plane drops it at the change notification. Revoking a revoked token changes nothing
    /// and succeeds. `NotFound` when the account has no such token on that devbox.
    pub async fn revoke_gateway_token(
        &self,
        account: &AccountId,
        devbox: &DevboxId,
        token: &TokenId,
        now_ms: i64,
        audit: &AuditRow,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let revoked: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT revoke_time_ms FROM gateway_tokens WHERE account_id = $1 AND devbox_id = $2 AND id = $3",
        )
        .bind(account.as_str().to_owned())
        .bind(devbox.as_str().to_owned())
        .bind(token.as_str().to_owned())
        .fetch_optional(&mut *tx)
        .await?;
        match revoked {
            None => return Err(StoreError::NotFound),
            Some(Some(_)) => return Ok(()),
            Some(None) => {}
        }
        sqlx::query("UPDATE gateway_tokens SET revoke_time_ms = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(token.as_str().to_owned())
            .execute(&mut *tx)
            .await?;
        insert_audit(&mut tx, audit).await?;
        self.commit(tx, &[Change::Token(token.clone())]).await
    }

    /// Stores a token minted for a running devbox.
    pub async fn insert_gateway_token(&self, row: &TokenRow, audit: &AuditRow) -> Result<()> {
        let mut tx = self.begin().await?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM devboxes WHERE account_id = $1 AND id = $2")
                .bind(row.account_id.as_str().to_owned())
                .bind(row.devbox_id.as_str().to_owned())
                .fetch_optional(&mut *tx)
                .await?;
        match status.as_deref() {
            None => return Err(StoreError::NotFound),
            Some("running") => {}
            Some(_) => return Err(StoreError::Refused("the devbox is shut down".into())),
        }
        insert_token(&mut tx, row).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit(tx, &[Change::Token(row.id.clone())]).await
    }
}
