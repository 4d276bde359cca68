//! The data plane's view of the store: snapshots, targeted reloads and the change feed.
//!
//! Notifications carry only `kind:id`. On Postgres they travel through `LISTEN/NOTIFY` (sent in
//! the writing transaction, so they arrive only for committed changes); on SQLite through an
//! in-process broadcast channel. A lost connection or a lagging receiver turns into
//! [`FeedEvent::Resync`], and the data plane reloads everything.

use airlock_core::state::{
    Change, ChangeFeed, DevboxRecord, FeedEvent, GatewayRecord, SecretRecord, SourceError,
    StateSnapshot, StateSource, TokenRecord,
};
use airlock_core::{AccountId, DevboxId, GatewayConfigId, SecretId, TokenDigest, TokenId};
use sqlx::any::AnyRow;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use crate::devboxes::{decode_addresses, devbox_status};
use crate::gateways::{gateway, COLUMNS as GATEWAY_COLUMNS};
use crate::{col, Backend, DevboxStatus, Result, Store, StoreError, CHANNEL};

pub(crate) fn encode(change: &Change) -> String {
    match change {
        Change::Token(id) => format!("t:{id}"),
        Change::Devbox(id) => format!("d:{id}"),
        Change::GatewayConfig(id) => format!("g:{id}"),
        Change::Secret(id) => format!("s:{id}"),
    }
}

pub(crate) fn decode(payload: &str) -> Option<Change> {
    let (kind, id) = payload.split_once(':')?;
    Some(match kind {
        "t" => Change::Token(TokenId::parse("", id).ok()?),
        "d" => Change::Devbox(DevboxId::parse("", id).ok()?),
        "g" => Change::GatewayConfig(GatewayConfigId::parse("", id).ok()?),
        "s" => Change::Secret(SecretId::parse("", id).ok()?),
        _ => return None,
    })
}

const TOKEN_COLUMNS: &str =
    "t.id, t.digest, t.account_id, t.devbox_id, t.gateway_config_id, t.secret_id, t.expire_time_ms, t.revoke_time_ms, t.scope";
const ACTIVE_TOKEN: &str =
    "t.revoke_time_ms IS NULL AND (t.expire_time_ms IS NULL OR t.expire_time_ms > $1)";

fn token(row: &AnyRow) -> Result<TokenRecord> {
    let digest: String = col(row, "digest")?;
    Ok(TokenRecord {
        id: TokenId::from_trusted(col(row, "id")?),
        digest: TokenDigest::from_hex(&digest)
            .ok_or_else(|| StoreError::Corrupt("token digest".into()))?,
        account_id: AccountId::from_trusted(col(row, "account_id")?),
        devbox_id: DevboxId::from_trusted(col(row, "devbox_id")?),
        gateway_config_id: GatewayConfigId::from_trusted(col(row, "gateway_config_id")?),
        secret_id: col::<Option<String>>(row, "secret_id")?.map(SecretId::from_trusted),
        expires_at_ms: col(row, "expire_time_ms")?,
        revoked: col::<Option<i64>>(row, "revoke_time_ms")?.is_some(),
        scope: crate::devboxes::decode_scope(col(row, "scope")?)?,
    })
}

fn devbox(row: &AnyRow) -> Result<DevboxRecord> {
    let status: String = col(row, "status")?;
    let addrs: String = col(row, "source_addresses")?;
    Ok(DevboxRecord {
        id: DevboxId::from_trusted(col(row, "id")?),
        account_id: AccountId::from_trusted(col(row, "account_id")?),
        running: devbox_status(&status)? == DevboxStatus::Running,
        source_addresses: decode_addresses(&addrs)?,
    })
}

fn gateway_record(row: &AnyRow) -> Result<GatewayRecord> {
    let g = gateway(row)?;
    Ok(GatewayRecord {
        id: g.id,
        account_id: g.account_id,
        endpoint: g.endpoint,
        auth: g.auth,
        custom_headers: g.custom_headers,
        binding: g.binding,
        llm: g.llm,
        router: g.router,
    })
}

