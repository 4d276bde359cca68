//! Budgets and rate limits: the limits objects of devboxes, gateway configs and accounts, and the
//! ledger of counters that every replica leases from (`docs/limits.md`).
//!
//! A lease is one conditional statement: an upsert that adds to a counter what is asked for, or
//! what is left under the limit, and reports what it took (`last_grant`); a counter at or past
//! its limit is not touched and nothing is granted. A settle adds a signed amount: negative to
//! return an unspent lease, positive to charge usage beyond it.

use airlock_core::state::Lease;
use std::collections::HashMap;

use airlock_core::{AccountId, CounterKey, LimitHit, LimitKind, LimitScope, Limits, LimitsRecord};
use sqlx::any::AnyRow;

use crate::{col, insert_audit, AuditRow, Result, Store, StoreError};

/// The store's JSON of a limits object: `{"requests_per_minute": 10, "cost_usd_per_day": 15}`
/// (costs in nano-dollars).
pub(crate) fn encode_limits(limits: &Limits) -> String {
    let map: serde_json::Map<String, serde_json::Value> = limits
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.into()))
        .collect();
    serde_json::Value::Object(map).to_string()
}

pub(crate) fn decode_limits(text: &str) -> Result<Limits> {
    let corrupt = || StoreError::Corrupt("limits".into());
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| corrupt())?;
    let mut limits = Limits::default();
    for (name, value) in v.as_object().ok_or_else(corrupt)? {
        let kind = LimitKind::parse(name).ok_or_else(corrupt)?;
        limits.set(kind, Some(value.as_u64().ok_or_else(corrupt)?));
    }
    Ok(limits)
}

fn record(row: &AnyRow) -> Result<LimitsRecord> {
    let kind: String = col(row, "scope_kind")?;
    let id: String = col(row, "scope_id")?;
    let limits: String = col(row, "limits")?;
    Ok(LimitsRecord {
        scope: LimitScope::from_parts(&kind, &id)
            .ok_or_else(|| StoreError::Corrupt("limit scope".into()))?,
        limits: decode_limits(&limits)?,
        update_time_ms: col(row, "update_time_ms")?,
    })
}

