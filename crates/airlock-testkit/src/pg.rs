//! A throwaway PostgreSQL for tests, started from the local installation.
//!
//! [`shared`] gives every test in a process the same server (started on first use) and each test
//! asks it for a [`fresh_database`](PgServer::fresh_database) of its own. A test that wants to
//! take the database away (an outage) starts a private [`PgCluster`] instead and stops it.
//!
//! A cluster lives in a temporary directory: the data directory, the unix socket and the server
//! log. It listens on 127.0.0.1 on a free port with trust authentication and without flushing to
//! disk (`fsync` and `full_page_writes` off): the data is thrown away anyway. Commits still reach
//! the write-ahead log before they return, so data survives a simulated crash.
//! PostgreSQL refuses to run as root, so when we are root every PostgreSQL program runs as the
//! `postgres` system user (through `runuser`, or `setpriv`), which owns the directory.
//!
//! The shared cluster sits in a static, and statics are never dropped: a small watchdog shell
//! process waits for the test process to exit, then stops the cluster and removes its directory.
//! A private cluster is stopped and removed when it is dropped (and by its watchdog, should the
//! process die first).
//!
//! Setting `AIRLOCK_TEST_DATABASE_URL` to a `postgres://` URL of a superuser on an existing
//! server makes [`shared`] use that server instead of starting one.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use tokio::process::Command;
use tokio::sync::OnceCell;

/// The environment variable that points the tests at an existing server instead.
pub const DATABASE_URL_VAR: &str = "AIRLOCK_TEST_DATABASE_URL";

/// The superuser `initdb` creates; URLs of a [`PgCluster`] log in as this role.
pub const SUPERUSER: &str = "postgres";

/// The operating-system user PostgreSQL runs as when we are root.
const OS_USER: &str = "postgres";

/// How long a start may take before we give up and show the server log.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The server shared by every test of this process: the one at `AIRLOCK_TEST_DATABASE_URL` if
/// that is set, else a [`PgCluster`] started on first use. Concurrent first callers wait for the
/// same start. Panics, with the reason, if the cluster cannot be started.
pub async fn shared() -> &'static PgServer {
    static SHARED: OnceCell<PgServer> = OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            match std::env::var(DATABASE_URL_VAR) {
                Ok(url) if !url.trim().is_empty() => PgServer {
                    kind: ServerKind::External(url.trim().to_owned()),
                },
                _ => match PgCluster::start().await {
                    Ok(cluster) => PgServer {
                        kind: ServerKind::Cluster(cluster),
                    },
                    Err(err) => panic!("cannot start the test PostgreSQL cluster: {err:#}"),
                },
            }
        })
        .await
}

/// A PostgreSQL server tests can create databases on: a cluster this process started, or an
/// existing server named by `AIRLOCK_TEST_DATABASE_URL`.
#[derive(Debug)]
pub struct PgServer {
    kind: ServerKind,
}

#[derive(Debug)]
enum ServerKind {
    External(String),
    Cluster(PgCluster),
}

impl PgServer {
    /// A superuser URL of the server's maintenance database.
    pub fn url(&self) -> String {
        match &self.kind {
            ServerKind::External(url) => url.clone(),
            ServerKind::Cluster(cluster) => cluster.url(),
        }
    }

    /// Creates a database with a new random name and returns its URL
    /// (`postgres://postgres@127.0.0.1:PORT/NAME` for a cluster of ours).
    pub async fn fresh_database(&self) -> Result<String> {
        create_database(&self.url()).await
    }

    /// The cluster behind this server, unless it is an external one.
    pub fn cluster(&self) -> Option<&PgCluster> {
        match &self.kind {
            ServerKind::External(_) => None,
            ServerKind::Cluster(cluster) => Some(cluster),
        }
    }
}

