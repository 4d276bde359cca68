//! The audit trails: control-plane actions and proxied requests.

use airlock_core::state::{AuditSink, RequestAuditEvent, SourceError};
use airlock_core::{AccountId, ApiKeyId, AuditId, DevboxId, GatewayConfigId, SecretId, TokenId};
use sqlx::any::AnyRow;

use crate::sql::Sql;
use crate::{col, AuditFilter, AuditRow, Listed, Page, RequestEventRow, Result, Store, StoreError};

fn audit(row: &AnyRow) -> Result<AuditRow> {
    Ok(AuditRow {
        id: col(row, "id")?,
        time_ms: col(row, "time_ms")?,
        account_id: AccountId::from_trusted(col(row, "account_id")?),
        api_key_id: col::<Option<String>>(row, "api_key_id")?.map(ApiKeyId::from_trusted),
        action: col(row, "action")?,
        object_type: col(row, "object_type")?,
        object_id: col(row, "object_id")?,
        detail: col(row, "detail")?,
        client_addr: col(row, "client_addr")?,
    })
}

fn request_event(row: &AnyRow) -> Result<RequestEventRow> {
    let addr: String = col(row, "client_addr")?;
    let u16_of =
        |v: i64| u16::try_from(v).map_err(|_| StoreError::Corrupt("status out of range".into()));
    Ok(RequestEventRow {
        id: col(row, "id")?,
        event: RequestAuditEvent {
            id: AuditId::from_trusted(col(row, "id")?),
            time_ms: col(row, "time_ms")?,
            account_id: col::<Option<String>>(row, "account_id")?.map(AccountId::from_trusted),
            devbox_id: col::<Option<String>>(row, "devbox_id")?.map(DevboxId::from_trusted),
            gateway_config_id: col::<Option<String>>(row, "gateway_config_id")?
                .map(GatewayConfigId::from_trusted),
            token_id: col::<Option<String>>(row, "token_id")?.map(TokenId::from_trusted),
            secret_id: col::<Option<String>>(row, "secret_id")?.map(SecretId::from_trusted),
            secret_version: col(row, "secret_version")?,
            method: col(row, "method")?,
            path: col(row, "path")?,
            status: u16_of(col(row, "status")?)?,
            upstream_status: col::<Option<i64>>(row, "upstream_status")?
                .map(u16_of)
                .transpose()?,
            latency_us: col(row, "latency_us")?,
            ttfb_us: col(row, "ttfb_us")?,
            bytes_in: col(row, "bytes_in")?,
            bytes_out: col(row, "bytes_out")?,
            client_addr: addr
                .parse()
                .map_err(|_| StoreError::Corrupt("client_addr".into()))?,
            error_code: col(row, "error_code")?,
            request_id: col(row, "request_id")?,
            llm: None,
        },
    })
}

/// Rows per multi-row insert of request events: 19 placeholders each, well under SQLite's
/// (32 766) and Postgres' (65 535) limits.
pub const EVENTS_PER_STATEMENT: usize = 100;

impl Store {
    pub async fn list_audit_events(
        &self,
        account: &AccountId,
        filter: &AuditFilter,
        page: &Page,
    ) -> Result<Listed<AuditRow>> {
        let from = |q: &mut Sql| {
            q.push(" FROM audit_events WHERE account_id = ")
                .bind(account.as_str().to_owned());
            if let Some(v) = &filter.object_id {
                q.push(" AND object_id = ").bind(v.clone());
            }
            if let Some(v) = &filter.action {
                q.push(" AND action = ").bind(v.clone());
            }
            if let Some(v) = filter.since_ms {
                q.push(" AND time_ms >= ").bind(v);
            }
            if let Some(v) = filter.until_ms {
                q.push(" AND time_ms <= ").bind(v);
            }
        };
        self.list_page(
            "SELECT id, time_ms, account_id, api_key_id, action, object_type, object_id, detail, client_addr",
            from,
            page,
            audit,
        )
        .await
    }