fn secret(row: &AnyRow) -> Result<SecretRecord> {
    Ok(SecretRecord {
        id: SecretId::from_trusted(col(row, "id")?),
        account_id: AccountId::from_trusted(col(row, "account_id")?),
        version: col(row, "version")?,
        sealed: col(row, "sealed")?,
    })
}

impl Store {
    /// Everything, read in one transaction so that the four queries agree with each other
    /// (REPEATABLE READ on Postgres; a SQLite read transaction is a snapshot already).
    async fn snapshot_all(&self) -> Result<StateSnapshot> {
        let now = airlock_core::time::now_ms();
        let mut tx = self.begin_read().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM gateway_tokens t JOIN devboxes d ON d.id = t.devbox_id
             WHERE {ACTIVE_TOKEN} AND d.status = 'running'"
        );
        let tokens = sqlx::query(&sql).bind(now).fetch_all(&mut *tx).await?;
        let devboxes = sqlx::query(
            "SELECT id, account_id, status, source_addresses FROM devboxes WHERE status = 'running'",
        )
        .fetch_all(&mut *tx)
        .await?;
        let gateways = sqlx::query(&format!(
            "SELECT {GATEWAY_COLUMNS} FROM gateway_configs WHERE delete_time_ms IS NULL"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let secrets = sqlx::query(
            "SELECT id, account_id, version, sealed FROM secrets WHERE delete_time_ms IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(StateSnapshot {
            tokens: tokens.iter().map(token).collect::<Result<_>>()?,
            devboxes: devboxes.iter().map(devbox).collect::<Result<_>>()?,
            gateways: gateways.iter().map(gateway_record).collect::<Result<_>>()?,
            secrets: secrets.iter().map(secret).collect::<Result<_>>()?,
        })
    }

