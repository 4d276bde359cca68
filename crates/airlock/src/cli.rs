//! The command line: `serve`, `migrate`, `keys`, and admin commands over the REST API.

use std::io::{IsTerminal, Read};

use airlock_crypto::{Keyring, MasterKey, SecretContext};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
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
    /// List the built-in provider presets a gateway config may name with --provider.
    Providers {
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Tokens and cost of metered requests, summed per group (talks to AIRLOCK_URL).
    Usage(UsageArgs),
    /// Budgets and rate limits of the account, a devbox or a gateway config: each limit with its
    /// use in the current window, as JSON (talks to AIRLOCK_URL).
    Limits(LimitsArgs),
}

#[derive(Args)]
pub(crate) struct LimitsArgs {
    /// A devbox's limits (dbx_…) instead of the account's.
    #[arg(long, conflicts_with = "gateway")]
    devbox: Option<String>,
    /// A gateway config's limits (gwc_…) instead of the account's.
    #[arg(long)]
    gateway: Option<String>,
    /// First replace the limits with this JSON object, e.g. '{"requests_per_minute": 60}'
    /// ('{}' removes them).
    #[arg(long)]
    set: Option<String>,
}

/// How a listing is printed.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Output {
    /// Aligned columns for people.
    Table,
    /// The API's JSON answer, for scripts.
    Json,
}

#[derive(Args)]
pub(crate) struct UsageArgs {
    /// Comma-separated keys to group by: model, provider, devbox, gateway, day (UTC).
    #[arg(long)]
    group_by: Option<String>,
    /// Only requests in the last DURATION: 90s, 30m, 24h, 7d.
    #[arg(long, conflicts_with = "start_ms")]
    since: Option<String>,
    /// Only requests at or after this time (Unix milliseconds).
    #[arg(long)]
    start_ms: Option<i64>,
    /// Only requests before this time (Unix milliseconds).
    #[arg(long)]
    end_ms: Option<i64>,
    /// Only requests of this devbox (dbx_…).
    #[arg(long)]
    devbox: Option<String>,
    /// Only requests through this gateway config (gwc_…).
    #[arg(long)]
    gateway: Option<String>,
    /// Only requests answered by this model.
    #[arg(long)]
    model: Option<String>,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
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
    /// A provider preset (see `airlock providers`): the endpoint, auth, api and required
    /// headers default from it.
    #[arg(long)]
    provider: Option<String>,
    /// Upstream base URL, e.g. https://api.anthropic.com (required without --provider)
    #[arg(long, required_unless_present = "provider")]
    endpoint: Option<String>,
    /// bearer, basic, or header:NAME (e.g. header:x-api-key); default: the provider's, else bearer
    #[arg(long)]
    auth: Option<String>,
    /// The dialect spoken at the endpoint: openai-completions, openai-responses,
    /// anthropic-messages, gemini or none; default: the provider's, else none
    #[arg(long)]
    api: Option<String>,
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
    /// List a devbox's gateway tokens: status, gateway, created, last used, use count.
    ///
    /// Example: `airlock devbox tokens dbx_01J… --output json`
    Tokens {
        id: String,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Revoke one gateway token of a devbox: it stops working at once on every replica; the
    /// devbox and its other tokens keep working.
    ///
    /// Example: `airlock devbox revoke-token dbx_01J… gwt_01J…`
    RevokeToken { id: String, token_id: String },
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
            // Without a provider the auth mechanism is required by the API; the CLI has always
            // defaulted it to bearer.
            let auth = match (g.auth.as_deref(), &g.provider) {
                (Some(text), _) => Some(parse_auth_flag(text)?),
                (None, None) => Some(json!({"type": "bearer"})),
                (None, Some(_)) => None,
            };
            let mut body = Map::new();
            body.insert("name".into(), Value::from(g.name));
            let optional = [
                ("provider", g.provider.map(Value::from)),
                ("endpoint", g.endpoint.map(Value::from)),
                ("auth_mechanism", auth),
                ("api", g.api.map(Value::from)),
                ("description", g.description.map(Value::from)),
            ];
            for (key, value) in optional {
                if let Some(v) = value {
                    body.insert(key.into(), v);
                }
            }
            api.call(
                http::Method::POST,
                "/v1/gateway-configs",
                Some(Value::Object(body)),
            )
            .await?
        }
        Command::Providers { output } => {
            let listed = api.call(http::Method::GET, "/v1/providers", None).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&listed)?),
                Output::Table => print!("{}", providers_table(&listed)),
            }
            return Ok(());
        }
        Command::Limits(args) => {
            let (object, status) = match (&args.devbox, &args.gateway) {
                (Some(id), _) => (
                    Some(format!("/v1/devboxes/{id}")),
                    format!("/v1/devboxes/{id}/limits"),
                ),
                (None, Some(id)) => (
                    Some(format!("/v1/gateway-configs/{id}")),
                    format!("/v1/gateway-configs/{id}/limits"),
                ),
                (None, None) => (None, "/v1/account/limits".to_owned()),
            };
            if let Some(text) = &args.set {
                let limits: Value = serde_json::from_str(text)
                    .map_err(|e| anyhow::anyhow!("--set: not a JSON object: {e}"))?;
                match &object {
                    Some(path) => {
                        api.call(
                            http::Method::POST,
                            path,
                            Some(serde_json::json!({"limits": limits})),
                        )
                        .await?
                    }
                    None => api.call(http::Method::POST, &status, Some(limits)).await?,
                };
            }
            let shown = api.call(http::Method::GET, &status, None).await?;
            println!("{}", serde_json::to_string_pretty(&shown)?);
            return Ok(());
        }
        Command::Usage(args) => {
            let (path, keys) = usage_path(&args, airlock_core::time::now_ms())?;
            let listed = api.call(http::Method::GET, &path, None).await?;
            match args.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&listed)?),
                Output::Table => {
                    print!("{}", usage_table(&keys, &listed));
                    if listed["usage"].as_array().is_none_or(Vec::is_empty) {
                        eprintln!("no metered requests match");
                    }
                }
            }
            return Ok(());
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
        Command::Devbox(DevboxCommand::Tokens { id, output }) => {
            let listed = api
                .call(
                    http::Method::GET,
                    &format!("/v1/devboxes/{id}/gateway_tokens"),
                    None,
                )
                .await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&listed)?),
                Output::Table => print!("{}", tokens_table(&listed)),
            }
            return Ok(());
        }
        Command::Devbox(DevboxCommand::RevokeToken { id, token_id }) => {
            api.call(
                http::Method::POST,
                &format!("/v1/devboxes/{id}/gateway_tokens/{token_id}/revoke"),
                None,
            )
            .await?
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

/// `--auth`: bearer, basic or header:NAME.
fn parse_auth_flag(text: &str) -> Result<Value> {
    match text.split_once(':') {
        Some(("header", key)) => Ok(json!({"type": "header", "key": key})),
        None if text == "bearer" || text == "basic" => Ok(json!({"type": text})),
        _ => bail!("--auth must be bearer, basic or header:NAME"),
    }
}

/// `--since`: a number and a unit (s, m, h, d), in milliseconds.
fn parse_duration_ms(text: &str) -> Result<i64> {
    let bad = || anyhow!("--since {text}: expected a number and a unit, like 90s, 30m, 24h or 7d");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let unit_ms: i64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_ms).ok_or_else(bad)
}

