//! `airlock devbox …`: devboxes by id or by name, and their gateway tokens.

use anyhow::Result;
use clap::{Args, Subcommand};
use http::Method;
use serde_json::{json, Map, Value};

use super::output::{self, cell, col, Col, Output};
use super::{encode, Remote};
use crate::client::{ApiClient, Failure, Kind};

#[derive(Subcommand)]
pub(crate) enum DevboxCommand {
    /// Register a devbox and print the `export` lines for its sandbox (`-o json`: the devbox
    /// with its id, tokens and environment).
    #[command(
        after_help = "Examples:\n  eval \"$(airlock devbox register --name box-1 --source 10.0.3.17 \
        --gateway ANTHROPIC=anthropic:ANTHROPIC_KEY)\"\n  \
        airlock devbox register --source 10.0.3.17 --gateway OPENAI=openai:OPENAI_KEY -o json"
    )]
    Register(Register),
    /// List devboxes, newest first.
    #[command(after_help = "Example:\n  airlock devbox list --status running")]
    List {
        /// running or shutdown
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 5000)]
        limit: u32,
    },
    /// Show one devbox (by id, or by name).
    #[command(after_help = "Example:\n  airlock devbox get box-1 -o json")]
    Get { devbox: String },
    /// Replace a devbox's source addresses.
    #[command(
        after_help = "Example:\n  airlock devbox update box-1 --source 10.0.3.18 --source fd00:1::/64"
    )]
    Update {
        devbox: String,
        /// An address or CIDR the sandbox's traffic comes from (repeatable; replaces the list).
        #[arg(long = "source", required = true)]
        sources: Vec<String>,
    },
    /// Shut a devbox down: its tokens stop working at once, on every replica.
    #[command(after_help = "Example:\n  airlock devbox shutdown box-1")]
    Shutdown { devbox: String },
    /// Mint one more gateway token for a devbox (shown once).
    #[command(
        after_help = "Example:\n  eval \"$(airlock devbox mint-token box-1 --gateway openai --secret OPENAI_KEY \
        --prefix OPENAI --expires-in 3600 -o env)\""
    )]
    MintToken(MintToken),
    /// List a devbox's gateway tokens: status, gateway, created, last used, use count.
    #[command(after_help = "Example:\n  airlock devbox tokens box-1")]
    Tokens { devbox: String },
    /// Revoke one gateway token of a devbox: it stops working at once on every replica; the
    /// devbox and its other tokens keep working.
    #[command(after_help = "Example:\n  airlock devbox revoke-token box-1 gwt_01J…")]
    RevokeToken { devbox: String, token_id: String },
}

#[derive(Args)]
pub(crate) struct Register {
    #[arg(long)]
    name: Option<String>,
    /// An address or CIDR the sandbox's traffic comes from (repeatable).
    #[arg(long = "source", required = true)]
    sources: Vec<String>,
    /// PREFIX=GATEWAY:SECRET (gateway and secret by id or name; repeatable).
    #[arg(long = "gateway")]
    gateways: Vec<String>,
    /// KEY=VALUE metadata (repeatable).
    #[arg(long = "metadata")]
    metadata: Vec<String>,
}

#[derive(Args)]
pub(crate) struct MintToken {
    devbox: String,
    /// The gateway config, by id or name.
    #[arg(long)]
    gateway: String,
    /// The secret, by id or name.
    #[arg(long)]
    secret: String,
    /// The environment-variable prefix for `-o env` (PREFIX and PREFIX_URL).
    #[arg(long)]
    prefix: Option<String>,
    /// The token expires this many seconds after it is minted.
    #[arg(long)]
    expires_in: Option<i64>,
    /// Only these methods (repeatable).
    #[arg(long = "allow-method")]
    allowed_methods: Vec<String>,
    /// Only paths under these prefixes (repeatable).
    #[arg(long = "allow-path")]
    allowed_path_prefixes: Vec<String>,
}

