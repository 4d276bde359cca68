//! The commands that run on this machine rather than through the API: `keys`, `config check`,
//! `health`.

use airlock_crypto::{Keyring, MasterKey, SecretContext};
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;

use crate::settings::Settings;

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Print a new random master key (base64 of 32 bytes).
    #[command(
        after_help = "Example:\n  airlock keys generate > master.key && chmod 600 master.key"
    )]
    Generate,
    /// Print the ids of the loaded master keys; the first encrypts.
    #[command(after_help = "Example:\n  AIRLOCK_MASTER_KEY_FILE=master.key airlock keys ids")]
    Ids,
    /// Re-wrap every secret's data key, and re-make every gateway config's binding, under the
    /// active (first) master key, so that older keys can be retired.
    #[command(after_help = "Example:\n  AIRLOCK_MASTER_KEY=\"$NEW,$OLD\" airlock keys rewrap")]
    Rewrap {
        /// Also bind gateway configs that have no binding yet (written before this version), as
        /// they are in the database now. Check their endpoints first: this vouches for them.
        #[arg(long)]
        bind_unbound: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Parse every setting, read the master key and CA files, and print what would run.
    #[command(after_help = "Example:\n  AIRLOCK_ROLE=proxy airlock config check --strict")]
    Check {
        /// Exit 1 when a setting has no effect or looks like a mistake (the warnings).
        #[arg(long)]
        strict: bool,
    },
}

pub(crate) async fn keys(cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Generate => {
            let key = MasterKey::generate().map_err(|e| anyhow!("{e}"))?;
            println!("{}", key.to_base64().as_str());
            Ok(())
        }
        KeysCommand::Ids => {
            let settings = Settings::from_env()?;
            let keyring = crate::keys::load(&settings, false)?;
            for (i, id) in keyring.ids().iter().enumerate() {
                println!("{id}{}", if i == 0 { "  (active)" } else { "" });
            }
            Ok(())
        }
        KeysCommand::Rewrap { bind_unbound } => {
            let settings = Settings::from_env()?;
            let keyring = crate::keys::load(&settings, false)?;
            let store = crate::connect(&settings).await?;
            let (moved, current) = rewrap(&store, &keyring).await?;
            println!(
                "re-wrapped {moved} secret(s) under key {}; {current} already used it",
                keyring.active_id()
            );
            let rebound = rebind(&store, &keyring, bind_unbound).await?;
            println!(
                "re-bound {} gateway config(s) under key {}; {} already used it",
                rebound.moved,
                keyring.active_id(),
                rebound.current
            );
            if !rebound.unbound.is_empty() {
                println!(
                    "{} gateway config(s) have no binding and are refused by the data plane: {}; \
                     save them again through the API, or check their endpoints and run \
                     `airlock keys rewrap --bind-unbound`",
                    rebound.unbound.len(),
                    rebound.unbound.join(", ")
                );
            }
            if !rebound.failed.is_empty() {
                bail!(
                    "the binding of {} gateway config(s) does not check (changed outside the API, \
                     or made with a master key that is not loaded); they were left as they are \
                     and the data plane refuses them: {}",
                    rebound.failed.len(),
                    rebound.failed.join(", ")
                );
            }
            Ok(())
        }
    }
}

