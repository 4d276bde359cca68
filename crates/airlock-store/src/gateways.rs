//! Gateway configs.

use airlock_core::router::{Backend, RouterConfig, Strategy};
use airlock_core::state::{Change, LlmSettings};
use airlock_core::{
    AccountId, Api, AuthMechanism, CustomHeader, Endpoint, GatewayConfigId, HeaderSource, Label,
    ModelSpec, Price, SecretId,
};
use serde_json::{json, Value};
use sqlx::any::AnyRow;

use crate::sql::{contains_pattern, Sql};
use crate::{
    col, insert_audit, AuditRow, GatewayConfigRow, GatewayFilter, Listed, Page, Result, Store,
    StoreError,
};

/// The columns [`gateway`] reads, in every query that returns whole gateway configs (a macro, so
/// that `concat!` can make the `&'static str` a listing needs).
macro_rules! gateway_columns {
    () => {
        "id, account_id, name, endpoint, auth_type, auth_key, custom_headers, description, create_time_ms, update_time_ms, binding, provider, api, models, router"
    };
}

pub(crate) const COLUMNS: &str = gateway_columns!();

/// Custom headers are stored as a JSON list of `{"name", "value"}` or `{"name", "secret"}`.
pub(crate) fn encode_headers(headers: &[CustomHeader]) -> String {
    Value::Array(
        headers
            .iter()
            .map(|h| match &h.source {
                HeaderSource::Literal(v) => json!({"name": h.name, "value": v}),
                HeaderSource::Secret(id) => json!({"name": h.name, "secret": id.as_str()}),
            })
            .collect(),
    )
    .to_string()
}

pub(crate) fn decode_headers(text: &str) -> Result<Vec<CustomHeader>> {
    let corrupt = || StoreError::Corrupt("custom_headers".into());
    let list: Vec<Value> = serde_json::from_str(text).map_err(|_| corrupt())?;
    list.iter()
        .map(|item| {
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(corrupt)?
                .to_owned();
            let source = match (
                item.get("value").and_then(Value::as_str),
                item.get("secret").and_then(Value::as_str),
            ) {
                (Some(v), None) => HeaderSource::Literal(v.to_owned()),
                (None, Some(s)) => HeaderSource::Secret(SecretId::from_trusted(s.to_owned())),
                _ => return Err(corrupt()),
            };
            Ok(CustomHeader { name, source })
        })
        .collect()
}

/// A model list is stored as a JSON list of `{"id", "name"?, "reasoning", "images", "cost"?:
/// {"input", "output", "cache_read", "cache_write"}, "context_window"?, "max_tokens"?, "tools"?}`, prices
/// in integer nano-dollars per million tokens; an empty list as NULL.
pub(crate) fn encode_models(models: &[ModelSpec]) -> Option<String> {
    if models.is_empty() {
        return None;
    }
    let list = models
        .iter()
        .map(|m| {
            let mut item = json!({"id": m.id, "reasoning": m.reasoning, "images": m.images});
            if let Value::Object(o) = &mut item {
                if let Some(name) = &m.name {
                    o.insert("name".into(), json!(name));
                }
                if let Some(c) = &m.cost {
                    o.insert(
                        "cost".into(),
                        json!({"input": c.input, "output": c.output, "cache_read": c.cache_read, "cache_write": c.cache_write}),
                    );
                }
                if let Some(n) = m.context_window {
                    o.insert("context_window".into(), json!(n));
                }
                if let Some(n) = m.max_tokens {
                    o.insert("max_tokens".into(), json!(n));
                }
                if let Some(t) = m.tools {
                    o.insert("tools".into(), json!(t));
                }
            }
            item
        })
        .collect();
    Some(Value::Array(list).to_string())
}

