//! The audit trails: control-plane actions and proxied requests.

use airlock_core::state::{AuditSink, RequestAuditEvent, SourceError};
use airlock_core::{
    AccountId, ApiKeyId, AuditId, DevboxId, GatewayConfigId, Metered, SecretId, TokenId, Usage,
};
use sqlx::any::AnyRow;

use crate::copy::CopyPostgres;
use crate::direct::DirectSqlite;
use crate::sql::Sql;
use crate::{
    col, AuditFilter, AuditRow, Backend, Listed, Page, RequestEventRow, Result, Store, StoreError,
    UsageFilter, UsageKey, UsageRow, MAX_USAGE_GROUPS,
};

/// The columns of a request event, written and read in this order (macros, so that `concat!`
/// can make the `&'static str` a statement needs): the plain ones, then the nine of the metered
/// usage, all NULL for a request that was not metered.
macro_rules! plain_event_columns {
    () => {
        "id, time_ms, account_id, devbox_id, gateway_config_id, token_id, secret_id, secret_version, method, path, \
         status, upstream_status, latency_us, ttfb_us, bytes_in, bytes_out, client_addr, error_code, request_id"
    };
}
macro_rules! request_event_columns {
    () => {
        concat!(
            plain_event_columns!(),
            ", provider, model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, \
             reasoning_tokens, usage_exact, cost_nanos"
        )
    };
}

/// How many names a comma-separated column list holds.
pub(crate) const fn count_columns(list: &str) -> usize {
    let bytes = list.as_bytes();
    let mut n = 1;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b',' {
            n += 1;
        }
        i += 1;
    }
    n
}

/// Placeholders per multi-row insert: the size that 100 events of 19 columns had when the batch
/// size was measured, well under SQLite's (32 766) and Postgres' (65 535) limits. Adding a column
/// shrinks the rows per statement instead of growing the statement.
const PLACEHOLDERS_PER_STATEMENT: usize = 1_900;

/// Rows per multi-row insert of events that were not metered: their usage columns are left out,
/// so a passthrough request costs the audit trail what it did before metering existed.
pub const EVENTS_PER_STATEMENT: usize =
    PLACEHOLDERS_PER_STATEMENT / count_columns(plain_event_columns!());

/// Rows per multi-row insert of metered events.
const METERED_PER_STATEMENT: usize =
    PLACEHOLDERS_PER_STATEMENT / count_columns(request_event_columns!());

/// A token count or an amount as the database holds it. Counts beyond `i64::MAX` are not real
/// usage; they are stored saturated rather than refused, so one absurd event cannot lose a batch.
pub(crate) fn db_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A non-negative integer column read back; a negative value was not written by the store.
fn db_count(row: &AnyRow, name: &str) -> Result<Option<u64>> {
    col::<Option<i64>>(row, name)?
        .map(|v| {
            u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("column {name}: negative")))
        })
        .transpose()
}

/// Binds one event's values in the order of the column lists above (`with_usage`: the nine
/// usage columns too).
fn bind_event(q: &mut Sql, e: &RequestAuditEvent, with_usage: bool) {
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
    q.bind(e.request_id.clone());
    if !with_usage {
        return;
    }
    q.push(", ");
    let m = e.llm.as_ref();
    q.bind(m.and_then(|m| m.provider.clone())).push(", ");
    q.bind(m.and_then(|m| m.model.clone())).push(", ");
    let u = m.map(|m| m.usage);
    q.bind(u.map(|u| db_int(u.input_tokens))).push(", ");
    q.bind(u.map(|u| db_int(u.output_tokens))).push(", ");
    q.bind(u.map(|u| db_int(u.cache_read_tokens))).push(", ");
    q.bind(u.map(|u| db_int(u.cache_write_tokens))).push(", ");
    q.bind(u.map(|u| db_int(u.reasoning_tokens))).push(", ");
    q.bind(u.map(|u| i64::from(u.exact))).push(", ");
    q.bind(m.and_then(|m| m.cost_nanos).map(db_int));
}

