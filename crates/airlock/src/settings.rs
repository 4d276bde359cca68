//! Settings from environment variables. A value that does not parse stops the start with one
//! line naming the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use airlock_core::UpstreamPolicy;
use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;

pub(crate) const DEFAULT_DATABASE_URL: &str = "sqlite://./airlock-data/airlock.db";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Control plane and data plane in one process.
    All,
    Control,
    Proxy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

pub(crate) struct Settings {
    pub role: Role,
    pub database_url: String,
    pub master_key: Option<String>,
    pub master_key_file: Option<PathBuf>,
    pub api_addr: SocketAddr,
    pub proxy_addr: SocketAddr,
    pub public_url: String,
    pub admin_token: Option<String>,
    pub upstream_ca_file: Option<PathBuf>,
    pub policy: UpstreamPolicy,
    pub trusted_proxies: Vec<IpNet>,
    pub log: String,
    pub log_format: LogFormat,
    pub auto_migrate: bool,
    pub shutdown_grace: Duration,
    pub audit_spill_file: PathBuf,
    /// The operations listener (`/metrics`, `/healthz`, `/readyz`); `None`: `off`.
    pub metrics_addr: Option<SocketAddr>,
    pub max_connections: usize,
    pub upstream_max_concurrency: usize,
    pub devbox_rate_limit: Option<airlock_proxy::RateLimit>,
    /// Read so that a start can say it is not supported (no trace exporter in this build).
    pub otlp_endpoint: Option<String>,
}

/// Reads one variable; empty counts as unset.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_addr(name: &str, default: &str) -> Result<SocketAddr> {
    let text = var(name).unwrap_or_else(|| default.to_owned());
    text.parse()
        .map_err(|_| anyhow!("{name}: {text:?} is not an address like 127.0.0.1:7070"))
}

fn parse_bool(name: &str, default: bool) -> Result<bool> {
    match var(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => bail!("{name}: {other:?} is not true or false"),
    }
}

fn parse_count(name: &str, default: usize, min: usize) -> Result<usize> {
    match var(name) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= min)
            .ok_or_else(|| anyhow!("{name}: {text:?} is not a whole number ≥ {min}")),
    }
}

fn parse_secs(name: &str, default: u64) -> Result<Duration> {
    match var(name) {
        None => Ok(Duration::from_secs(default)),
        Some(text) => text
            .trim_end_matches('s')
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| anyhow!("{name}: {text:?} is not a number of seconds")),
    }
}

impl Settings {
    pub(crate) fn from_env() -> Result<Settings> {
        let role = match var("AIRLOCK_ROLE").as_deref() {
            None | Some("all") => Role::All,
            Some("control") => Role::Control,
            Some("proxy") => Role::Proxy,
            Some(other) => bail!("AIRLOCK_ROLE: {other:?} is not one of all, control, proxy"),
        };
        let database_url =
            var("AIRLOCK_DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
            || database_url.starts_with("sqlite://"))
        {
            bail!("AIRLOCK_DATABASE_URL: must start with postgres:// or sqlite://");
        }
        let api_addr = parse_addr("AIRLOCK_API_ADDR", "127.0.0.1:7070")?;
        let proxy_addr = parse_addr("AIRLOCK_PROXY_ADDR", "127.0.0.1:7080")?;
        let public_url =
            var("AIRLOCK_PUBLIC_URL").unwrap_or_else(|| format!("http://{proxy_addr}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://"))
            || public_url.contains(char::is_whitespace)
        {
            bail!("AIRLOCK_PUBLIC_URL: {public_url:?} is not an http:// or https:// URL");
        }
        let public_url = public_url.trim_end_matches('/').to_owned();
        let policy =
            UpstreamPolicy::parse(&var("AIRLOCK_ALLOW_PRIVATE_UPSTREAMS").unwrap_or_default())
                .map_err(|e| anyhow!("AIRLOCK_ALLOW_PRIVATE_UPSTREAMS: {}", e.message))?;
        let trusted_proxies =
            UpstreamPolicy::parse(&var("AIRLOCK_TRUSTED_PROXIES").unwrap_or_default())
                .map_err(|e| anyhow!("AIRLOCK_TRUSTED_PROXIES: {}", e.message))?
                .allowed_private()
                .to_vec();
        let log_format = match var("AIRLOCK_LOG_FORMAT").as_deref() {
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            None => {
                if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    LogFormat::Text
                } else {
                    LogFormat::Json
                }
            }
            Some(other) => bail!("AIRLOCK_LOG_FORMAT: {other:?} is not text or json"),
        };
        let log = var("AIRLOCK_LOG").unwrap_or_else(|| "info".to_owned());
        tracing_subscriber::EnvFilter::try_new(&log).map_err(|e| anyhow!("AIRLOCK_LOG: {e}"))?;
        let audit_spill_file = match var("AIRLOCK_AUDIT_SPILL_FILE") {
            Some(p) => PathBuf::from(p),
            None => sqlite_dir(&database_url)
                .unwrap_or_else(|| PathBuf::from("."))
                .join("audit-spill.jsonl"),
        };
        let metrics_addr = match var("AIRLOCK_METRICS_ADDR").as_deref().map(str::trim) {
            Some("off") => None,
            _ => Some(parse_addr("AIRLOCK_METRICS_ADDR", "127.0.0.1:7090")?),
        };
        let devbox_rate_limit = var("AIRLOCK_DEVBOX_RATE_LIMIT")
            .map(|text| {
                airlock_proxy::RateLimit::parse(&text)
                    .map_err(|e| anyhow!("AIRLOCK_DEVBOX_RATE_LIMIT: {e}"))
            })
            .transpose()?;
        Ok(Settings {
            role,
            master_key: var("AIRLOCK_MASTER_KEY"),
            master_key_file: var("AIRLOCK_MASTER_KEY_FILE").map(PathBuf::from),
            database_url,
            api_addr,
            proxy_addr,
            public_url,
            admin_token: var("AIRLOCK_ADMIN_TOKEN"),
            upstream_ca_file: var("AIRLOCK_UPSTREAM_CA_FILE").map(PathBuf::from),
            policy,
            trusted_proxies,
            log,
            log_format,
            auto_migrate: parse_bool("AIRLOCK_AUTO_MIGRATE", true)?,
            shutdown_grace: parse_secs("AIRLOCK_SHUTDOWN_GRACE", 30)?,
            audit_spill_file,
            metrics_addr,
            max_connections: parse_count("AIRLOCK_MAX_CONNECTIONS", 10_000, 1)?,
            upstream_max_concurrency: parse_count("AIRLOCK_UPSTREAM_MAX_CONCURRENCY", 0, 0)?,
            devbox_rate_limit,
            otlp_endpoint: var("AIRLOCK_OTLP_ENDPOINT"),
        })
    }

    pub(crate) fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite://")
    }
}

/// The directory of a `sqlite://PATH` database.
pub(crate) fn sqlite_dir(url: &str) -> Option<PathBuf> {
    let path = url.strip_prefix("sqlite://")?.split('?').next()?;
    let parent = PathBuf::from(path).parent()?.to_path_buf();
    Some(if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent
    })
}

/// Reads the upstream CA file, if configured.
pub(crate) fn read_ca(settings: &Settings) -> Result<Option<Vec<u8>>> {
    settings
        .upstream_ca_file
        .as_ref()
        .map(|p| {
            std::fs::read(p)
                .with_context(|| format!("AIRLOCK_UPSTREAM_CA_FILE: cannot read {}", p.display()))
        })
        .transpose()
}
