//! The request audit on PostgreSQL: `COPY … FROM STDIN`, for the data plane's audit writers.
//!
//! A multi-row `INSERT … ON CONFLICT (id) DO NOTHING` of 100 events is a statement of 1 900
//! parameters that PostgreSQL parses, plans and runs as 100 speculative insertions (each one
//! checks the primary key before and after writing its row), and that sqlx's `Any` driver builds
//! with an owned copy of every string. `COPY` in text format streams the rows in one message that
//! the server writes with its bulk-insert path; the writer formats them into one buffer, borrowing
//! the events' fields.
//!
//! `COPY` has no `ON CONFLICT`. A batch is written twice only when an earlier attempt committed
//! and its answer was lost, or a spill file is replayed after a partial failure; then one of its
//! ids is already stored, the whole `COPY` fails with a unique violation (nothing of it is kept),
//! and [`CopyPostgres::insert`] says so, so that the store writes that batch with the `INSERT`
//! that skips stored ids instead. Either way each event is stored once.
//!
//! Only `request_events` is written this way, on the writers' own connections; everything else,
//! and every read, goes through the store's sqlx pool. The text below writes the same columns and
//! the same values as `Store::insert_request_events`, and a test reads rows back through the store
//! to hold the two to the same result.

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use airlock_core::state::RequestAuditEvent;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::ConnectOptions;

use crate::audit::db_int;
use crate::{Result, StoreError};

/// Every column, in the order of the text rows below.
const COPY: &str = concat!(
    "COPY request_events (",
    request_event_columns!(),
    ") FROM STDIN"
);

/// PostgreSQL's SQLSTATE for `unique_violation`.
const UNIQUE_VIOLATION: &str = "23505";

/// The audit writer's own PostgreSQL connection (a pool of one, connected on first use and
/// again after a failure).
pub(crate) struct CopyPostgres {
    pool: PgPool,
}

/// What a [`CopyPostgres::insert`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Copied {
    /// Every event is stored.
    All,
    /// Nothing: an event's id is already stored. The batch must go through the `INSERT` that
    /// skips stored ids.
    SeenBefore,
}