/// A PostgreSQL cluster owned by this process: its own data directory, port and socket.
#[derive(Debug)]
pub struct PgCluster {
    /// The temporary directory that holds everything: `data/`, the socket, `postgres.log`.
    dir: PathBuf,
    port: AtomicU16,
    bindir: PathBuf,
    /// Whether PostgreSQL programs run as the `postgres` user (because we are root).
    as_os_user: bool,
    running: AtomicBool,
    watchdog: Mutex<Option<std::process::Child>>,
}

impl PgCluster {
    /// Creates and starts a new cluster: `initdb`, then the server on a free port of
    /// 127.0.0.1, and waits until it accepts connections. The error carries `initdb`'s output
    /// or the server log when something fails.
    pub async fn start() -> Result<PgCluster> {
        let bindir = server_bindir()?;
        let as_os_user = is_root();
        let dir = tempfile::Builder::new()
            .prefix("airlock-pg-")
            .tempdir()
            .context("creating the cluster's temporary directory")?
            .keep();
        // From here on, dropping `cluster` stops whatever was started and removes the directory.
        let cluster = PgCluster {
            dir,
            port: AtomicU16::new(0),
            bindir,
            as_os_user,
            running: AtomicBool::new(false),
            watchdog: Mutex::new(None),
        };
        if as_os_user {
            let status = Command::new("chown")
                .arg(format!("{OS_USER}:"))
                .arg(&cluster.dir)
                .stdin(Stdio::null())
                .status()
                .await
                .context("running chown")?;
            if !status.success() {
                bail!(
                    "cannot hand {} to the `{OS_USER}` user (needed because initdb refuses root)",
                    cluster.dir.display()
                );
            }
        }
        cluster.spawn_watchdog()?;
        cluster.initdb().await?;

        // A free port can be taken by someone else between our probe and the server's bind:
        // try a few.
        let mut last_err = None;
        for _ in 0..3 {
            cluster
                .port
                .store(crate::process::free_port(), Ordering::SeqCst);
            match cluster.launch().await {
                Ok(()) => return Ok(cluster),
                Err(err) => {
                    let address_taken = format!("{err:#}").contains("already in use");
                    last_err = Some(err);
                    if !address_taken {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("the cluster did not start")))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    /// A superuser URL of the `postgres` maintenance database.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of the database `name` on this cluster.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port())
    }

    /// Creates a database with a new random name and returns its URL.
    pub async fn fresh_database(&self) -> Result<String> {
        create_database(&self.url()).await
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The directory that holds the unix socket (`.s.PGSQL.PORT`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the server is running (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Everything the server has logged so far.
    pub fn server_log(&self) -> String {
        let bytes = std::fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`): connections drop as they would
    /// in a crash. The data directory stays; [`resume`](Self::resume) starts it again.
    pub async fn stop(&self) -> Result<()> {
        if !self.running.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let output = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .await
            .context("running pg_ctl stop")?;
        if !output.status.success() {
            bail!("pg_ctl stop failed: {}", output_text(&output));
        }
        Ok(())
    }

    /// Starts a stopped server again on the same port and data directory, and waits until it
    /// accepts connections.
    pub async fn resume(&self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.launch().await
    }

    /// Stops the server at once and starts it again on the same port and data directory.
    /// Committed data survives (the server recovers from its write-ahead log).
    pub async fn restart(&self) -> Result<()> {
        self.stop().await?;
        self.resume().await
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// A command for one of the server programs, run as the `postgres` user when we are root.
    fn pg_command(&self, program: &str) -> Command {
        let (exe, args) = run_as(self.as_os_user, &self.bindir.join(program));
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn initdb(&self) -> Result<()> {
        let output = self
            .pg_command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "--username",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .await
            .with_context(|| format!("running {}", self.bindir.join("initdb").display()))?;
        if !output.status.success() {
            bail!(
                "initdb failed ({}): {}",
                output.status,
                output_text(&output)
            );
        }
        // Settings live in the configuration file rather than on pg_ctl's command line so that
        // a restart brings the server back exactly as it was. The port alone is passed at start.
        // `synchronous_commit` stays on: with `fsync` off a commit costs one write to the page
        // cache, and it is what lets committed data survive `stop` (an immediate shutdown is a
        // crash), as it would on a real server.
        let settings = format!(
            "\n# Set by airlock-testkit: a throwaway test cluster.\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             max_connections = 200\n\
             fsync = off\n\
             full_page_writes = off\n",
            self.dir.display()
        );
        let conf = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .with_context(|| format!("reading {}", conf.display()))?;
        text.push_str(&settings);
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        Ok(())
    }

    /// Starts the server on the current port and waits until it accepts connections.
    async fn launch(&self) -> Result<()> {
        let port = self.port();
        let output = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-o", &format!("-p {port}")])
            .args(["-w", "-t", &START_TIMEOUT.as_secs().to_string(), "start"])
            .output()
            .await
            .context("running pg_ctl start")?;
        if !output.status.success() {
            bail!(
                "the server did not start on port {port}: {}\n--- server log ---\n{}",
                output_text(&output),
                self.server_log()
            );
        }
        self.running.store(true, Ordering::SeqCst);
        self.wait_ready().await
    }

    /// Polls `pg_isready` until the server accepts TCP connections on 127.0.0.1.
    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let isready = self.bindir.join("pg_isready");
        loop {
            let status = Command::new(&isready)
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    SUPERUSER,
                    "-d",
                    "postgres",
                    "-t",
                    "2",
                ])
                .arg("-p")
                .arg(self.port().to_string())
                .stdin(Stdio::null())
                .status()
                .await
                .with_context(|| format!("running {}", isready.display()))?;
            if status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the server on port {} did not accept connections within {START_TIMEOUT:?}\n--- server log ---\n{}",
                    self.port(),
                    self.server_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a shell that outlives nothing: it waits for this process to exit, then stops the
    /// cluster and removes its directory. It runs in its own process group so that a Ctrl-C
    /// aimed at the test run does not kill it before it has cleaned up.
    fn spawn_watchdog(&self) -> Result<()> {
        use std::os::unix::process::CommandExt;

        let (exe, args) = run_as(self.as_os_user, &self.bindir.join("pg_ctl"));
        let script = r#"trap '' HUP INT TERM
pid=$1; data=$2; dir=$3; shift 3
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
"$@" -D "$data" -m immediate -w stop >/dev/null 2>&1
rm -rf "$dir""#;
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("airlock-pg-watchdog")
            .arg(std::process::id().to_string())
            .arg(self.data_dir())
            .arg(&self.dir)
            .arg(exe)
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("spawning the cluster's watchdog shell")?;
        *self.watchdog.lock().expect("watchdog lock") = Some(child);
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running.load(Ordering::SeqCst) {
            let (exe, args) = run_as(self.as_os_user, &self.bindir.join("pg_ctl"));
            let _ = std::process::Command::new(exe)
                .args(args)
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"])
                .current_dir(&self.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Ok(mut guard) = self.watchdog.lock() {
            if let Some(mut child) = guard.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `sql` with `psql` against `url` and returns what it printed, unaligned and without
/// headers (`psql -XAt`), so `select 1` gives `"1\n"`. Fails with psql's stderr.
pub async fn psql(url: &str, sql: &str) -> Result<String> {
    let exe = psql_binary()?;
    let output = Command::new(&exe)
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .arg("-d")
        .arg(url)
        .arg("-c")
        .arg(sql)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {}", exe.display()))?;
    if !output.status.success() {
        bail!("psql failed ({}): {}", output.status, output_text(&output));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn create_database(admin_url: &str) -> Result<String> {
    let name = unique_database_name();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match psql(admin_url, &format!("CREATE DATABASE \"{name}\"")).await {
            Ok(_) => break,
            // Another session briefly holding the template database makes CREATE DATABASE fail;
            // that is transient.
            Err(err) if attempt < 5 && format!("{err:#}").contains("accessed by other users") => {
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(err) => return Err(err.context(format!("creating database {name}"))),
        }
    }
    with_database(admin_url, &name)
}

/// `airlock_` and 16 random hex digits: unique across processes and runs.
fn unique_database_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    format!("airlock_{:016x}", hasher.finish())
}

/// Replaces the database (path) of a `postgres://` URL, keeping user, host and query.
fn with_database(url: &str, database: &str) -> Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| format!("not a postgres:// URL: {url:?}"))?;
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or_default();
    let mut out = format!("{scheme}://{authority}/{database}");
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// The program and leading arguments that run `program` as the `postgres` user when `as_os_user`.
fn run_as(as_os_user: bool, program: &Path) -> (PathBuf, Vec<PathBuf>) {
    if !as_os_user {
        return (program.to_path_buf(), Vec::new());
    }
    if let Some(runuser) = find_on_path("runuser") {
        let args = vec![
            "-u".into(),
            OS_USER.into(),
            "--".into(),
            program.to_path_buf(),
        ];
        return (runuser, args);
    }
    let args = vec![
        format!("--reuid={OS_USER}").into(),
        format!("--regid={OS_USER}").into(),
        "--init-groups".into(),
        "--".into(),
        program.to_path_buf(),
    ];
    (PathBuf::from("setpriv"), args)
}

/// Whether we run as root, from `id -u` (no libc: the workspace forbids unsafe code).
fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        std::process::Command::new("id")
            .arg("-u")
            .stdin(Stdio::null())
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// The directory of the PostgreSQL server programs: `AIRLOCK_TEST_PG_BINDIR`, else the directory
/// of the `initdb` found on PATH (following symlinks, since Debian links only some programs),
/// else the newest `/usr/lib/postgresql/*/bin`.
fn server_bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("AIRLOCK_TEST_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut candidates = Vec::new();
    if let Some(initdb) = find_on_path("initdb") {
        let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        if let Some(dir) = real.parent() {
            candidates.push(dir.to_path_buf());
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    candidates.extend(versions.into_iter().rev().map(|(_, dir)| dir));
    candidates
        .into_iter()
        .find(|dir| ["initdb", "pg_ctl", "postgres", "pg_isready"].iter().all(|p| dir.join(p).is_file()))
        .context(
            "PostgreSQL server programs (initdb, pg_ctl, postgres, pg_isready) not found on PATH or \
             under /usr/lib/postgresql/*/bin: install PostgreSQL (Debian: apt-get install postgresql), \
             set AIRLOCK_TEST_PG_BINDIR, or set AIRLOCK_TEST_DATABASE_URL to an existing server",
        )
}

/// `psql` from the server's directory when there is one, else from PATH.
fn psql_binary() -> Result<PathBuf> {
    if let Ok(dir) = server_bindir() {
        if dir.join("psql").is_file() {
            return Ok(dir.join("psql"));
        }
    }
    find_on_path("psql").context(
        "psql not found: install the PostgreSQL client (Debian: apt-get install postgresql-client)",
    )
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn output_text(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    format!(
        "{}{}",
        stderr.trim_end(),
        if stdout.trim().is_empty() {
            String::new()
        } else {
            format!("\n{}", stdout.trim_end())
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_path() {
        let cases = [
            ("postgres://u@h:5/postgres", "postgres://u@h:5/x"),
            ("postgres://u:p@h:5", "postgres://u:p@h:5/x"),
            (
                "postgresql://u@h/db?sslmode=disable",
                "postgresql://u@h/x?sslmode=disable",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(with_database(input, "x").unwrap(), want, "{input}");
        }
    }

    #[test]
    fn database_names_are_unique_identifiers() {
        let a = unique_database_name();
        let b = unique_database_name();
        assert_ne!(a, b);
        assert!(a.len() < 63 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}