const FIELDS: [Col; 8] = [
    col!("id", "id"),
    col!("name", "name"),
    col!("status", "status"),
    col!("sources", "source_addresses"),
    col!("gateways", |v| specs_cell(&v["gateway_specs"])),
    col!("created", "create_time_ms", time),
    col!("shut down", "shutdown_time_ms", time),
    col!("metadata", |v| v["metadata"].to_string()),
];

const TOKEN_FIELDS: [Col; 5] = [
    col!("devbox", "devbox_id"),
    col!("gateway", "gateway_config_id"),
    col!("endpoint", "endpoint"),
    col!("url", "url"),
    col!("token", "token"),
];

pub(super) async fn run(cmd: DevboxCommand, api: &ApiClient, remote: &Remote) -> Result<()> {
    match cmd {
        DevboxCommand::Register(r) => register(r, api, remote.output(Output::Env)).await,
        DevboxCommand::List { status, limit } => {
            let path = super::with_query(
                "/v1/devboxes",
                &[("limit", Some(limit.to_string())), ("status", status)],
            );
            let listed = api.call(Method::GET, &path, None).await?;
            output::list(
                remote.output(Output::Table),
                &listed,
                "devboxes",
                &[
                    col!("ID", "id"),
                    col!("NAME", "name"),
                    col!("STATUS", "status"),
                    col!("SOURCES", "source_addresses"),
                    col!("GATEWAYS", |v| specs_cell(&v["gateway_specs"])),
                    col!("CREATED", "create_time_ms", time),
                ],
            )
        }
        DevboxCommand::Get { devbox } => {
            let view = resolve(api, &devbox).await?;
            output::object(remote.output(Output::Table), &view, &FIELDS)
        }
        DevboxCommand::Update { devbox, sources } => {
            let id = cell(&resolve(api, &devbox).await?["id"]);
            let view = api
                .call(
                    Method::POST,
                    &format!("/v1/devboxes/{}", encode(&id)),
                    Some(json!({"source_addresses": sources})),
                )
                .await?;
            output::object(remote.output(Output::Table), &view, &FIELDS)
        }
        DevboxCommand::Shutdown { devbox } => {
            let id = cell(&resolve(api, &devbox).await?["id"]);
            let view = api
                .call(
                    Method::POST,
                    &format!("/v1/devboxes/{}/shutdown", encode(&id)),
                    None,
                )
                .await?;
            output::object(remote.output(Output::Table), &view, &FIELDS)
        }
        DevboxCommand::MintToken(m) => mint(m, api, remote.output(Output::Table)).await,
        DevboxCommand::Tokens { devbox } => {
            let id = cell(&resolve(api, &devbox).await?["id"]);
            let listed = api
                .call(
                    Method::GET,
                    &format!("/v1/devboxes/{}/gateway_tokens", encode(&id)),
                    None,
                )
                .await?;
            output::list(
                remote.output(Output::Table),
                &listed,
                "gateway_tokens",
                &[
                    col!("ID", "id"),
                    col!("STATUS", "status"),
                    col!("PREFIX", "prefix"),
                    col!("GATEWAY", "gateway_config_id"),
                    col!("CREATED", "create_time_ms", time),
                    col!("LAST USED", "last_used_time_ms", time),
                    col!("USES", "use_count", number),
                ],
            )
        }
        DevboxCommand::RevokeToken { devbox, token_id } => {
            let id = cell(&resolve(api, &devbox).await?["id"]);
            let view = api
                .call(
                    Method::POST,
                    &format!(
                        "/v1/devboxes/{}/gateway_tokens/{}/revoke",
                        encode(&id),
                        encode(&token_id)
                    ),
                    None,
                )
                .await?;
            output::object(
                remote.output(Output::Table),
                &view,
                &[
                    col!("id", "id"),
                    col!("status", "status"),
                    col!("devbox", "devbox_id"),
                    col!("gateway", "gateway_config_id"),
                    col!("revoked", "revoke_time_ms", time),
                ],
            )
        }
    }
}