/// `airlock config check [--strict]`: everything `serve` checks before it opens the database,
/// then the effective settings that matter and warnings about settings that have no effect or
/// look like mistakes. `--strict` turns warnings into exit 1.
pub(crate) fn config_check(strict: bool) -> Result<()> {
    let settings = Settings::from_env()?;
    // The embedded default creates its key file on the first `serve`; that is not an error.
    let keys = if settings.master_key.is_none()
        && settings.master_key_file.is_none()
        && settings.is_sqlite()
        && crate::keys::embedded_key_path(&settings).is_some_and(|p| !p.exists())
    {
        "none yet: `serve` creates the embedded key file on its first start".to_owned()
    } else {
        let keyring = crate::keys::load(&settings, false)?;
        format!("{} (active {})", keyring.ids().len(), keyring.active_id())
    };
    crate::settings::read_ca(&settings)?;
    let proxy_tls = crate::load_tls(&settings.proxy_tls)?.is_some();
    let api_tls = crate::load_tls(&settings.api_tls)?.is_some();
    let report = report(&settings, &keys, api_tls, proxy_tls);
    println!("configuration OK");
    for (name, value) in &report.lines {
        println!("  {name:<22}{value}");
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if strict && !report.warnings.is_empty() {
        return Err(crate::client::Failure::error(
            crate::client::Kind::Error,
            format!(
                "--strict: {} warning(s) about the settings",
                report.warnings.len()
            ),
        ));
    }
    Ok(())
}

/// What `config check` prints: (setting, effective value) lines and warnings.
struct Report {
    lines: Vec<(&'static str, String)>,
    warnings: Vec<String>,
}

/// Whether a variable is set (and not empty), as the settings read it.
fn is_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

fn report(settings: &Settings, keys: &str, api_tls: bool, proxy_tls: bool) -> Report {
    use crate::settings::Role;
    let role = settings.role;
    let serves_api = role != Role::Proxy;
    let serves_proxy = role != Role::Control;
    let tls = |on: bool| if on { " (TLS)" } else { " (plain HTTP)" };
    let cidrs = |nets: &[ipnet::IpNet]| {
        if nets.is_empty() {
            "none".to_owned()
        } else {
            nets.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let off = "off (this role does not run it)".to_owned();
    let mut lines = vec![
        ("role", format!("{role:?}").to_lowercase()),
        (
            "database",
            if settings.is_sqlite() {
                "sqlite (one process)".to_owned()
            } else {
                "postgres".to_owned()
            },
        ),
        ("master keys", keys.to_owned()),
        (
            "control plane",
            if serves_api {
                format!("{}{}", settings.api_addr, tls(api_tls))
            } else {
                off.clone()
            },
        ),
        (
            "data plane",
            if serves_proxy {
                format!("{}{}", settings.proxy_addr, tls(proxy_tls))
            } else {
                off.clone()
            },
        ),
        ("public url", settings.public_url.clone()),
        (
            "operations listener",
            settings
                .metrics_addr
                .map_or_else(|| "off".to_owned(), |a| a.to_string()),
        ),
        ("trusted proxies", cidrs(&settings.trusted_proxies)),
        (
            "private upstreams",
            cidrs(settings.policy.allowed_private()),
        ),
        (
            "upstream CA file",
            settings.upstream_ca_file.as_ref().map_or_else(
                || "none (web roots only)".to_owned(),
                |p| p.display().to_string(),
            ),
        ),
        (
            "connections",
            format!(
                "at most {} open, {} per source",
                settings.max_connections, settings.max_connections_per_source
            ),
        ),
        (
            "upstream concurrency",
            match settings.upstream_max_concurrency {
                0 => "unlimited".to_owned(),
                n => format!("at most {n} per upstream origin"),
            },
        ),
        (
            "devbox rate limit",
            settings.devbox_rate_limit.map_or_else(
                || "none".to_owned(),
                |r| format!("{} per {} s", r.requests, r.per.as_secs()),
            ),
        ),
        (
            "shutdown grace",
            format!("{} s", settings.shutdown_grace.as_secs()),
        ),
        (
            "tracing (OTLP)",
            settings.trace_settings().map_or_else(
                || "off".to_owned(),
                |t| {
                    format!(
                        "{} (service {}, sample ratio {})",
                        t.traces_url(),
                        t.service_name,
                        t.sample_ratio
                    )
                },
            ),
        ),
        (
            "log",
            format!("{} ({:?})", settings.log, settings.log_format).to_lowercase(),
        ),
    ];
    if !settings.auto_migrate {
        lines.push((
            "auto-migrate",
            "off: run `airlock migrate` first".to_owned(),
        ));
    }

    let mut warnings = Vec::new();
    let mut unused = |vars: &[&str], why: &str| {
        for v in vars {
            if is_set(v) {
                warnings.push(format!("{v} has no effect: {why}"));
            }
        }
    };
    if !serves_api {
        unused(
            &[
                "AIRLOCK_API_TLS_CERT_FILE",
                "AIRLOCK_API_TLS_KEY_FILE",
                "AIRLOCK_ADMIN_TOKEN",
            ],
            "AIRLOCK_ROLE=proxy runs no control plane",
        );
    }
    if !serves_proxy {
        unused(
            &[
                "AIRLOCK_PROXY_TLS_CERT_FILE",
                "AIRLOCK_PROXY_TLS_KEY_FILE",
                "AIRLOCK_TRUSTED_PROXIES",
                "AIRLOCK_MAX_CONNECTIONS",
                "AIRLOCK_MAX_CONNECTIONS_PER_SOURCE",
                "AIRLOCK_UPSTREAM_MAX_CONCURRENCY",
                "AIRLOCK_DEVBOX_RATE_LIMIT",
                "AIRLOCK_AUDIT_SPILL_FILE",
                "AIRLOCK_UPSTREAM_CA_FILE",
            ],
            "AIRLOCK_ROLE=control runs no data plane",
        );
    }
    if settings.otlp_endpoint.is_none() {
        unused(
            &["AIRLOCK_TRACE_SAMPLE_RATIO"],
            "AIRLOCK_OTLP_ENDPOINT is not set, so no traces are exported",
        );
    }
    if settings.is_sqlite() && role != Role::All {
        warnings.push(format!(
            "AIRLOCK_ROLE={}: with SQLite the change feed stays inside one process, so split \
             roles do not see each other's changes; use Postgres",
            format!("{role:?}").to_lowercase()
        ));
    }
    let everything = |nets: &[ipnet::IpNet]| nets.iter().any(|n| n.prefix_len() == 0);
    if everything(&settings.trusted_proxies) {
        warnings.push(
            "AIRLOCK_TRUSTED_PROXIES trusts every address: any client can name any source \
             address in a PROXY header"
                .to_owned(),
        );
    }
    if everything(settings.policy.allowed_private()) {
        warnings.push(
            "AIRLOCK_ALLOW_PRIVATE_UPSTREAMS allows every address: a gateway config may reach \
             internal services and cloud metadata endpoints"
                .to_owned(),
        );
    }
    if serves_proxy
        && settings.proxy_addr.ip().is_loopback()
        && settings
            .public_url
            .contains(&settings.proxy_addr.ip().to_string())
        && is_set("AIRLOCK_PUBLIC_URL")
    {
        warnings.push(
            "AIRLOCK_PUBLIC_URL points at a loopback address: only sandboxes on this machine \
             can reach it"
                .to_owned(),
        );
    }
    Report { lines, warnings }
}

/// `airlock health [URL]`: a GET that must answer 200 within five seconds.
pub(crate) async fn health(url: Option<String>, ca_cert: Option<&str>) -> Result<()> {
    let url = match url {
        Some(url) => url,
        None => {
            let settings = Settings::from_env()?;
            let Some(mut addr) = settings.metrics_addr else {
                bail!("AIRLOCK_METRICS_ADDR is off: give the URL to probe");
            };
            // A wildcard listen address is reached on loopback.
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            format!("http://{addr}/readyz")
        }
    };
    let uri: http::Uri = url.parse().map_err(|_| anyhow!("{url}: not a URL"))?;
    let base = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    );
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let client = crate::client::ApiClient::new(&base, None, ca_cert)?;
    let status = tokio::time::timeout(std::time::Duration::from_secs(5), client.status(&path))
        .await
        .map_err(|_| anyhow!("{url}: no answer within 5 s"))??;
    if status != http::StatusCode::OK {
        bail!("{url}: {status}");
    }
    println!("{url}: {status}");
    Ok(())
}

/// Moves every secret's data key under the active master key. Secrets rotated meanwhile are
/// already under it and are skipped.
pub(crate) async fn rewrap(
    store: &airlock_store::Store,
    keyring: &Keyring,
) -> Result<(usize, usize)> {
    let (mut moved, mut current) = (0, 0);
    for row in store.all_sealed_secrets().await? {
        let ctx = SecretContext {
            account_id: row.account_id.as_str(),
            secret_id: row.id.as_str(),
            version: row.version,
        };
        match keyring
            .rewrap(&ctx, &row.sealed)
            .with_context(|| format!("secret {}", row.id))?
        {
            None => current += 1,
            Some(sealed) => {
                if store
                    .store_rewrapped(&row.id, row.version, &sealed, keyring.active_id().0)
                    .await?
                {
                    moved += 1;
                }
            }
        }
    }
    Ok((moved, current))
}

/// What [`rebind`] did.
pub(crate) struct Rebound {
    pub(crate) moved: usize,
    pub(crate) current: usize,
    /// Configs without a binding, left alone (ids).
    pub(crate) unbound: Vec<String>,
    /// Configs whose binding does not check, left alone (ids).
    pub(crate) failed: Vec<String>,
}

/// Re-makes every gateway config's binding under the active master key, after checking it
/// under the key that made it: a config changed in the database is not vouched for again.
pub(crate) async fn rebind(
    store: &airlock_store::Store,
    keyring: &Keyring,
    bind_unbound: bool,
) -> Result<Rebound> {
    use airlock_core::binding::GATEWAY_BINDING;
    let mut out = Rebound {
        moved: 0,
        current: 0,
        unbound: Vec::new(),
        failed: Vec::new(),
    };
    for row in store.all_gateway_configs().await? {
        let message = row.binding_message();
        let new = match &row.binding {
            None if bind_unbound => Some(keyring.bind(GATEWAY_BINDING, &message)?),
            None => {
                out.unbound.push(row.id.to_string());
                continue;
            }
            Some(binding) => match keyring.rebind(GATEWAY_BINDING, &message, binding) {
                Ok(new) => new,
                Err(_) => {
                    out.failed.push(row.id.to_string());
                    continue;
                }
            },
        };
        match new {
            None => out.current += 1,
            Some(binding) => {
                if store
                    .store_rebound(&row.id, row.binding.as_deref(), &binding)
                    .await?
                {
                    out.moved += 1;
                }
            }
        }
    }
    Ok(out)
}
