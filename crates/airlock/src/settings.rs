//! Settings from environment variables. A value that does not parse stops the start with one
//! line naming the variable.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use airlock_core::UpstreamPolicy;
use airlock_net::CertFiles;
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
    /// TLS for the data-plane listener.
    pub proxy_tls: Option<CertFiles>,
    /// TLS for the control-plane listener.
    pub api_tls: Option<CertFiles>,
    /// How often the TLS files are checked for new contents; zero: only on SIGHUP.
    pub tls_reload_interval: Duration,
    pub log: String,
    pub log_format: LogFormat,
    pub auto_migrate: bool,
    pub shutdown_grace: Duration,
    pub audit_spill_file: PathBuf,
    /// The operations listener (`/metrics`, `/healthz`, `/readyz`); `None`: `off`.
    pub metrics_addr: Option<SocketAddr>,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    pub upstream_max_concurrency: usize,
    pub devbox_rate_limit: Option<airlock_proxy::RateLimit>,
    /// `AIRLOCK_LIMITS_ON_OUTAGE`: `closed` (default) or `open`.
    pub limits_on_outage: airlock_proxy::OnOutage,
    /// The OTLP collector's base URL (`AIRLOCK_OTLP_ENDPOINT`); `None`: no traces.
    pub otlp_endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`, else `airlock`.
    pub service_name: String,
    /// `AIRLOCK_TRACE_SAMPLE_RATIO`: the share of new traces sampled, 0 to 1.
    pub trace_sample_ratio: f64,
}

/// The names `var` has been asked for: every setting the binary reads goes through `var`, so
/// after `Settings::from_env` this is the complete list of settings, and an `AIRLOCK_*` variable
/// that is not in it is a typo (or a setting of another version) that would otherwise be
/// ignored without a word.
static READ: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());

/// Variables read by the command-line client, not by `serve`.
const CLIENT_VARS: &[&str] = &["AIRLOCK_URL", "AIRLOCK_TOKEN", "AIRLOCK_CA_CERT"];

/// Reserved for the test suite's own settings, which may sit in a developer's shell.
const TEST_PREFIX: &str = "AIRLOCK_TEST_";

/// Reads one variable; empty counts as unset.
fn var(name: &str) -> Option<String> {
    if let Ok(mut read) = READ.lock() {
        read.insert(name.to_owned());
    }
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Refuses `AIRLOCK_*` variables that no setting reads, naming the closest real one.
fn check_unknown() -> Result<()> {
    let known: Vec<String> = READ
        .lock()
        .map(|read| read.iter().cloned().collect())
        .unwrap_or_default();
    let mut unknown: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("AIRLOCK_") && !k.starts_with(TEST_PREFIX))
        .filter(|k| !known.contains(k) && !CLIENT_VARS.contains(&k.as_str()))
        .collect();
    unknown.sort();
    if let Some(name) = unknown.first() {
        let closest = known
            .iter()
            .map(|k| (edit_distance(name, k), k))
            .min()
            .filter(|(d, _)| *d <= 4)
            .map(|(_, k)| format!(" (did you mean {k}?)"))
            .unwrap_or_default();
        bail!("{name}: not a setting Airlock reads{closest}; docs/configuration.md lists them all");
    }
    Ok(())
}

/// Levenshtein distance, for the "did you mean" above.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (up + 1).min(row[j] + 1).min(diag + usize::from(ca != *cb));
            diag = up;
        }
    }
    row[b.len()]
}

fn parse_addr(name: &str, default: &str) -> Result<SocketAddr> {
    let text = var(name).unwrap_or_else(|| default.to_owned());
    text.parse()
        .map_err(|_| anyhow!("{name}: {text:?} is not an address like 127.0.0.1:7070"))
}

/// An `http://` or `https://` base URL with a host, without a query.
fn parse_otlp_endpoint() -> Result<Option<String>> {
    const NAME: &str = "AIRLOCK_OTLP_ENDPOINT";
    let Some(text) = var(NAME) else {
        return Ok(None);
    };
    // The value is never echoed: a mistyped one may hold a credential.
    let uri: http::Uri = text
        .trim()
        .parse()
        .map_err(|_| anyhow!("{NAME}: not a URL like http://127.0.0.1:4318"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        bail!("{NAME}: must be an http:// or https:// URL with a host");
    }
    if uri.query().is_some() || uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        bail!(
            "{NAME}: must be a base URL without a query or user name (/v1/traces is appended; \
             a collector's credentials go in OTEL_EXPORTER_OTLP_HEADERS)"
        );
    }
    Ok(Some(text.trim().to_owned()))
}