async fn register(r: Register, api: &ApiClient, out: Output) -> Result<()> {
    let mut map = Map::new();
    for g in &r.gateways {
        let bad = || {
            Failure::error(
                Kind::Usage,
                format!("--gateway {g}: expected PREFIX=GATEWAY:SECRET"),
            )
        };
        let (prefix, rest) = g.split_once('=').ok_or_else(bad)?;
        let (gateway, secret) = rest.split_once(':').ok_or_else(bad)?;
        map.insert(
            prefix.to_owned(),
            json!({"gateway": gateway, "secret": secret}),
        );
    }
    let mut metadata = Map::new();
    for m in &r.metadata {
        let (k, v) = m.split_once('=').ok_or_else(|| {
            Failure::error(Kind::Usage, format!("--metadata {m}: expected KEY=VALUE"))
        })?;
        metadata.insert(k.to_owned(), Value::from(v));
    }
    let mut body = json!({"name": r.name, "source_addresses": r.sources, "gateways": map});
    if !metadata.is_empty() {
        body["metadata"] = Value::Object(metadata);
    }
    let view = api.call(Method::POST, "/v1/devboxes", Some(body)).await?;
    if out == Output::Env {
        eprintln!("registered devbox {}", cell(&view["id"]));
    }
    output::object(out, &view, &FIELDS)
}

async fn mint(m: MintToken, api: &ApiClient, out: Output) -> Result<()> {
    if out == Output::Env && m.prefix.is_none() {
        return Err(Failure::error(
            Kind::Usage,
            "-o env needs --prefix (the variables are PREFIX and PREFIX_URL)",
        ));
    }
    let id = cell(&resolve(api, &m.devbox).await?["id"]);
    let mut body = json!({"gateway": m.gateway, "secret": m.secret});
    if let Some(s) = m.expires_in {
        body["expires_in_s"] = Value::from(s);
    }
    if !m.allowed_methods.is_empty() {
        body["allowed_methods"] = Value::from(m.allowed_methods);
    }
    if !m.allowed_path_prefixes.is_empty() {
        body["allowed_path_prefixes"] = Value::from(m.allowed_path_prefixes);
    }
    let mut view = api
        .call(
            Method::POST,
            &format!("/v1/devboxes/{}/create_gateway_token", encode(&id)),
            Some(body),
        )
        .await?;
    if let Some(prefix) = m.prefix {
        let mut env = Map::new();
        env.insert(format!("{prefix}_URL"), view["url"].clone());
        env.insert(prefix, view["token"].clone());
        view["environment"] = Value::Object(env);
    }
    if out == Output::Id {
        // A minted token's answer has no id of its own; the token is what a script wants.
        println!("{}", cell(&view["token"]));
        return Ok(());
    }
    output::object(out, &view, &TOKEN_FIELDS)
}

/// A devbox by id (`dbx_…`) or by name. Names may repeat: a name means the one running devbox of
/// that name (or the one devbox of that name at all); more than one is a conflict that asks for
/// an id.
pub(super) async fn resolve(api: &ApiClient, devbox: &str) -> Result<Value> {
    if devbox.starts_with("dbx_") {
        return api
            .call(
                Method::GET,
                &format!("/v1/devboxes/{}", encode(devbox)),
                None,
            )
            .await;
    }
    let listed = api
        .call(Method::GET, "/v1/devboxes?limit=5000", None)
        .await?;
    let named: Vec<&Value> = listed["devboxes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|d| d["name"].as_str() == Some(devbox))
        .collect();
    let running: Vec<&Value> = named
        .iter()
        .copied()
        .filter(|d| d["status"] == "running")
        .collect();
    let candidates = if running.is_empty() { named } else { running };
    match candidates.as_slice() {
        [] => Err(Failure::error(
            Kind::NotFound,
            format!("no devbox is named {devbox}"),
        )),
        [one] => Ok((*one).clone()),
        many => {
            let ids: Vec<String> = many.iter().map(|d| cell(&d["id"])).collect();
            Err(Failure::error(
                Kind::Conflict,
                format!(
                    "{} devboxes are named {devbox} ({}); give an id",
                    many.len(),
                    ids.join(", ")
                ),
            ))
        }
    }
}

fn specs_cell(specs: &Value) -> String {
    let names: Vec<&str> = specs
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}