    /// Writes proxied-request events in one transaction, [`EVENTS_PER_STATEMENT`] rows per
    /// statement: the data plane writes thousands per second, and one statement per event
    /// costs a round trip to the database (on SQLite, two thread switches) each. Each event
    /// carries its own id so that a batch written twice (after a spill file is replayed) is
    /// stored once.
    pub async fn insert_request_events(&self, events: &[RequestAuditEvent]) -> Result<()> {
        let mut tx = self.begin().await?;
        for chunk in events.chunks(EVENTS_PER_STATEMENT) {
            let mut q = Sql::many(
                self.backend(),
                "INSERT INTO request_events (id, time_ms, account_id, devbox_id, gateway_config_id, token_id, secret_id,
                    secret_version, method, path, status, upstream_status, latency_us, ttfb_us, bytes_in, bytes_out,
                    client_addr, error_code, request_id) VALUES ",
            );
            for (i, e) in chunk.iter().enumerate() {
                q.push(if i == 0 { "(" } else { ", (" });
                q.bind(e.id.as_str().to_owned()).push(", ");
                q.bind(e.time_ms).push(", ");
                q.bind(e.account_id.as_ref().map(|v| v.as_str().to_owned()))
                    .push(", ");
                q.bind(e.devbox_id.as_ref().map(|v| v.as_str().to_owned()))
                    .push(", ");
                q.bind(e.gateway_config_id.as_ref().map(|v| v.as_str().to_owned()))
                    .push(", ");
                q.bind(e.token_id.as_ref().map(|v| v.as_str().to_owned()))
                    .push(", ");
                q.bind(e.secret_id.as_ref().map(|v| v.as_str().to_owned()))
                    .push(", ");
                q.bind(e.secret_version).push(", ");
                q.bind(e.method.clone()).push(", ");
                q.bind(e.path.clone()).push(", ");
                q.bind(i64::from(e.status)).push(", ");
                q.bind(e.upstream_status.map(i64::from)).push(", ");
                q.bind(e.latency_us).push(", ");
                q.bind(e.ttfb_us).push(", ");
                q.bind(e.bytes_in).push(", ");
                q.bind(e.bytes_out).push(", ");
                q.bind(e.client_addr.to_string()).push(", ");
                q.bind(e.error_code.clone()).push(", ");
                q.bind(e.request_id.clone()).push(")");
            }
            q.push(" ON CONFLICT (id) DO NOTHING");
            let (text, args) = q.build();
            sqlx::query_with(&text, args).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_request_events(
        &self,
        account: &AccountId,
        filter: &AuditFilter,
        page: &Page,
    ) -> Result<Listed<RequestEventRow>> {
        let from = |q: &mut Sql| {
            q.push(" FROM request_events WHERE account_id = ")
                .bind(account.as_str().to_owned());
            if let Some(v) = &filter.devbox_id {
                q.push(" AND devbox_id = ").bind(v.clone());
            }
            if let Some(v) = &filter.gateway_config_id {
                q.push(" AND gateway_config_id = ").bind(v.clone());
            }
            if let Some(v) = &filter.secret_id {
                q.push(" AND secret_id = ").bind(v.clone());
            }
            if let Some(v) = filter.since_ms {
                q.push(" AND time_ms >= ").bind(v);
            }
            if let Some(v) = filter.until_ms {
                q.push(" AND time_ms <= ").bind(v);
            }
        };
        self.list_page(
            "SELECT id, time_ms, account_id, devbox_id, gateway_config_id, token_id, secret_id, secret_version, method, path,
                    status, upstream_status, latency_us, ttfb_us, bytes_in, bytes_out, client_addr, error_code, request_id",
            from,
            page,
            request_event,
        )
        .await
    }
}

impl AuditSink for Store {
    async fn write_batch(&self, events: &[RequestAuditEvent]) -> Result<(), SourceError> {
        self.insert_request_events(events)
            .await
            .map_err(|e| SourceError(e.to_string()))
    }
}