/// The metered part of a request event: absent when `input_tokens` is NULL (not metered).
fn metered(row: &AnyRow) -> Result<Option<Metered>> {
    let Some(input_tokens) = db_count(row, "input_tokens")? else {
        return Ok(None);
    };
    let count = |name: &str| {
        db_count(row, name)?.ok_or_else(|| StoreError::Corrupt(format!("column {name}: missing")))
    };
    Ok(Some(Metered {
        provider: col(row, "provider")?,
        model: col(row, "model")?,
        usage: Usage {
            input_tokens,
            output_tokens: count("output_tokens")?,
            cache_read_tokens: count("cache_read_tokens")?,
            cache_write_tokens: count("cache_write_tokens")?,
            reasoning_tokens: count("reasoning_tokens")?,
            exact: count("usage_exact")? != 0,
        },
        cost_nanos: db_count(row, "cost_nanos")?,
    }))
}

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
            llm: metered(row)?,
        },
    })
}

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

    /// Writes proxied-request events, [`EVENTS_PER_STATEMENT`] rows per statement: the data
    /// plane writes thousands per second, and one statement per event costs a round trip to the
    /// database (on SQLite, two thread switches) each. Each statement commits alone, with no
    /// transaction around the batch: SQLite has one writer at a time, and the data plane's
    /// background audit writer runs at idle priority, so it must never hold the write lock for
    /// longer than one statement while the scheduler holds it back. Each event carries its own
    /// id, so a batch written twice (half of it before a failure, or after a spill file is
    /// replayed) is stored once.
    pub async fn insert_request_events(&self, events: &[RequestAuditEvent]) -> Result<()> {
        if let Some(direct) = &self.direct {
            return direct.insert(events);
        }
        if let Some(copy) = &self.copy {
            match copy.insert(events).await? {
                crate::copy::Copied::All => return Ok(()),
                // Written before (an answer lost, a spill file replayed): the INSERT below skips
                // the stored ids.
                crate::copy::Copied::SeenBefore => {}
            }
        }
        let (metered, plain): (Vec<&RequestAuditEvent>, Vec<&RequestAuditEvent>) =
            events.iter().partition(|e| e.llm.is_some());
        for (rows, per_statement, with_usage) in [
            (plain, EVENTS_PER_STATEMENT, false),
            (metered, METERED_PER_STATEMENT, true),
        ] {
            for chunk in rows.chunks(per_statement) {
                let head = if with_usage {
                    concat!(
                        "INSERT INTO request_events (",
                        request_event_columns!(),
                        ") VALUES "
                    )
                } else {
                    concat!(
                        "INSERT INTO request_events (",
                        plain_event_columns!(),
                        ") VALUES "
                    )
                };
                let mut q = Sql::many(self.backend(), head);
                for (i, e) in chunk.iter().enumerate() {
                    q.push(if i == 0 { "(" } else { ", (" });
                    bind_event(&mut q, e, with_usage);
                    q.push(")");
                }
                q.push(" ON CONFLICT (id) DO NOTHING");
                let (text, args) = q.build();
                sqlx::query_with(&text, args).execute(&self.pool).await?;
            }
        }
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
            concat!("SELECT ", request_event_columns!()),
            from,
            page,
            request_event,
        )
        .await
    }

    /// Sums the metered request events of an account that match `filter`, one row per
    /// combination of the `group_by` keys' values (one row in all without keys), sorted by the
    /// keys in the order given, unknown values last. Events that were not metered are left out;
    /// no events, no rows. More than [`MAX_USAGE_GROUPS`] groups is refused.
    pub async fn usage(
        &self,
        account: &AccountId,
        filter: &UsageFilter,
        group_by: &[UsageKey],
    ) -> Result<Vec<UsageRow>> {
        let mut keys: Vec<UsageKey> = Vec::with_capacity(group_by.len());
        for k in group_by {
            if !keys.contains(k) {
                keys.push(*k);
            }
        }
        // SUM of a BIGINT is NUMERIC on Postgres, which the Any driver cannot decode: cast back.
        let mut q = Sql::new(
            "SELECT COUNT(*) AS requests, COUNT(cost_nanos) AS priced,
                    CAST(SUM(input_tokens) AS BIGINT) AS input_tokens,
                    CAST(SUM(output_tokens) AS BIGINT) AS output_tokens,
                    CAST(SUM(cache_read_tokens) AS BIGINT) AS cache_read_tokens,
                    CAST(SUM(cache_write_tokens) AS BIGINT) AS cache_write_tokens,
                    CAST(SUM(reasoning_tokens) AS BIGINT) AS reasoning_tokens,
                    CAST(SUM(cost_nanos) AS BIGINT) AS cost_nanos",
        );
        for k in &keys {
            q.push(", ").push(k.expr()).push(" AS ").push(k.alias());
        }
        // `input_tokens IS NOT NULL` selects the metered events, and lets both databases use the
        // partial index `request_events_usage`.
        q.push(" FROM request_events WHERE input_tokens IS NOT NULL AND account_id = ")
            .bind(account.as_str().to_owned());
        if let Some(v) = filter.start_ms {
            q.push(" AND time_ms >= ").bind(v);
        }
        if let Some(v) = filter.end_ms {
            q.push(" AND time_ms < ").bind(v);
        }
        if let Some(v) = &filter.devbox_id {
            q.push(" AND devbox_id = ").bind(v.as_str().to_owned());
        }
        if let Some(v) = &filter.gateway_config_id {
            q.push(" AND gateway_config_id = ")
                .bind(v.as_str().to_owned());
        }
        if let Some(v) = &filter.model {
            q.push(" AND model = ").bind(v.clone());
        }
        for (i, k) in keys.iter().enumerate() {
            q.push(if i == 0 { " GROUP BY " } else { ", " })
                .push(k.expr());
        }
        // `x IS NULL` sorts false before true on both databases: unknown values come last,
        // where Postgres and SQLite would otherwise disagree.
        for (i, k) in keys.iter().enumerate() {
            q.push(if i == 0 { " ORDER BY (" } else { ", (" })
                .push(k.expr())
                .push(" IS NULL), ")
                .push(k.expr());
        }
        q.push(" LIMIT ")
            .bind(i64::try_from(MAX_USAGE_GROUPS + 1).unwrap_or(i64::MAX));
        let (text, args) = q.build();
        let rows = sqlx::query_with(&text, args).fetch_all(self.pool()).await?;
        if rows.len() > MAX_USAGE_GROUPS {
            return Err(StoreError::Refused(format!(
                "more than {MAX_USAGE_GROUPS} groups: narrow the time range or group by fewer keys"
            )));
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let sum = |name: &str| Ok::<_, StoreError>(db_count(row, name)?.unwrap_or(0));
            let requests = sum("requests")?;
            if requests == 0 {
                // Without keys, no matching events still make one row of NULL sums.
                continue;
            }
            let mut r = UsageRow {
                requests,
                unpriced_requests: requests.saturating_sub(sum("priced")?),
                input_tokens: sum("input_tokens")?,
                output_tokens: sum("output_tokens")?,
                cache_read_tokens: sum("cache_read_tokens")?,
                cache_write_tokens: sum("cache_write_tokens")?,
                reasoning_tokens: sum("reasoning_tokens")?,
                cost_nanos: db_count(row, "cost_nanos")?,
                ..UsageRow::default()
            };
            for k in &keys {
                match k {
                    UsageKey::Model => r.model = col(row, k.alias())?,
                    UsageKey::Provider => r.provider = col(row, k.alias())?,
                    UsageKey::Devbox => {
                        r.devbox_id =
                            col::<Option<String>>(row, k.alias())?.map(DevboxId::from_trusted)
                    }
                    UsageKey::Gateway => {
                        r.gateway_config_id = col::<Option<String>>(row, k.alias())?
                            .map(GatewayConfigId::from_trusted)
                    }
                    UsageKey::Day => r.day = col(row, k.alias())?,
                }
            }
            out.push(r);
        }
        Ok(out)
    }
}