fn amount(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Sets (replaces) the limits of `scope`, which belongs to `account_id`; an empty object
    /// removes them.
    pub async fn set_limits(
        &self,
        account_id: &AccountId,
        scope: &LimitScope,
        limits: &Limits,
        now_ms: i64,
        audit: Option<&AuditRow>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO limit_settings (scope_kind, scope_id, account_id, limits, update_time_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (scope_kind, scope_id) DO UPDATE SET limits = excluded.limits,
                 update_time_ms = excluded.update_time_ms",
        )
        .bind(scope.kind())
        .bind(scope.id().to_owned())
        .bind(account_id.as_str().to_owned())
        .bind(encode_limits(limits))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if let Some(audit) = audit {
            insert_audit(&mut tx, audit).await?;
        }
        self.commit(tx, &[]).await
    }

    /// The limits of `scope` (empty when none were set).
    pub async fn get_limits(&self, scope: &LimitScope) -> Result<Limits> {
        let row = sqlx::query(
            "SELECT limits FROM limit_settings WHERE scope_kind = $1 AND scope_id = $2",
        )
        .bind(scope.kind())
        .bind(scope.id().to_owned())
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => decode_limits(&col::<String>(&row, "limits")?),
            None => Ok(Limits::default()),
        }
    }

    /// The limits of every scope of one kind (`"devbox"`, `"gateway"`) in an account that has
    /// some, by scope id: one query for a page of views.
    pub async fn limits_by_scope(
        &self,
        account_id: &AccountId,
        scope_kind: &str,
    ) -> Result<HashMap<String, Limits>> {
        let rows = sqlx::query(
            "SELECT scope_id, limits FROM limit_settings WHERE account_id = $1 AND scope_kind = $2",
        )
        .bind(account_id.as_str().to_owned())
        .bind(scope_kind.to_owned())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let limits = decode_limits(&col::<String>(row, "limits")?)?;
                Ok((col::<String>(row, "scope_id")?, limits))
            })
            .filter(|r| r.as_ref().map_or(true, |(_, l)| !l.is_empty()))
            .collect()
    }

    /// Records limits first hit in their windows as `limit.exceeded` events of the control-plane
    /// audit trail, in one transaction.
    pub async fn insert_limit_hits(&self, hits: &[LimitHit]) -> Result<()> {
        if hits.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for hit in hits {
            let detail = serde_json::json!({
                "limit": hit.kind.as_str(),
                "value": Limits::format_value(hit.kind, hit.limit),
                "scope": hit.scope.kind(),
                "window_start_ms": hit.window_start_ms,
                "resets_at_ms": hit.resets_at_ms,
                "devbox_id": hit.devbox_id.as_str(),
                "gateway_config_id": hit.gateway_config_id.as_str(),
            });
            let row = AuditRow {
                id: airlock_core::AuditId::generate().into_string(),
                time_ms: hit.time_ms,
                account_id: hit.account_id.clone(),
                api_key_id: None,
                action: "limit.exceeded".into(),
                object_type: hit.scope.kind().into(),
                object_id: hit.scope.id().to_owned(),
                detail: detail.to_string(),
                client_addr: None,
            };
            insert_audit(&mut tx, &row).await?;
        }
        self.commit(tx, &[]).await
    }

    /// Every scope whose limits changed at or after `since_ms`.
    pub async fn limits_changed_since(&self, since_ms: i64) -> Result<Vec<LimitsRecord>> {
        let rows = sqlx::query(
            "SELECT scope_kind, scope_id, limits, update_time_ms FROM limit_settings
             WHERE update_time_ms >= $1",
        )
        .bind(since_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record).collect()
    }

    /// Takes up to `want` of what is left of `key` under `limit`: one statement, atomic on
    /// either database.
    pub async fn lease_limit(&self, key: &CounterKey, limit: u64, want: u64) -> Result<Lease> {
        let (limit, want) = (amount(limit), amount(want));
        let row = sqlx::query(
            "INSERT INTO limit_counters (scope_kind, scope_id, kind, window_start_ms, used, last_grant)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (scope_kind, scope_id, kind, window_start_ms) DO UPDATE SET
                 used = limit_counters.used + CASE WHEN $6 - limit_counters.used < $7
                     THEN $6 - limit_counters.used ELSE $7 END,
                 last_grant = CASE WHEN $6 - limit_counters.used < $7
                     THEN $6 - limit_counters.used ELSE $7 END
             WHERE limit_counters.used < $6
             RETURNING last_grant, used",
        )
        .bind(key.scope.kind())
        .bind(key.scope.id().to_owned())
        .bind(key.kind.as_str())
        .bind(key.window_start_ms)
        .bind(want.min(limit))
        .bind(limit)
        .bind(want)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            Some(row) => Lease {
                granted: u64::try_from(col::<i64>(&row, "last_grant")?).unwrap_or(0),
                used: u64::try_from(col::<i64>(&row, "used")?).unwrap_or(0),
            },
            None => Lease {
                granted: 0,
                used: u64::try_from(limit).unwrap_or(0),
            },
        })
    }

    /// Adds `delta` to `key` (negative: a returned lease; positive: usage beyond the leases).
    pub async fn settle_limit(&self, key: &CounterKey, delta: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO limit_counters (scope_kind, scope_id, kind, window_start_ms, used, last_grant)
             VALUES ($1, $2, $3, $4, $5, 0)
             ON CONFLICT (scope_kind, scope_id, kind, window_start_ms) DO UPDATE SET
                 used = limit_counters.used + $5",
        )
        .bind(key.scope.kind())
        .bind(key.scope.id().to_owned())
        .bind(key.kind.as_str())
        .bind(key.window_start_ms)
        .bind(delta)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// What the counter `key` holds (0 when it was never used).
    pub async fn limit_used(&self, key: &CounterKey) -> Result<i64> {
        let used: Option<i64> = sqlx::query_scalar(
            "SELECT used FROM limit_counters
             WHERE scope_kind = $1 AND scope_id = $2 AND kind = $3 AND window_start_ms = $4",
        )
        .bind(key.scope.kind())
        .bind(key.scope.id().to_owned())
        .bind(key.kind.as_str())
        .bind(key.window_start_ms)
        .fetch_optional(self.pool())
        .await?;
        Ok(used.unwrap_or(0))
    }
}
