//! The only crate that speaks SQL.
//!
//! One [`Store`] over Postgres (production, many replicas) or SQLite (embedded, one node), chosen
//! by the URL. Both run the same SQL through sqlx's `Any` driver, with `$N` placeholders (which
//! SQLite accepts as numbered parameters) and only portable constructs; the schema is kept twice
//! under `migrations/` because the two spell column types differently. Every statement binds its
//! values: dynamic filters are built with [`sql::Sql`], which only ever appends placeholders.
//!
//! The store is a repository: it writes what it is given. Ids, timestamps, validation and
//! encryption happen in the callers.

mod accounts;
// Its column-list macros serve `direct` and `copy` too.
#[macro_use]
mod audit;
#[cfg(feature = "bench")]
mod bench;
mod copy;
mod devboxes;
mod direct;
mod feed;
mod gateways;
mod idempotency;
mod limits;
mod model;
mod secrets;
mod sql;

use std::borrow::Cow;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, ConnectOptions};
use tokio::sync::broadcast;

pub use audit::EVENTS_PER_STATEMENT;
pub use feed::StoreFeed;
pub use idempotency::IdempotencyBegin;
pub use model::*;
pub use secrets::SecretRef;

/// Which database is behind the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// What went wrong, sorted by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed; the request may succeed later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was hit (for example a second live secret with the same name).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The object does not exist for this account.
    #[error("not found")]
    NotFound,
    /// The request cannot be carried out in the object's current state.
    #[error("{0}")]
    Refused(String),
    /// A row holds something the code cannot read: a bug or tampering.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The settings name no usable database.
    #[error("{0}")]
    Config(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict("already exists".into())
            }
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(err.to_string()),
            _ => StoreError::Unavailable(err.to_string()),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Devbox and token records per page of a paged full load, unless
/// [`Store::with_load_page_size`] says otherwise.
pub const DEFAULT_LOAD_PAGE: usize = 1024;

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: String,
    /// In-process change feed. On SQLite it is the feed; on Postgres, notifications go through
    /// `pg_notify` and this stays unused.
    local_feed: broadcast::Sender<airlock_core::state::Change>,
    /// Records per page of a paged full load (see [`Store::with_load_page_size`]).
    load_page: usize,
    /// An audit writer's own SQLite connection for `request_events` (`direct`), in the handle
    /// that [`AuditSink::dedicated`](airlock_core::state::AuditSink::dedicated) gives it.
    direct: Option<std::sync::Arc<direct::DirectSqlite>>,
    /// The same on PostgreSQL: its own connection, which writes `request_events` with `COPY`.
    copy: Option<std::sync::Arc<copy::CopyPostgres>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

fn migrations(backend: Backend, last: i64) -> Migrator {
    // (version, description, Postgres SQL, SQLite SQL), in order.
    const ALL: [(i64, &str, &str, &str); 7] = [
        (
            1,
            "initial",
            include_str!("../../../migrations/postgres/0001_initial.sql"),
            include_str!("../../../migrations/sqlite/0001_initial.sql"),
        ),
        (
            2,
            "request id",
            include_str!("../../../migrations/postgres/0002_request_id.sql"),
            include_str!("../../../migrations/sqlite/0002_request_id.sql"),
        ),
        (
            3,
            "gateway binding",
            include_str!("../../../migrations/postgres/0003_gateway_binding.sql"),
            include_str!("../../../migrations/sqlite/0003_gateway_binding.sql"),
        ),
        (
            4,
            "llm",
            include_str!("../../../migrations/postgres/0004_llm.sql"),
            include_str!("../../../migrations/sqlite/0004_llm.sql"),
        ),
        (
            5,
            "token scope",
            include_str!("../../../migrations/postgres/0005_token_scope.sql"),
            include_str!("../../../migrations/sqlite/0005_token_scope.sql"),
        ),
        (
            6,
            "router",
            include_str!("../../../migrations/postgres/0006_router.sql"),
            include_str!("../../../migrations/sqlite/0006_router.sql"),
        ),
        (
            7,
            "limits",
            include_str!("../../../migrations/postgres/0007_limits.sql"),
            include_str!("../../../migrations/sqlite/0007_limits.sql"),
        ),
    ];
    let migrations = ALL
        .iter()
        .filter(|&&(version, ..)| version <= last)
        .map(|&(version, description, postgres, sqlite)| {
            let sql = match backend {
                Backend::Postgres => postgres,
                Backend::Sqlite => sqlite,
            };
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}

/// Creates the SQLite database file readable by its owner alone (0600) if it does not exist yet:
/// SQLite would create it with the umask's mode (usually 0644), and its WAL and shared-memory
/// files take the main file's mode. An existing file is not touched.
fn create_private_file(file: &Path) -> Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Config(format!(
            "cannot create the database file {}: {e}",
            file.display()
        ))),
    }
}