impl CopyPostgres {
    /// For a `postgres://…` URL, with the store's connection settings.
    pub(crate) fn new(url: &str) -> Result<CopyPostgres> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("AIRLOCK_DATABASE_URL does not parse: {e}")))?
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            // No ping before each batch: a connection that broke fails its COPY, the writer
            // keeps the batch and tries again, and the pool connects anew.
            .test_before_acquire(false)
            .connect_lazy_with(options);
        Ok(CopyPostgres { pool })
    }

    /// Writes `events` with one `COPY`: all of them, or none.
    pub(crate) async fn insert(&self, events: &[RequestAuditEvent]) -> Result<Copied> {
        if events.is_empty() {
            return Ok(Copied::All);
        }
        let rows = text_rows(events);
        let mut conn = self.pool.acquire().await?;
        let mut copy = conn.copy_in_raw(COPY).await?;
        // On an error here the copy is dropped, which tells the server to discard it.
        copy.send(rows).await?;
        match copy.finish().await {
            Ok(_) => Ok(Copied::All),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNIQUE_VIOLATION) => {
                Ok(Copied::SeenBefore)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The events as `COPY`'s text format: one line per event, columns separated by tabs, `\N` for
/// NULL.
fn text_rows(events: &[RequestAuditEvent]) -> Vec<u8> {
    let mut out = String::with_capacity(events.len() * 320);
    for e in events {
        let m = e.llm.as_ref();
        let u = m.map(|m| m.usage);
        text(&mut out, Some(e.id.as_str()));
        int(&mut out, Some(e.time_ms));
        text(&mut out, e.account_id.as_ref().map(|v| v.as_str()));
        text(&mut out, e.devbox_id.as_ref().map(|v| v.as_str()));
        text(&mut out, e.gateway_config_id.as_ref().map(|v| v.as_str()));
        text(&mut out, e.token_id.as_ref().map(|v| v.as_str()));
        text(&mut out, e.secret_id.as_ref().map(|v| v.as_str()));
        int(&mut out, e.secret_version);
        text(&mut out, Some(&e.method));
        text(&mut out, Some(&e.path));
        int(&mut out, Some(i64::from(e.status)));
        int(&mut out, e.upstream_status.map(i64::from));
        int(&mut out, Some(e.latency_us));
        int(&mut out, e.ttfb_us);
        int(&mut out, Some(e.bytes_in));
        int(&mut out, Some(e.bytes_out));
        separate(&mut out);
        let _ = write!(out, "{}", e.client_addr);
        text(&mut out, e.error_code.as_deref());
        text(&mut out, e.request_id.as_deref());
        text(&mut out, m.and_then(|m| m.provider.as_deref()));
        text(&mut out, m.and_then(|m| m.model.as_deref()));
        int(&mut out, u.map(|u| db_int(u.input_tokens)));
        int(&mut out, u.map(|u| db_int(u.output_tokens)));
        int(&mut out, u.map(|u| db_int(u.cache_read_tokens)));
        int(&mut out, u.map(|u| db_int(u.cache_write_tokens)));
        int(&mut out, u.map(|u| db_int(u.reasoning_tokens)));
        int(&mut out, u.map(|u| i64::from(u.exact)));
        int(&mut out, m.and_then(|m| m.cost_nanos).map(db_int));
        out.push('\n');
    }
    out.into_bytes()
}

/// The tab before a column, unless it is a line's first.
fn separate(out: &mut String) {
    if !(out.is_empty() || out.ends_with('\n')) {
        out.push('\t');
    }
}

/// A column: its separator, then `\N` or the value.
fn int(out: &mut String, value: Option<i64>) {
    separate(out);
    match value {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("\\N"),
    }
}

/// A text column: its separator, then `\N` or the value with backslash, tab, newline and carriage
/// return escaped. A NUL character, which no PostgreSQL text can hold (the `INSERT` would fail the
/// whole batch on it), is left out; the values written here have none (ids, a URI path, header
/// values, printable model names), so this only keeps one bad value from losing a batch.
fn text(out: &mut String, value: Option<&str>) {
    separate(out);
    let Some(v) = value else {
        out.push_str("\\N");
        return;
    };
    let mut rest = v;
    while let Some(i) = rest.find(['\\', '\t', '\n', '\r', '\0']) {
        out.push_str(&rest[..i]);
        match rest.as_bytes()[i] {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            _ => {}
        }
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn column(value: Option<&str>) -> String {
        let mut out = String::new();
        text(&mut out, value);
        out
    }

    #[test]
    fn text_columns_escape_what_copy_reads_as_syntax() {
        assert_eq!(column(None), "\\N");
        assert_eq!(column(Some("")), "");
        assert_eq!(column(Some("\\N")), "\\\\N");
        assert_eq!(column(Some("a\tb\nc\rd\\e")), "a\\tb\\nc\\rd\\\\e");
        assert_eq!(column(Some("x\0y")), "xy");
        assert_eq!(column(Some("ünïcode")), "ünïcode");
    }

    #[test]
    fn columns_after_the_first_are_separated_by_tabs() {
        let mut out = String::new();
        text(&mut out, Some("id"));
        int(&mut out, Some(-7));
        int(&mut out, None);
        out.push('\n');
        text(&mut out, None);
        int(&mut out, Some(i64::MAX));
        assert_eq!(out, "id\t-7\t\\N\n\\N\t9223372036854775807");
    }

    fn event() -> RequestAuditEvent {
        RequestAuditEvent {
            id: airlock_core::AuditId::generate(),
            time_ms: 1,
            account_id: None,
            devbox_id: None,
            gateway_config_id: None,
            token_id: None,
            secret_id: None,
            secret_version: None,
            method: "GET".into(),
            path: "/".into(),
            status: 200,
            upstream_status: None,
            latency_us: 1,
            ttfb_us: None,
            bytes_in: 0,
            bytes_out: 0,
            client_addr: "::1".parse().unwrap(),
            error_code: None,
            request_id: None,
            llm: None,
        }
    }

    #[test]
    fn a_row_has_a_value_for_every_column() {
        let rows = String::from_utf8(text_rows(&[event(), event()])).unwrap();
        let columns = crate::audit::count_columns(request_event_columns!());
        let lines: Vec<&str> = rows.split_terminator('\n').collect();
        assert_eq!(lines.len(), 2);
        for line in lines {
            assert_eq!(line.split('\t').count(), columns, "{line}");
        }
    }

    /// The COPY itself (the store's tests read its rows back, but would pass on the fallback
    /// alone): a fresh batch is copied, a batch with a stored id is refused whole.
    #[tokio::test]
    async fn copies_a_fresh_batch_and_refuses_one_written_before() {
        let url = airlock_testkit::pg::shared()
            .await
            .fresh_database()
            .await
            .unwrap();
        crate::Store::connect(&url)
            .await
            .unwrap()
            .migrate()
            .await
            .unwrap();
        let copy = CopyPostgres::new(&url).unwrap();
        let first = [event(), event()];
        assert_eq!(copy.insert(&first).await.unwrap(), Copied::All);
        let overlapping = [event(), first[1].clone()];
        assert_eq!(copy.insert(&overlapping).await.unwrap(), Copied::SeenBefore);
        // The refused batch left nothing behind, and the connection still works.
        assert_eq!(copy.insert(&[event()]).await.unwrap(), Copied::All);
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM request_events")
            .fetch_one(&copy.pool)
            .await
            .unwrap();
        assert_eq!(stored, 3);
    }
}