pub(crate) fn decode_models(text: Option<&str>) -> Result<Vec<ModelSpec>> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let corrupt = || StoreError::Corrupt("models".into());
    let list: Vec<Value> = serde_json::from_str(text).map_err(|_| corrupt())?;
    // A present key must hold the right type: a wrong one is corruption, not an absent value.
    let opt_u64 = |item: &Value, key: &str| match item.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(corrupt),
    };
    let flag = |item: &Value, key: &str| match item.get(key) {
        None => Ok(false),
        Some(v) => v.as_bool().ok_or_else(corrupt),
    };
    list.iter()
        .map(|item| {
            let cost = match item.get("cost") {
                None => None,
                Some(c) => {
                    let price = |key: &str| c.get(key).and_then(Value::as_u64).ok_or_else(corrupt);
                    Some(Price {
                        input: price("input")?,
                        output: price("output")?,
                        cache_read: price("cache_read")?,
                        cache_write: price("cache_write")?,
                    })
                }
            };
            Ok(ModelSpec {
                id: item
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(corrupt)?
                    .to_owned(),
                name: match item.get("name") {
                    None => None,
                    Some(v) => Some(v.as_str().ok_or_else(corrupt)?.to_owned()),
                },
                reasoning: flag(item, "reasoning")?,
                images: flag(item, "images")?,
                cost,
                context_window: opt_u64(item, "context_window")?,
                max_tokens: opt_u64(item, "max_tokens")?,
                tools: match item.get("tools") {
                    None => None,
                    Some(v) => Some(v.as_bool().ok_or_else(corrupt)?),
                },
            })
        })
        .collect()
}

/// A router's settings are stored as `{"backends": [{"gateway", "secret", "weight",
/// "priority", "models", "limits"?: {"rpm"?, "tpm"?, "rpd"?}}], "strategy", "fallback",
/// "max_attempts", "timeout_ms", "aliases": {"name": [backend index, "model"]}}`, ids only; a
/// plain gateway as NULL. A backend without `limits` (written before them) has no quota.
pub(crate) fn encode_router(router: Option<&RouterConfig>) -> Option<String> {
    let r = router?;
    let backends: Vec<Value> = r
        .backends
        .iter()
        .map(|b| {
            let limits: serde_json::Map<String, Value> = b
                .limits
                .iter()
                .map(|(name, _, v)| (name.to_owned(), v.into()))
                .collect();
            json!({"name": b.name, "gateway": b.gateway.as_str(), "secret": b.secret.as_str(),
                "weight": b.weight, "priority": b.priority, "models": b.models, "limits": limits})
        })
        .collect();
    let aliases: serde_json::Map<String, Value> = r
        .aliases
        .iter()
        .map(|(k, (i, m))| (k.clone(), json!([i, m])))
        .collect();
    Some(
        json!({"backends": backends, "strategy": r.strategy.as_str(), "fallback": r.fallback,
            "max_attempts": r.max_attempts, "timeout_ms": r.timeout_ms, "aliases": aliases})
        .to_string(),
    )
}

pub(crate) fn decode_router(text: Option<&str>) -> Result<Option<RouterConfig>> {
    let Some(text) = text else {
        return Ok(None);
    };
    let corrupt = || StoreError::Corrupt("router".into());
    let v: Value = serde_json::from_str(text).map_err(|_| corrupt())?;
    let str_of = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(corrupt)
    };
    let u64_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64).ok_or_else(corrupt);
    let mut backends = Vec::new();
    for b in v
        .get("backends")
        .and_then(Value::as_array)
        .ok_or_else(corrupt)?
    {
        let models = b
            .get("models")
            .and_then(Value::as_array)
            .ok_or_else(corrupt)?
            .iter()
            .map(|m| m.as_str().map(str::to_owned).ok_or_else(corrupt))
            .collect::<Result<_>>()?;
        let mut limits = airlock_core::router::BackendLimits::default();
        if let Some(given) = b.get("limits") {
            for (name, value) in given.as_object().ok_or_else(corrupt)? {
                *limits.slot(name).ok_or_else(corrupt)? = Some(value.as_u64().ok_or_else(corrupt)?);
            }
        }
        backends.push(Backend {
            name: str_of(b, "name")?,
            gateway: GatewayConfigId::from_trusted(str_of(b, "gateway")?),
            secret: SecretId::from_trusted(str_of(b, "secret")?),
            weight: u32::try_from(u64_of(b, "weight")?).map_err(|_| corrupt())?,
            priority: b
                .get("priority")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok())
                .ok_or_else(corrupt)?,
            models,
            limits,
        });
    }
    let mut aliases = std::collections::BTreeMap::new();
    for (k, a) in v
        .get("aliases")
        .and_then(Value::as_object)
        .ok_or_else(corrupt)?
    {
        let index = a.get(0).and_then(Value::as_u64).ok_or_else(corrupt)?;
        let model = a.get(1).and_then(Value::as_str).ok_or_else(corrupt)?;
        aliases.insert(
            k.clone(),
            (
                usize::try_from(index).map_err(|_| corrupt())?,
                model.to_owned(),
            ),
        );
    }
    Ok(Some(RouterConfig {
        backends,
        strategy: Strategy::parse("router", &str_of(&v, "strategy")?).map_err(|_| corrupt())?,
        fallback: v
            .get("fallback")
            .and_then(Value::as_bool)
            .ok_or_else(corrupt)?,
        max_attempts: u32::try_from(u64_of(&v, "max_attempts")?).map_err(|_| corrupt())?,
        timeout_ms: u64_of(&v, "timeout_ms")?,
        aliases,
    }))
}