/// Percent-encodes a query parameter's value (model ids hold `/`, `:` and worse).
fn query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `GET /v1/usage` path for the flags, and the group keys as the server names them in a
/// row, in the order asked for (the table's first columns).
fn usage_path(args: &UsageArgs, now_ms: i64) -> Result<(String, Vec<&'static str>)> {
    let mut params: Vec<(&str, String)> = Vec::new();
    let mut keys = Vec::new();
    if let Some(group_by) = &args.group_by {
        params.push(("group_by", group_by.clone()));
        // Unknown keys are left to the server, whose answer names the parameter.
        for key in group_by.split(',').map(str::trim) {
            let field = match key {
                "model" => "model",
                "provider" => "provider",
                "devbox" => "devbox_id",
                "gateway" => "gateway_id",
                "day" => "day",
                _ => continue,
            };
            if !keys.contains(&field) {
                keys.push(field);
            }
        }
    }
    let start = match (&args.since, args.start_ms) {
        (Some(since), _) => Some(now_ms.saturating_sub(parse_duration_ms(since)?)),
        (None, start) => start,
    };
    let optional = [
        ("start_time_ms", start.map(|v| v.to_string())),
        ("end_time_ms", args.end_ms.map(|v| v.to_string())),
        ("devbox_id", args.devbox.clone()),
        ("gateway_id", args.gateway.clone()),
        ("model", args.model.clone()),
    ];
    params.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name, v))),
    );
    let query: Vec<String> = params
        .iter()
        .map(|(name, value)| format!("{name}={}", query_value(value)))
        .collect();
    let path = if query.is_empty() {
        "/v1/usage".to_owned()
    } else {
        format!("/v1/usage?{}", query.join("&"))
    };
    Ok((path, keys))
}

/// Aligned columns: text left-aligned, numbers (`numeric[i]`) right-aligned.
fn table(header: &[&str], numeric: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                out.push_str("  ");
            }
            if numeric.get(i).copied().unwrap_or(false) {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A JSON value as a table cell: strings bare, numbers as written, null as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn tokens_table(listed: &Value) -> String {
    let rows: Vec<Vec<String>> = listed["gateway_tokens"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            [
                "id",
                "status",
                "prefix",
                "gateway_config_id",
                "create_time_ms",
                "last_used_time_ms",
                "use_count",
            ]
            .iter()
            .map(|k| cell(&t[*k]))
            .collect()
        })
        .collect();
    table(
        &[
            "ID",
            "STATUS",
            "PREFIX",
            "GATEWAY",
            "CREATED_MS",
            "LAST_USED_MS",
            "USES",
        ],
        &[false, false, false, false, true, true, true],
        &rows,
    )
}

