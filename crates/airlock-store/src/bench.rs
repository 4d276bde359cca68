//! Bulk inserts for the benchmark tools (feature `bench`, off in the shipped binary): a million
//! devboxes and tokens in minutes instead of a million API calls. Multi-row statements in one
//! transaction, with no audit rows and no change notifications: a data plane started afterwards
//! loads them with its first full load. Airlock itself never calls this.

use crate::devboxes::encode_addresses;
use crate::sql::Sql;
use crate::{DevboxRow, Result, Store, TokenRow};

/// Rows per statement: 9 placeholders each stays under SQLite's and Postgres' limits.
const ROWS: usize = 1000;

impl Store {
    /// Inserts devboxes and tokens as given (their gateway configs and secrets must exist).
    pub async fn bench_insert(&self, devboxes: &[DevboxRow], tokens: &[TokenRow]) -> Result<()> {
        let mut tx = self.begin().await?;
        for chunk in devboxes.chunks(ROWS) {
            let mut q = Sql::many(
                self.backend(),
                "INSERT INTO devboxes (id, account_id, name, status, source_addresses, metadata, create_time_ms, update_time_ms) VALUES ",
            );
            for (i, d) in chunk.iter().enumerate() {
                q.push(if i == 0 { "(" } else { ", (" });
                q.bind(d.id.as_str().to_owned()).push(", ");
                q.bind(d.account_id.as_str().to_owned()).push(", ");
                q.bind(d.name.clone()).push(", ");
                q.bind(d.status.as_str()).push(", ");
                q.bind(encode_addresses(&d.source_addresses)).push(", ");
                q.bind(d.metadata.clone()).push(", ");
                q.bind(d.create_time_ms).push(", ");
                q.bind(d.update_time_ms).push(")");
            }
            let (text, args) = q.build();
            sqlx::query_with(&text, args).execute(&mut *tx).await?;
        }
        for chunk in tokens.chunks(ROWS) {
            let mut q = Sql::many(
                self.backend(),
                "INSERT INTO gateway_tokens (id, account_id, devbox_id, gateway_config_id, secret_id, prefix, digest, create_time_ms, expire_time_ms) VALUES ",
            );
            for (i, t) in chunk.iter().enumerate() {
                q.push(if i == 0 { "(" } else { ", (" });
                q.bind(t.id.as_str().to_owned()).push(", ");
                q.bind(t.account_id.as_str().to_owned()).push(", ");
                q.bind(t.devbox_id.as_str().to_owned()).push(", ");
                q.bind(t.gateway_config_id.as_str().to_owned()).push(", ");
                q.bind(t.secret_id.as_ref().map(|s| s.as_str().to_owned()))
                    .push(", ");
                q.bind(t.prefix.as_ref().map(|p| p.as_str().to_owned()))
                    .push(", ");
                q.bind(t.digest.to_hex()).push(", ");
                q.bind(t.create_time_ms).push(", ");
                q.bind(t.expire_time_ms).push(")");
            }
            let (text, args) = q.build();
            sqlx::query_with(&text, args).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