    /// The same records as [`Self::snapshot_all`], in the same kind of transaction, handed to
    /// `page` at most `self.load_page` devbox and token records at a time (after one page of
    /// every gateway config and secret) as the rows stream in: neither all the rows nor all
    /// the records of a million tokens are ever in memory at once.
    async fn snapshot_all_paged(&self, page: &mut (dyn FnMut(StateSnapshot) + Send)) -> Result<()> {
        use futures_util::TryStreamExt;
        let now = airlock_core::time::now_ms();
        let mut tx = self.begin_read().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let gateways = sqlx::query(&format!(
            "SELECT {GATEWAY_COLUMNS} FROM gateway_configs WHERE delete_time_ms IS NULL"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let secrets = sqlx::query(
            "SELECT id, account_id, version, sealed FROM secrets WHERE delete_time_ms IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        page(StateSnapshot {
            gateways: gateways.iter().map(gateway_record).collect::<Result<_>>()?,
            secrets: secrets.iter().map(secret).collect::<Result<_>>()?,
            ..StateSnapshot::default()
        });
        drop((gateways, secrets));
        let mut out = StateSnapshot::default();
        {
            let mut rows = sqlx::query(
                "SELECT id, account_id, status, source_addresses FROM devboxes WHERE status = 'running'",
            )
            .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                out.devboxes.push(devbox(&row)?);
                if out.devboxes.len() >= self.load_page {
                    page(std::mem::take(&mut out));
                }
            }
        }
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM gateway_tokens t JOIN devboxes d ON d.id = t.devbox_id
             WHERE {ACTIVE_TOKEN} AND d.status = 'running'"
        );
        {
            let mut rows = sqlx::query(&sql).bind(now).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                out.tokens.push(token(&row)?);
                if out.tokens.len() + out.devboxes.len() >= self.load_page {
                    page(std::mem::take(&mut out));
                }
            }
        }
        if !out.tokens.is_empty() || !out.devboxes.is_empty() {
            page(out);
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds to `out` the devbox, gateway config and secret a token references.
    async fn add_references(&self, out: &mut StateSnapshot, t: &TokenRecord) -> Result<()> {
        if !out.devboxes.iter().any(|d| d.id == t.devbox_id) {
            if let Some(r) = sqlx::query(
                "SELECT id, account_id, status, source_addresses FROM devboxes WHERE id = $1",
            )
            .bind(t.devbox_id.as_str().to_owned())
            .fetch_optional(self.pool())
            .await?
            {
                out.devboxes.push(devbox(&r)?);
            }
        }
        self.add_gateway(out, &t.gateway_config_id).await?;
        match &t.secret_id {
            Some(id) => self.add_secret(out, id).await,
            None => Ok(()),
        }
    }

    async fn add_gateway(&self, out: &mut StateSnapshot, id: &GatewayConfigId) -> Result<()> {
        if out.gateways.iter().any(|g| &g.id == id) {
            return Ok(());
        }
        if let Some(r) = sqlx::query(&format!(
            "SELECT {GATEWAY_COLUMNS} FROM gateway_configs WHERE id = $1 AND delete_time_ms IS NULL"
        ))
        .bind(id.as_str().to_owned())
        .fetch_optional(self.pool())
        .await?
        {
            let g = gateway_record(&r)?;
            // Secret-backed custom headers need their secrets too.
            for h in &g.custom_headers {
                if let airlock_core::HeaderSource::Secret(s) = &h.source {
                    Box::pin(self.add_secret(out, s)).await?;
                }
            }
            // A router's backends come with it: their gateway configs and secrets (a backend
            // is never a router itself, so this goes one level deep).
            let backends: Vec<_> = g
                .router
                .iter()
                .flat_map(|r| r.backends.iter())
                .map(|b| (b.gateway.clone(), b.secret.clone()))
                .collect();
            out.gateways.push(g);
            for (gateway, secret) in backends {
                if gateway != *id {
                    Box::pin(self.add_gateway(out, &gateway)).await?;
                }
                Box::pin(self.add_secret(out, &secret)).await?;
            }
        }
        Ok(())
    }

    async fn add_secret(&self, out: &mut StateSnapshot, id: &SecretId) -> Result<()> {
        if out.secrets.iter().any(|s| &s.id == id) {
            return Ok(());
        }
        if let Some(r) = sqlx::query("SELECT id, account_id, version, sealed FROM secrets WHERE id = $1 AND delete_time_ms IS NULL")
            .bind(id.as_str().to_owned())
            .fetch_optional(self.pool())
            .await?
        {
            out.secrets.push(secret(&r)?);
        }
        Ok(())
    }

    async fn snapshot_changed(&self, changes: &[Change]) -> Result<StateSnapshot> {
        let now = airlock_core::time::now_ms();
        let mut out = StateSnapshot::default();
        for change in changes {
            match change {
                Change::Token(id) => {
                    let sql =
                        format!("SELECT {TOKEN_COLUMNS} FROM gateway_tokens t WHERE t.id = $1");
                    if let Some(r) = sqlx::query(&sql)
                        .bind(id.as_str().to_owned())
                        .fetch_optional(self.pool())
                        .await?
                    {
                        let t = token(&r)?;
                        self.add_references(&mut out, &t).await?;
                        out.tokens.push(t);
                    }
                }
                Change::Devbox(id) => {
                    if let Some(r) = sqlx::query("SELECT id, account_id, status, source_addresses FROM devboxes WHERE id = $1")
                        .bind(id.as_str().to_owned())
                        .fetch_optional(self.pool())
                        .await?
                    {
                        out.devboxes.retain(|d| &d.id != id);
                        out.devboxes.push(devbox(&r)?);
                    }
                    let sql = format!("SELECT {TOKEN_COLUMNS} FROM gateway_tokens t WHERE t.devbox_id = $2 AND {ACTIVE_TOKEN}");
                    for r in sqlx::query(&sql)
                        .bind(now)
                        .bind(id.as_str().to_owned())
                        .fetch_all(self.pool())
                        .await?
                    {
                        let t = token(&r)?;
                        self.add_references(&mut out, &t).await?;
                        out.tokens.push(t);
                    }
                }
                Change::GatewayConfig(id) => self.add_gateway(&mut out, id).await?,
                Change::Secret(id) => self.add_secret(&mut out, id).await?,
            }
        }
        Ok(out)
    }

    async fn snapshot_token(&self, digest: &TokenDigest) -> Result<Option<StateSnapshot>> {
        let now = airlock_core::time::now_ms();
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM gateway_tokens t WHERE t.digest = $2 AND {ACTIVE_TOKEN}"
        );
        let Some(r) = sqlx::query(&sql)
            .bind(now)
            .bind(digest.to_hex())
            .fetch_optional(self.pool())
            .await?
        else {
            return Ok(None);
        };
        let t = token(&r)?;
        let mut out = StateSnapshot::default();
        self.add_references(&mut out, &t).await?;
        out.tokens.push(t);
        Ok(Some(out))
    }
}