fn parse_ratio(name: &str, default: f64) -> Result<f64> {
    match var(name) {
        None => Ok(default),
        Some(text) => match text.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => bail!("{name}: {text:?} is not a number from 0 to 1"),
        },
    }
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

/// A certificate and key file pair: both set or neither.
fn cert_files(cert: &str, key: &str) -> Result<Option<CertFiles>> {
    match (var(cert), var(key)) {
        (None, None) => Ok(None),
        (Some(c), Some(k)) => Ok(Some(CertFiles::new(c, k).named(cert, key))),
        (Some(_), None) => bail!("{key}: must be set together with {cert}"),
        (None, Some(_)) => bail!("{cert}: must be set together with {key}"),
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
        let proxy_tls = cert_files("AIRLOCK_PROXY_TLS_CERT_FILE", "AIRLOCK_PROXY_TLS_KEY_FILE")?;
        let api_tls = cert_files("AIRLOCK_API_TLS_CERT_FILE", "AIRLOCK_API_TLS_KEY_FILE")?;
        let scheme = if proxy_tls.is_some() { "https" } else { "http" };
        let public_url =
            var("AIRLOCK_PUBLIC_URL").unwrap_or_else(|| format!("{scheme}://{proxy_addr}"));
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
        let limits_on_outage = match var("AIRLOCK_LIMITS_ON_OUTAGE") {
            None => airlock_proxy::OnOutage::Closed,
            Some(text) => airlock_proxy::OnOutage::parse(text.trim()).ok_or_else(|| {
                anyhow!("AIRLOCK_LIMITS_ON_OUTAGE: {text:?} must be closed or open")
            })?,
        };
        let settings = Settings {
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
            proxy_tls,
            api_tls,
            tls_reload_interval: parse_secs("AIRLOCK_TLS_RELOAD_INTERVAL", 10)?,
            log,
            log_format,
            auto_migrate: parse_bool("AIRLOCK_AUTO_MIGRATE", true)?,
            shutdown_grace: parse_secs("AIRLOCK_SHUTDOWN_GRACE", 30)?,
            audit_spill_file,
            metrics_addr,
            max_connections: parse_count("AIRLOCK_MAX_CONNECTIONS", 10_000, 1)?,
            max_connections_per_source: parse_count(
                "AIRLOCK_MAX_CONNECTIONS_PER_SOURCE",
                1_000,
                0,
            )?,
            upstream_max_concurrency: parse_count("AIRLOCK_UPSTREAM_MAX_CONCURRENCY", 0, 0)?,
            devbox_rate_limit,
            limits_on_outage,
            otlp_endpoint: parse_otlp_endpoint()?,
            service_name: std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| "airlock".to_owned()),
            trace_sample_ratio: parse_ratio("AIRLOCK_TRACE_SAMPLE_RATIO", 1.0)?,
        };
        check_unknown()?;
        Ok(settings)
    }

    /// What the trace exporter needs; `None` when `AIRLOCK_OTLP_ENDPOINT` is unset.
    pub(crate) fn trace_settings(&self) -> Option<crate::otlp::TraceSettings> {
        self.otlp_endpoint
            .as_ref()
            .map(|endpoint| crate::otlp::TraceSettings {
                endpoint: endpoint.clone(),
                service_name: self.service_name.clone(),
                sample_ratio: self.trace_sample_ratio,
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