pub(crate) fn gateway(row: &AnyRow) -> Result<GatewayConfigRow> {
    let endpoint: String = col(row, "endpoint")?;
    let auth_type: String = col(row, "auth_type")?;
    let auth_key: Option<String> = col(row, "auth_key")?;
    let headers: String = col(row, "custom_headers")?;
    Ok(GatewayConfigRow {
        id: GatewayConfigId::from_trusted(col(row, "id")?),
        account_id: AccountId::from_trusted(col(row, "account_id")?),
        name: Label::from_trusted(col(row, "name")?),
        endpoint: Endpoint::parse("endpoint", &endpoint)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        auth: AuthMechanism::parse("auth_mechanism", &auth_type, auth_key.as_deref())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        custom_headers: decode_headers(&headers)?,
        description: col(row, "description")?,
        create_time_ms: col(row, "create_time_ms")?,
        update_time_ms: col(row, "update_time_ms")?,
        binding: col(row, "binding")?,
        llm: LlmSettings {
            provider: col(row, "provider")?,
            api: Api::parse("api", &col::<String>(row, "api")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            models: decode_models(col::<Option<String>>(row, "models")?.as_deref())?,
        },
        router: decode_router(col::<Option<String>>(row, "router")?.as_deref())?,
    })
}

impl Store {
    pub async fn insert_gateway_config(
        &self,
        row: &GatewayConfigRow,
        audit: &AuditRow,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO gateway_configs (id, account_id, name, endpoint, auth_type, auth_key, custom_headers, description, create_time_ms, update_time_ms, binding,
                provider, api, models, router)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(row.id.as_str().to_owned())
        .bind(row.account_id.as_str().to_owned())
        .bind(row.name.as_str().to_owned())
        .bind(row.endpoint.to_string())
        .bind(row.auth.kind())
        .bind(row.auth.key().map(str::to_owned))
        .bind(encode_headers(&row.custom_headers))
        .bind(row.description.clone())
        .bind(row.create_time_ms)
        .bind(row.update_time_ms)
        .bind(row.binding.clone())
        .bind(row.llm.provider.clone())
        .bind(row.llm.api.as_str())
        .bind(encode_models(&row.llm.models))
        .bind(encode_router(row.router.as_ref()))
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        self.commit(tx, &[Change::GatewayConfig(row.id.clone())])
            .await
    }

    pub async fn get_gateway_config(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<GatewayConfigRow> {
        let sql = format!("SELECT {COLUMNS} FROM gateway_configs WHERE account_id = $1 AND id = $2 AND delete_time_ms IS NULL");
        let row = sqlx::query(&sql)
            .bind(account.as_str().to_owned())
            .bind(id.to_owned())
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        gateway(&row)
    }

    /// The most recently created live config with this name (names are labels and may repeat).
    pub async fn gateway_config_by_name(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<GatewayConfigRow> {
        let sql = format!(
            "SELECT {COLUMNS} FROM gateway_configs WHERE account_id = $1 AND name = $2 AND delete_time_ms IS NULL ORDER BY id DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(account.as_str().to_owned())
            .bind(name.to_owned())
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        gateway(&row)
    }

    pub async fn list_gateway_configs(
        &self,
        account: &AccountId,
        filter: &GatewayFilter,
        page: &Page,
    ) -> Result<Listed<GatewayConfigRow>> {
        let from = |q: &mut Sql| {
            q.push(" FROM gateway_configs WHERE delete_time_ms IS NULL AND account_id = ")
                .bind(account.as_str().to_owned());
            if let Some(id) = &filter.id {
                q.push(" AND id = ").bind(id.clone());
            }
            if let Some(name) = &filter.name {
                q.push(" AND LOWER(name) LIKE ")
                    .bind(contains_pattern(name))
                    .push(" ESCAPE '\\'");
            }
            if let Some(search) = &filter.search {
                q.push(" AND (id = ").bind(search.clone());
                q.push(" OR LOWER(name) LIKE ")
                    .bind(contains_pattern(search))
                    .push(" ESCAPE '\\')");
            }
        };
        self.list_page(concat!("SELECT ", gateway_columns!()), from, page, gateway)
            .await
    }

    pub async fn update_gateway_config(
        &self,
        row: &GatewayConfigRow,
        audit: &AuditRow,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE gateway_configs SET name = $1, endpoint = $2, auth_type = $3, auth_key = $4, custom_headers = $5,
                    description = $6, update_time_ms = $7, binding = $10, provider = $11, api = $12, models = $13, router = $14
             WHERE id = $8 AND account_id = $9 AND delete_time_ms IS NULL",
        )
        .bind(row.name.as_str().to_owned())
        .bind(row.endpoint.to_string())
        .bind(row.auth.kind())
        .bind(row.auth.key().map(str::to_owned))
        .bind(encode_headers(&row.custom_headers))
        .bind(row.description.clone())
        .bind(row.update_time_ms)
        .bind(row.id.as_str().to_owned())
        .bind(row.account_id.as_str().to_owned())
        .bind(row.binding.clone())
        .bind(row.llm.provider.clone())
        .bind(row.llm.api.as_str())
        .bind(encode_models(&row.llm.models))
        .bind(encode_router(row.router.as_ref()))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&mut tx, audit).await?;
        self.commit(tx, &[Change::GatewayConfig(row.id.clone())])
            .await
    }

    /// Every live gateway config of every account, for re-binding under a new master key.
    pub async fn all_gateway_configs(&self) -> Result<Vec<GatewayConfigRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM gateway_configs WHERE delete_time_ms IS NULL ORDER BY id"
        );
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;
        rows.iter().map(gateway).collect()
    }

    /// Stores a new binding for a config whose bound fields did not change (a master key
    /// rotation). Returns false when the config was updated or deleted meanwhile: `old` must
    /// still be the stored binding.
    pub async fn store_rebound(
        &self,
        id: &GatewayConfigId,
        old: Option<&[u8]>,
        binding: &[u8],
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let current: Option<Option<Vec<u8>>> = sqlx::query_scalar(
            "SELECT binding FROM gateway_configs WHERE id = $1 AND delete_time_ms IS NULL",
        )
        .bind(id.as_str().to_owned())
        .fetch_optional(&mut *tx)
        .await?;
        if current.as_ref().map(Option::as_deref) != Some(old) {
            return Ok(false);
        }
        sqlx::query("UPDATE gateway_configs SET binding = $1 WHERE id = $2")
            .bind(binding.to_vec())
            .bind(id.as_str().to_owned())
            .execute(&mut *tx)
            .await?;
        self.commit(tx, &[Change::GatewayConfig(id.clone())])
            .await?;
        Ok(true)
    }

    /// Deletes a config; refused while a live token of a running devbox uses it.
    pub async fn delete_gateway_config(
        &self,
        account: &AccountId,
        id: &GatewayConfigId,
        now_ms: i64,
        audit: &AuditRow,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let in_use: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM gateway_tokens t JOIN devboxes d ON d.id = t.devbox_id
             WHERE t.gateway_config_id = $1 AND t.revoke_time_ms IS NULL AND d.status = 'running'",
        )
        .bind(id.as_str().to_owned())
        .fetch_one(&mut *tx)
        .await?;
        if in_use > 0 {
            return Err(StoreError::Refused(
                "the gateway config is in use by a running devbox; shut the devbox down first"
                    .into(),
            ));
        }
        let in_routers: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM gateway_configs WHERE account_id = $1 AND delete_time_ms IS NULL
             AND router IS NOT NULL AND LOWER(router) LIKE $2 ESCAPE '\\'",
        )
        .bind(account.as_str().to_owned())
        .bind(contains_pattern(&format!("\"{}\"", id.as_str())))
        .fetch_one(&mut *tx)
        .await?;
        if in_routers > 0 {
            return Err(StoreError::Refused(
                "the gateway config is a router gateway's backend; change that router first".into(),
            ));
        }
        let done = sqlx::query(
            "UPDATE gateway_configs SET delete_time_ms = $1 WHERE account_id = $2 AND id = $3 AND delete_time_ms IS NULL",
        )
        .bind(now_ms)
        .bind(account.as_str().to_owned())
        .bind(id.as_str().to_owned())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&mut tx, audit).await?;
        self.commit(tx, &[Change::GatewayConfig(id.clone())]).await
    }
}