fn source_err(e: StoreError) -> SourceError {
    SourceError(e.to_string())
}

impl StateSource for Store {
    type Feed = StoreFeed;

    async fn load_all(&self) -> Result<StateSnapshot, SourceError> {
        self.snapshot_all().await.map_err(source_err)
    }

    async fn load_all_paged<F>(&self, mut page: F) -> Result<(), SourceError>
    where
        F: FnMut(StateSnapshot) + Send,
    {
        self.snapshot_all_paged(&mut page).await.map_err(source_err)
    }

    async fn load_changed(&self, changes: &[Change]) -> Result<StateSnapshot, SourceError> {
        self.snapshot_changed(changes).await.map_err(source_err)
    }

    async fn load_token(&self, digest: &TokenDigest) -> Result<Option<StateSnapshot>, SourceError> {
        self.snapshot_token(digest).await.map_err(source_err)
    }

    async fn subscribe(&self) -> Result<StoreFeed, SourceError> {
        match self.backend {
            Backend::Postgres => {
                let mut listener = PgListener::connect(&self.url)
                    .await
                    .map_err(|e| SourceError(format!("cannot listen for changes: {e}")))?;
                listener
                    .listen(CHANNEL)
                    .await
                    .map_err(|e| SourceError(format!("cannot listen for changes: {e}")))?;
                Ok(StoreFeed::Postgres(Box::new(listener)))
            }
            Backend::Sqlite => Ok(StoreFeed::Local(self.local_feed.subscribe())),
        }
    }

    async fn limits_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<airlock_core::LimitsRecord>, SourceError> {
        self.limits_changed_since(since_ms)
            .await
            .map_err(source_err)
    }

    async fn lease(
        &self,
        key: &airlock_core::CounterKey,
        limit: u64,
        want: u64,
    ) -> Result<airlock_core::state::Lease, SourceError> {
        self.lease_limit(key, limit, want).await.map_err(source_err)
    }

    async fn settle(&self, key: &airlock_core::CounterKey, delta: i64) -> Result<(), SourceError> {
        self.settle_limit(key, delta).await.map_err(source_err)
    }
}

/// A subscription to the store's changes.
pub enum StoreFeed {
    Postgres(Box<PgListener>),
    Local(broadcast::Receiver<Change>),
}

impl ChangeFeed for StoreFeed {
    async fn next(&mut self) -> Result<FeedEvent, SourceError> {
        match self {
            StoreFeed::Postgres(listener) => loop {
                // try_recv answers None after the connection dropped; the next call reconnects.
                // Whatever was sent meanwhile is lost, so the data plane must reload everything.
                match listener.try_recv().await {
                    Ok(Some(n)) => match decode(n.payload()) {
                        Some(change) => return Ok(FeedEvent::Changed(change)),
                        None => continue,
                    },
                    Ok(None) => return Ok(FeedEvent::Resync),
                    Err(e) => return Err(SourceError(format!("change feed failed: {e}"))),
                }
            },
            StoreFeed::Local(rx) => match rx.recv().await {
                Ok(change) => Ok(FeedEvent::Changed(change)),
                Err(broadcast::error::RecvError::Lagged(_)) => Ok(FeedEvent::Resync),
                Err(broadcast::error::RecvError::Closed) => {
                    Err(SourceError("change feed closed".into()))
                }
            },
        }
    }
}
