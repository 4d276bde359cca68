//! The request audit's own SQLite connection, for the data plane's audit writers.
//!
//! Through sqlx, the audit on SQLite took 18% of the data plane's CPU at saturation: sqlx's `Any`
//! driver copies every bound string twice (into its own values, then into SQLite's), a multi-row
//! statement is built and parsed per batch, and every statement is handed to the connection's
//! worker thread and back (two futex wake-ups). Here it takes 13%, nearly all of it SQLite's own
//! B-tree and WAL work (docs/performance.md, "The audit on SQLite: its own connection"). Here the writer's own thread runs
//! SQLite itself: one prepared statement, kept, bound by reference to the events' fields, one
//! transaction per batch. The writer threads are dedicated OS threads (one of them at idle
//! priority), so a synchronous write there blocks nothing else, and SQLite's work runs at the
//! priority of the thread that asked for it.
//!
//! Only `request_events` is written this way; everything else, and every read, goes through the
//! store's sqlx pool and its one SQL. The statement below writes the same columns and the same
//! values as `Store::insert_request_events`, and a test reads rows back through the store to
//! hold the two to the same result.

use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use airlock_core::state::RequestAuditEvent;
use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use crate::audit::db_int;
use crate::{Result, StoreError};

/// One row, every column (a request that was not metered binds NULL to the nine usage
/// columns, as the multi-row statement leaves them out); written twice is stored once.
const INSERT: &str = concat!(
    "INSERT INTO request_events (",
    request_event_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
     ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28) ON CONFLICT (id) DO NOTHING"
);

/// The store's wait for SQLite's write lock, as its pool's `busy_timeout` pragma.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A lazily opened connection to the store's SQLite file, used by one writer thread at a time.
pub(crate) struct DirectSqlite {
    file: String,
    conn: Mutex<Option<Connection>>,
}

impl DirectSqlite {
    /// For the file of a `sqlite://PATH[?…]` URL (the store created it when it connected).
    pub(crate) fn new(url: &str) -> Option<DirectSqlite> {
        let file = url.strip_prefix("sqlite://")?.split('?').next()?;
        (!file.is_empty()).then(|| DirectSqlite {
            file: file.to_owned(),
            conn: Mutex::new(None),
        })
    }

    fn open(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.file,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(unavailable)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
        // The store's pool set WAL on the file; these hold per connection.
        conn.execute_batch("PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;")
            .map_err(unavailable)?;
        Ok(conn)
    }

    /// Writes `events` in one transaction, on the calling thread: the writers' batches (100
    /// events from the idle-priority writer, so that it holds SQLite's write lock for no more
    /// than that; up to 500 from the catch-up writer). A failed connection is dropped and opened
    /// again by the next call.
    pub(crate) fn insert(&self, events: &[RequestAuditEvent]) -> Result<()> {
        let mut slot = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => self.open()?,
        };
        let written = write(&mut conn, events);
        if written.is_ok() {
            *slot = Some(conn);
        }
        written.map_err(unavailable)
    }
}

fn write(conn: &mut Connection, events: &[RequestAuditEvent]) -> rusqlite::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut addr = String::with_capacity(46);
    // IMMEDIATE: take the write lock (waiting up to the busy timeout) before the first row,
    // rather than fail on the upgrade from a read lock.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        for e in events {
            addr.clear();
            let _ = write!(addr, "{}", e.client_addr);
            let m = e.llm.as_ref();
            let u = m.map(|m| m.usage);
            insert.execute(params![
                e.id.as_str(),
                e.time_ms,
                e.account_id.as_ref().map(|v| v.as_str()),
                e.devbox_id.as_ref().map(|v| v.as_str()),
                e.gateway_config_id.as_ref().map(|v| v.as_str()),
                e.token_id.as_ref().map(|v| v.as_str()),
                e.secret_id.as_ref().map(|v| v.as_str()),
                e.secret_version,
                e.method.as_str(),
                e.path.as_str(),
                i64::from(e.status),
                e.upstream_status.map(i64::from),
                e.latency_us,
                e.ttfb_us,
                e.bytes_in,
                e.bytes_out,
                addr.as_str(),
                e.error_code.as_deref(),
                e.request_id.as_deref(),
                m.and_then(|m| m.provider.as_deref()),
                m.and_then(|m| m.model.as_deref()),
                u.map(|u| db_int(u.input_tokens)),
                u.map(|u| db_int(u.output_tokens)),
                u.map(|u| db_int(u.cache_read_tokens)),
                u.map(|u| db_int(u.cache_write_tokens)),
                u.map(|u| db_int(u.reasoning_tokens)),
                u.map(|u| i64::from(u.exact)),
                m.and_then(|m| m.cost_nanos).map(db_int),
            ])?;
        }
    }
    tx.commit()
}

/// SQLite's message names the failure (busy, locked, I/O, a constraint), never a bound value.
fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}