impl UsageKey {
    /// The SQL expression grouped by: a column, or the day number. Constant text only.
    ///
    /// The day is `time_ms` divided by the milliseconds of a day: Unix time has no leap
    /// seconds, so that is the UTC calendar day, and both databases' integer division computes
    /// it alike (where their date functions differ).
    fn expr(self) -> &'static str {
        match self {
            UsageKey::Model => "model",
            UsageKey::Provider => "provider",
            UsageKey::Devbox => "devbox_id",
            UsageKey::Gateway => "gateway_config_id",
            UsageKey::Day => "(time_ms / 86400000)",
        }
    }

    /// The result column's name, distinct from every column of the table.
    fn alias(self) -> &'static str {
        match self {
            UsageKey::Model => "g_model",
            UsageKey::Provider => "g_provider",
            UsageKey::Devbox => "g_devbox",
            UsageKey::Gateway => "g_gateway",
            UsageKey::Day => "g_day",
        }
    }
}

impl AuditSink for Store {
    async fn write_batch(&self, events: &[RequestAuditEvent]) -> Result<(), SourceError> {
        self.insert_request_events(events)
            .await
            .map_err(|e| SourceError(e.to_string()))
    }

    async fn write_limit_hits(&self, hits: &[airlock_core::LimitHit]) -> Result<(), SourceError> {
        self.insert_limit_hits(hits)
            .await
            .map_err(|e| SourceError(e.to_string()))
    }

    fn single_writer(&self) -> bool {
        self.backend() == Backend::Sqlite
    }

    /// Also the writer's own connection for `request_events`: on SQLite (`direct`) the writer's
    /// thread runs the inserts itself; on PostgreSQL (`copy`) it sends them with `COPY`.
    fn dedicated(&self) -> Option<Store> {
        let mut own = self
            .with_own_pool()
            .inspect_err(|e| tracing::warn!(error = %e, "the audit writer shares the store's pool"))
            .ok()?;
        match self.backend() {
            Backend::Sqlite => {
                own.direct = DirectSqlite::new(&self.url).map(std::sync::Arc::new);
            }
            Backend::Postgres => {
                own.copy = CopyPostgres::new(&self.url)
                    .inspect_err(
                        |e| tracing::warn!(error = %e, "the audit writer inserts instead of COPY"),
                    )
                    .ok()
                    .map(std::sync::Arc::new);
            }
        }
        Some(own)
    }
}
