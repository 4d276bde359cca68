//! The command line: `serve`, `migrate`, `keys`, and admin commands over the REST API.

use std::io::{IsTerminal, Read};

use airlock_crypto::{Keyring, MasterKey, SecretContext};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};

use crate::client::ApiClient;
use crate::settings::Settings;

/// Airlock: a credential-isolating gateway for AI agents in sandboxes.
#[derive(Parser)]
#[command(name = "airlock", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the control plane and the data plane (AIRLOCK_ROLE=control|proxy runs one of them).
    Serve,
    /// Apply the database schema and exit.
    Migrate,
    /// Master key tools.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check the settings in the environment and the files they name, without starting.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Exit 0 if URL answers 200, else 1: a health check for images without curl.
    Health {
        /// Default: the operations listener's /readyz (AIRLOCK_METRICS_ADDR).
        url: Option<String>,
    },
    /// Secrets (talks to AIRLOCK_URL with AIRLOCK_TOKEN).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Gateway configs (talks to AIRLOCK_URL with AIRLOCK_TOKEN).
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// Devboxes (talks to AIRLOCK_URL with AIRLOCK_TOKEN).
    #[command(subcommand)]
    Devbox(DevboxCommand),
}

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Print a new random master key (base64 of 32 bytes).
    Generate,
    /// Print the ids of the loaded master keys; the first encrypts.
    Ids,
    /// Re-wrap every secret's data key, and re-make every gateway config's binding, under the
    /// active (first) master key, so that older keys can be retired.
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
    Check,
}

#[derive(Subcommand)]
pub(crate) enum SecretCommand {
    /// Create a secret, or rotate it if it exists. The value is read from standard input (a
    /// hidden prompt on a terminal), never from the command line unless --value is given.
    Set {
        name: String,
        /// The value on the command line (visible in shell history and `ps`; avoid).
        #[arg(long)]
        value: Option<String>,
    },
    /// List secrets (names and ids only).
    List,
    /// Delete a secret.
    Delete { name: String },
}

#[derive(Subcommand)]
pub(crate) enum GatewayCommand {
    /// Create a gateway config.
    Create(GatewayCreate),
    /// List gateway configs.
    List,
}

#[derive(Args)]
pub(crate) struct GatewayCreate {
    #[arg(long)]
    name: String,
    /// Upstream base URL, e.g. https://api.anthropic.com
    #[arg(long)]
    endpoint: String,
    /// bearer, basic, or header:NAME (e.g. header:x-api-key)
    #[arg(long, default_value = "bearer")]
    auth: String,
    #[arg(long)]
    description: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum DevboxCommand {
    /// Register a devbox and print the `export` lines for its sandbox.
    Register {
        #[arg(long)]
        name: Option<String>,
        /// An address or CIDR the sandbox's traffic comes from (repeatable).
        #[arg(long = "source", required = true)]
        sources: Vec<String>,
        /// PREFIX=GATEWAY:SECRET (gateway and secret by id or name; repeatable).
        #[arg(long = "gateway")]
        gateways: Vec<String>,
    },
    /// Shut a devbox down: its tokens stop working at once.
    Shutdown { id: String },
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
pub(crate) fn config_check() -> Result<()> {
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
pub(crate) async fn health(url: Option<String>) -> Result<()> {
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
    let status = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        crate::client::get_status(&url),
    )
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
    use airlock_core::binding::{gateway_binding_message, GATEWAY_BINDING};
    let mut out = Rebound {
        moved: 0,
        current: 0,
        unbound: Vec::new(),
        failed: Vec::new(),
    };
    for row in store.all_gateway_configs().await? {
        let message = gateway_binding_message(
            &row.account_id,
            &row.id,
            &row.endpoint,
            &row.auth,
            &row.custom_headers,
        );
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

fn read_value() -> Result<String> {
    let value = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("value (hidden): ")?
    } else {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text.strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text)
            .to_owned()
    };
    if value.is_empty() {
        bail!("the value is empty");
    }
    Ok(value)
}

pub(crate) async fn remote(cmd: Command) -> Result<()> {
    let api = ApiClient::from_env()?;
    let out = match cmd {
        Command::Secret(SecretCommand::Set { name, value }) => {
            let value = zeroize::Zeroizing::new(match value {
                Some(v) => v,
                None => read_value()?,
            });
            let exists = api
                .call(http::Method::GET, &format!("/v1/secrets/{name}"), None)
                .await
                .is_ok();
            if exists {
                api.call(
                    http::Method::POST,
                    &format!("/v1/secrets/{name}"),
                    Some(json!({"value": value.as_str()})),
                )
                .await?
            } else {
                api.call(
                    http::Method::POST,
                    "/v1/secrets",
                    Some(json!({"name": name, "value": value.as_str()})),
                )
                .await?
            }
        }
        Command::Secret(SecretCommand::List) => {
            api.call(http::Method::GET, "/v1/secrets?limit=5000", None)
                .await?
        }
        Command::Secret(SecretCommand::Delete { name }) => {
            api.call(
                http::Method::POST,
                &format!("/v1/secrets/{name}/delete"),
                None,
            )
            .await?
        }
        Command::Gateway(GatewayCommand::Create(g)) => {
            let auth = match g.auth.split_once(':') {
                Some(("header", key)) => json!({"type": "header", "key": key}),
                None if g.auth == "bearer" || g.auth == "basic" => json!({"type": g.auth}),
                _ => bail!("--auth must be bearer, basic or header:NAME"),
            };
            let mut body = json!({"name": g.name, "endpoint": g.endpoint, "auth_mechanism": auth});
            if let (Some(d), Value::Object(m)) = (g.description, &mut body) {
                m.insert("description".into(), Value::from(d));
            }
            api.call(http::Method::POST, "/v1/gateway-configs", Some(body))
                .await?
        }
        Command::Gateway(GatewayCommand::List) => {
            api.call(http::Method::GET, "/v1/gateway-configs?limit=5000", None)
                .await?
        }
        Command::Devbox(DevboxCommand::Register {
            name,
            sources,
            gateways,
        }) => {
            let mut map = Map::new();
            for g in &gateways {
                let (prefix, rest) = g
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--gateway {g}: expected PREFIX=GATEWAY:SECRET"))?;
                let (gateway, secret) = rest
                    .split_once(':')
                    .ok_or_else(|| anyhow!("--gateway {g}: expected PREFIX=GATEWAY:SECRET"))?;
                map.insert(
                    prefix.to_owned(),
                    json!({"gateway": gateway, "secret": secret}),
                );
            }
            let body = json!({"name": name, "source_addresses": sources, "gateways": map});
            let view = api
                .call(http::Method::POST, "/v1/devboxes", Some(body))
                .await?;
            eprintln!("registered devbox {}", view["id"].as_str().unwrap_or("?"));
            if let Some(env) = view.get("environment").and_then(Value::as_object) {
                for (k, v) in env {
                    println!("export {k}={}", v.as_str().unwrap_or_default());
                }
            }
            return Ok(());
        }
        Command::Devbox(DevboxCommand::Shutdown { id }) => {
            api.call(
                http::Method::POST,
                &format!("/v1/devboxes/{id}/shutdown"),
                None,
            )
            .await?
        }
        Command::Serve
        | Command::Migrate
        | Command::Keys(_)
        | Command::Config(_)
        | Command::Health { .. } => bail!("not a remote command"),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