fn providers_table(listed: &Value) -> String {
    let rows: Vec<Vec<String>> = listed["providers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let auth = match p["auth_mechanism"]["key"].as_str() {
                Some(key) => format!("header:{key}"),
                None => cell(&p["auth_mechanism"]["type"]),
            };
            let mut endpoint = cell(&p["endpoint"]);
            if p["endpoint_required"] == true {
                endpoint.push_str(" (give --endpoint)");
            }
            vec![
                cell(&p["id"]),
                cell(&p["name"]),
                cell(&p["api"]),
                auth,
                endpoint,
            ]
        })
        .collect();
    table(&["ID", "NAME", "API", "AUTH", "ENDPOINT"], &[], &rows)
}

/// The usage rows as a table: the group keys first, then the sums.
fn usage_table(keys: &[&str], listed: &Value) -> String {
    const SUMS: [(&str, &str); 8] = [
        ("requests", "REQUESTS"),
        ("input_tokens", "INPUT"),
        ("output_tokens", "OUTPUT"),
        ("cache_read_tokens", "CACHE READ"),
        ("cache_write_tokens", "CACHE WRITE"),
        ("reasoning_tokens", "REASONING"),
        ("cost_usd", "COST USD"),
        ("unpriced_requests", "UNPRICED"),
    ];
    let mut header: Vec<String> = keys
        .iter()
        .map(|k| k.trim_end_matches("_id").to_uppercase())
        .collect();
    header.extend(SUMS.iter().map(|(_, title)| (*title).to_owned()));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let numeric: Vec<bool> = keys
        .iter()
        .map(|_| false)
        .chain(SUMS.iter().map(|_| true))
        .collect();
    let rows: Vec<Vec<String>> = listed["usage"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            keys.iter()
                .map(|k| cell(&r[*k]))
                .chain(SUMS.iter().map(|(k, _)| cell(&r[*k])))
                .collect()
        })
        .collect();
    table(&header, &numeric, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, ms) in [
            ("90s", Some(90_000)),
            ("30m", Some(1_800_000)),
            ("24h", Some(86_400_000)),
            ("7d", Some(604_800_000)),
            ("0d", Some(0)),
            ("7", None),
            ("d", None),
            ("1w", None),
            ("-1d", None),
            ("1.5h", None),
            ("99999999999999999d", None),
        ] {
            assert_eq!(parse_duration_ms(text).ok(), ms, "{text}");
        }
    }

    #[test]
    fn usage_paths_carry_every_flag_encoded() {
        let args = UsageArgs {
            group_by: Some("model,day,bogus,model".into()),
            since: Some("1h".into()),
            start_ms: None,
            end_ms: Some(9_000_000),
            devbox: Some("dbx_1".into()),
            gateway: None,
            model: Some("meta-llama/Llama 3:70b&x".into()),
            output: Output::Table,
        };
        let (path, keys) = usage_path(&args, 10_000_000).unwrap();
        assert_eq!(
            path,
            "/v1/usage?group_by=model%2Cday%2Cbogus%2Cmodel&start_time_ms=6400000&end_time_ms=9000000\
             &devbox_id=dbx_1&model=meta-llama%2FLlama%203%3A70b%26x"
        );
        assert_eq!(keys, ["model", "day"]);
        let bare = UsageArgs {
            group_by: None,
            since: None,
            model: None,
            devbox: None,
            end_ms: None,
            ..args
        };
        assert_eq!(usage_path(&bare, 0).unwrap().0, "/v1/usage");
    }

    #[test]
    fn usage_tables_align_and_show_unknowns() {
        let listed = json!({"usage": [
            {"model": "claude-sonnet-4-5", "devbox_id": "dbx_1", "requests": 12, "input_tokens": 1500, "output_tokens": 20,
             "cache_read_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0, "cost_usd": "0.004215", "unpriced_requests": 0},
            {"model": null, "devbox_id": "dbx_2", "requests": 1, "input_tokens": 8, "output_tokens": 0,
             "cache_read_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0, "cost_usd": null, "unpriced_requests": 1}
        ]});
        assert_eq!(
            usage_table(&["model", "devbox_id"], &listed),
            "\
MODEL              DEVBOX  REQUESTS  INPUT  OUTPUT  CACHE READ  CACHE WRITE  REASONING  COST USD  UNPRICED
claude-sonnet-4-5  dbx_1         12   1500      20           0            0          0  0.004215         0
-                  dbx_2          1      8       0           0            0          0         -         1
"
        );
    }
}
