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

/// `airlock config check`: everything `serve` checks before it opens the database.
pub(crate) fn config_check(strict: bool) -> Result<()> {
    let _ = strict;
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
    let tls = |on: bool| if on { " (TLS)" } else { "" };
    println!("configuration OK");
    println!(
        "  role            {}",
        format!("{:?}", settings.role).to_lowercase()
    );
    println!(
        "  database        {}",
        if settings.is_sqlite() {
            "sqlite"
        } else {
            "postgres"
        }
    );
    println!("  master keys     {keys}");
    println!("  control plane   {}{}", settings.api_addr, tls(api_tls));
    println!(
        "  data plane      {}{}",
        settings.proxy_addr,
        tls(proxy_tls)
    );
    println!("  public url      {}", settings.public_url);
    Ok(())
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