fn connect_options(url: &str) -> Result<AnyConnectOptions> {
    Ok(AnyConnectOptions::from_str(url)
        .map_err(|e| StoreError::Config(format!("AIRLOCK_DATABASE_URL does not parse: {e}")))?
        .disable_statement_logging())
}

/// The pool settings of every pool on the database: `max` connections, and SQLite's pragmas on
/// each new connection.
fn pool_options(backend: Backend, max: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    for pragma in [
                        "PRAGMA journal_mode=WAL",
                        "PRAGMA foreign_keys=ON",
                        "PRAGMA busy_timeout=5000",
                        "PRAGMA synchronous=NORMAL",
                    ] {
                        sqlx::Executor::execute(&mut *conn, pragma).await?;
                    }
                }
                Ok(())
            })
        })
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://PATH`. For SQLite the file (and its directory) is
    /// created if missing. Fails fast when the database cannot be reached.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            let file = path.split('?').next().unwrap_or_default();
            if file.is_empty() {
                return Err(StoreError::Config(
                    "AIRLOCK_DATABASE_URL: sqlite:// needs a file path".into(),
                ));
            }
            if let Some(dir) = Path::new(file)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                // Only its owner may list or enter a directory this creates (an existing one
                // is left as the operator made it).
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| {
                        StoreError::Config(format!(
                            "cannot create the database directory {}: {e}",
                            dir.display()
                        ))
                    })?;
            }
            create_private_file(Path::new(file))?;
            let url = if path.contains('?') {
                url.to_owned()
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            return Err(StoreError::Config(
                "AIRLOCK_DATABASE_URL must start with postgres:// or sqlite://".into(),
            ));
        };
        let pool = pool_options(
            backend,
            match backend {
                Backend::Postgres => 16,
                Backend::Sqlite => 8,
            },
        )
        .connect_with(connect_options(&url)?)
        .await?;
        let (local_feed, _) = broadcast::channel(4096);
        Ok(Store {
            pool,
            backend,
            url,
            local_feed,
            load_page: DEFAULT_LOAD_PAGE,
            direct: None,
            copy: None,
        })
    }

    /// A handle on the same database with a pool of its own: one connection, opened when first
    /// used, from the thread that first uses it. The data plane's audit writers each take one,
    /// so that their writes never wait for (or hold up) the shared pool, and so that SQLite's
    /// connection thread, spawned by the thread that opens the connection, inherits that
    /// thread's scheduling policy (docs/data-plane.md, "Batching").
    pub fn with_own_pool(&self) -> Result<Store> {
        let pool = pool_options(self.backend, 1).connect_lazy_with(connect_options(&self.url)?);
        Ok(Store {
            pool,
            ..self.clone()
        })
    }

    /// Sets how many devbox and token records one page of a paged full load
    /// ([`StateSource::load_all_paged`](airlock_core::state::StateSource::load_all_paged))
    /// holds at most, [`DEFAULT_LOAD_PAGE`] unless set; at least 1. Smaller pages keep less in
    /// memory during a reload and hand it over in more pieces.
    pub fn with_load_page_size(mut self, records: usize) -> Store {
        self.load_page = records.max(1);
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the schema. Safe to run on every start and from several replicas at once
    /// (sqlx takes an advisory lock on Postgres).
    pub async fn migrate(&self) -> Result<()> {
        self.migrate_up_to(i64::MAX).await
    }

    /// Applies the schema up to and including migration `last`, as an older release would have
    /// left it: for tests that upgrade a database with rows written before a migration.
    #[doc(hidden)]
    pub async fn migrate_up_to(&self, last: i64) -> Result<()> {
        migrations(self.backend, last)
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Notification channel on Postgres.
pub(crate) const CHANNEL: &str = "airlock_changes";

impl Store {
    /// Begins a transaction that writes. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred transaction that has read and then writes while another
    /// connection holds the write lock gets "database is locked" at once, without the busy
    /// timeout, because waiting could not make its snapshot current again. An immediate one
    /// waits for the lock under the busy timeout.
    pub(crate) async fn begin(&self) -> Result<Tx> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Begins a transaction that only reads (a snapshot on either backend): it takes no write
    /// lock and waits for no writer.
    pub(crate) async fn begin_read(&self) -> Result<Tx> {
        Ok(self.pool.begin().await?)
    }

    /// Commits a write and tells every data plane what changed: on Postgres through `pg_notify`
    /// inside the transaction (delivered only if it commits), on SQLite through the in-process
    /// feed after the commit.
    pub(crate) async fn commit(
        &self,
        mut tx: Tx,
        changes: &[airlock_core::state::Change],
    ) -> Result<()> {
        if self.backend == Backend::Postgres {
            for change in changes {
                // pg_notify returns void, which the Any driver cannot decode: wrap it in a count.
                sqlx::query("SELECT COUNT(*) FROM (SELECT pg_notify($1, $2)) AS n")
                    .bind(CHANNEL)
                    .bind(feed::encode(change))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        } else {
            tx.commit().await?;
            for change in changes {
                // No receiver is fine: no data plane runs in this process.
                let _ = self.local_feed.send(change.clone());
            }
        }
        Ok(())
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

pub(crate) async fn insert_audit(tx: &mut Tx, row: &AuditRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_events (id, time_ms, account_id, api_key_id, action, object_type, object_id, detail, client_addr)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(row.id.clone())
    .bind(row.time_ms)
    .bind(row.account_id.as_str().to_owned())
    .bind(row.api_key_id.as_ref().map(|k| k.as_str().to_owned()))
    .bind(row.action.clone())
    .bind(row.object_type.clone())
    .bind(row.object_id.clone())
    .bind(row.detail.clone())
    .bind(row.client_addr.clone())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Reads a column, mapping a decode failure to a corrupt-row error that names the column.
pub(crate) fn col<T>(row: &sqlx::any::AnyRow, name: &str) -> Result<T>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    use sqlx::Row;
    row.try_get::<T, _>(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

impl Store {
    /// Lists one page, newest first. `from` appends the `FROM … WHERE …` part; it runs twice,
    /// once for the page (`id < starting_after`, `limit + 1` rows, to learn `has_more`) and once
    /// for the count when the caller asked for it.
    pub(crate) async fn list_page<T>(
        &self,
        columns: &'static str,
        from: impl Fn(&mut sql::Sql),
        page: &Page,
        map: impl Fn(&sqlx::any::AnyRow) -> Result<T>,
    ) -> Result<Listed<T>> {
        let mut q = sql::Sql::new(columns);
        from(&mut q);
        if let Some(after) = &page.starting_after {
            q.push(" AND id < ").bind(after.clone());
        }
        q.push(" ORDER BY id DESC LIMIT ").bind(page.limit + 1);
        let (text, args) = q.build();
        let rows = sqlx::query_with(&text, args).fetch_all(self.pool()).await?;
        let mut items = rows.iter().map(map).collect::<Result<Vec<_>>>()?;
        let limit = usize::try_from(page.limit).unwrap_or(0);
        let has_more = items.len() > limit;
        items.truncate(limit);
        let total_count = if page.include_total_count {
            let mut q = sql::Sql::new("SELECT COUNT(*)");
            from(&mut q);
            let (text, args) = q.build();
            Some(
                sqlx::query_scalar_with(&text, args)
                    .fetch_one(self.pool())
                    .await?,
            )
        } else {
            None
        };
        Ok(Listed {
            items,
            has_more,
            total_count,
        })
    }
}
