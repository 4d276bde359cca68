//! `airlock gateway …`: gateway configs, by id or by name (a name means the newest config of that
//! name, as in the API).

use anyhow::Result;
use clap::{Args, Subcommand};
use http::Method;
use serde_json::{json, Map, Value};

use super::output::{self, cell, col, Col, Output};
use super::{encode, Remote};
use crate::client::{ApiClient, Failure, Kind};

#[derive(Subcommand)]
pub(crate) enum GatewayCommand {
    /// Create a gateway config; warns when the name is already taken (a name then means the
    /// newest config).
    #[command(
        after_help = "Examples:\n  airlock gateway create --name anthropic --provider anthropic\n  \
        airlock gateway create --name internal --endpoint https://llm.internal/v1 --auth header:x-api-key"
    )]
    Create(GatewayCreate),
    /// List gateway configs, newest first.
    #[command(after_help = "Example:\n  airlock gateway list --name anthropic -o json")]
    List {
        /// Only configs of this name.
        #[arg(long)]
        name: Option<String>,
        /// Only configs whose name or endpoint contains this text.
        #[arg(long)]
        search: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 5000)]
        limit: u32,
    },
    /// Show one gateway config (by id, or the newest of a name).
    #[command(after_help = "Example:\n  airlock gateway get anthropic")]
    Get { gateway: String },
    /// Change a gateway config: the fields given replace the stored ones.
    #[command(after_help = "Example:\n  airlock gateway update anthropic --description 'team A'")]
    Update(GatewayUpdate),
    /// Delete a gateway config (refused while a running devbox uses it).
    #[command(after_help = "Example:\n  airlock gateway delete gwc_01J…")]
    Delete { gateway: String },
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

#[derive(Args)]
pub(crate) struct GatewayUpdate {
    /// The config: its id, or a name (the newest config of that name).
    gateway: String,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    provider: Option<String>,
    #[arg(long)]
    endpoint: Option<String>,
    /// bearer, basic, or header:NAME
    #[arg(long)]
    auth: Option<String>,
    #[arg(long)]
    api: Option<String>,
    #[arg(long)]
    description: Option<String>,
}

const FIELDS: [Col; 9] = [
    col!("id", "id"),
    col!("name", "name"),
    col!("provider", "provider"),
    col!("endpoint", "endpoint"),
    col!("auth", |v| auth_cell(&v["auth_mechanism"])),
    col!("api", "api"),
    col!("headers", |v| headers_cell(&v["custom_headers"])),
    col!("description", "description"),
    col!("created", "create_time_ms", time),
];

fn list_cols() -> [Col; 6] {
    [
        col!("ID", "id"),
        col!("NAME", "name"),
        col!("PROVIDER", "provider"),
        col!("API", "api"),
        col!("ENDPOINT", "endpoint"),
        col!("CREATED", "create_time_ms", time),
    ]
}

pub(super) async fn run(cmd: GatewayCommand, api: &ApiClient, remote: &Remote) -> Result<()> {
    let out = remote.output(Output::Table);
    match cmd {
        GatewayCommand::Create(g) => {
            // Without a provider the auth mechanism is required by the API; the CLI has always
            // defaulted it to bearer.
            let auth = match (g.auth.as_deref(), &g.provider) {
                (Some(text), _) => Some(parse_auth_flag(text)?),
                (None, None) => Some(json!({"type": "bearer"})),
                (None, Some(_)) => None,
            };
            let taken = named(api, &g.name).await?;
            let mut body = Map::new();
            body.insert("name".into(), Value::from(g.name.clone()));
            insert_some(
                &mut body,
                [
                    ("provider", g.provider.map(Value::from)),
                    ("endpoint", g.endpoint.map(Value::from)),
                    ("auth_mechanism", auth),
                    ("api", g.api.map(Value::from)),
                    ("description", g.description.map(Value::from)),
                ],
            );
            let view = api
                .call(
                    Method::POST,
                    "/v1/gateway-configs",
                    Some(Value::Object(body)),
                )
                .await?;
            if let Some(older) = taken.first() {
                eprintln!(
                    "warning: a gateway config named {} exists already ({}); the name now means \
                     the new one, {}",
                    g.name,
                    cell(&older["id"]),
                    cell(&view["id"])
                );
            }
            output::object(out, &view, &FIELDS)
        }
        GatewayCommand::List {
            name,
            search,
            limit,
        } => {
            let path = super::with_query(
                "/v1/gateway-configs",
                &[
                    ("limit", Some(limit.to_string())),
                    ("name", name),
                    ("search", search),
                ],
            );
            let listed = api.call(Method::GET, &path, None).await?;
            output::list(out, &listed, "gateway_configs", &list_cols())
        }
        GatewayCommand::Get { gateway } => {
            let view = resolve(api, &gateway).await?;
            output::object(out, &view, &FIELDS)
        }
        GatewayCommand::Update(u) => {
            let id = id_of(&resolve(api, &u.gateway).await?);
            let mut body = Map::new();
            insert_some(
                &mut body,
                [
                    ("name", u.name.map(Value::from)),
                    ("provider", u.provider.map(Value::from)),
                    ("endpoint", u.endpoint.map(Value::from)),
                    (
                        "auth_mechanism",
                        u.auth.as_deref().map(parse_auth_flag).transpose()?,
                    ),
                    ("api", u.api.map(Value::from)),
                    ("description", u.description.map(Value::from)),
                ],
            );
            if body.is_empty() {
                return Err(Failure::error(
                    Kind::Usage,
                    "nothing to change: give --name, --provider, --endpoint, --auth, --api or --description",
                ));
            }
            let view = api
                .call(
                    Method::POST,
                    &format!("/v1/gateway-configs/{}", encode(&id)),
                    Some(Value::Object(body)),
                )
                .await?;
            output::object(out, &view, &FIELDS)
        }
        GatewayCommand::Delete { gateway } => {
            let id = id_of(&resolve(api, &gateway).await?);
            let view = api
                .call(
                    Method::POST,
                    &format!("/v1/gateway-configs/{}/delete", encode(&id)),
                    None,
                )
                .await?;
            output::object(out, &view, &FIELDS)
        }
    }
}

fn insert_some<const N: usize>(body: &mut Map<String, Value>, fields: [(&str, Option<Value>); N]) {
    for (key, value) in fields {
        if let Some(v) = value {
            body.insert(key.into(), v);
        }
    }
}

fn id_of(view: &Value) -> String {
    cell(&view["id"])
}

/// The configs named `name`, newest first.
async fn named(api: &ApiClient, name: &str) -> Result<Vec<Value>> {
    let path = super::with_query(
        "/v1/gateway-configs",
        &[("limit", Some("5000".into())), ("name", Some(name.into()))],
    );
    let listed = api.call(Method::GET, &path, None).await?;
    Ok(listed["gateway_configs"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// A config by id (`gwc_…`) or by name: the newest of that name, with a note on standard error
/// when the name is shared.
pub(super) async fn resolve(api: &ApiClient, gateway: &str) -> Result<Value> {
    if gateway.starts_with("gwc_") {
        return api
            .call(
                Method::GET,
                &format!("/v1/gateway-configs/{}", encode(gateway)),
                None,
            )
            .await;
    }
    let mut found = named(api, gateway).await?;
    if found.is_empty() {
        return Err(Failure::error(
            Kind::NotFound,
            format!("no gateway config is named {gateway}"),
        ));
    }
    if found.len() > 1 {
        eprintln!(
            "note: {} gateway configs are named {gateway}; using the newest, {}",
            found.len(),
            cell(&found[0]["id"])
        );
    }
    Ok(found.swap_remove(0))
}

/// `--auth`: bearer, basic or header:NAME.
fn parse_auth_flag(text: &str) -> Result<Value> {
    match text.split_once(':') {
        Some(("header", key)) if !key.is_empty() => Ok(json!({"type": "header", "key": key})),
        None if text == "bearer" || text == "basic" => Ok(json!({"type": text})),
        _ => Err(Failure::error(
            Kind::Usage,
            "--auth must be bearer, basic or header:NAME",
        )),
    }
}

fn auth_cell(auth: &Value) -> String {
    match auth["key"].as_str() {
        Some(key) => format!("header:{key}"),
        None => cell(&auth["type"]),
    }
}

fn headers_cell(headers: &Value) -> String {
    let names: Vec<String> = headers
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|h| cell(&h["name"]))
        .collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

/// The providers table (`airlock providers`).
pub(super) fn provider_cols() -> [Col; 5] {
    [
        col!("ID", "id"),
        col!("NAME", "name"),
        col!("API", "api"),
        col!("AUTH", |p| auth_cell(&p["auth_mechanism"])),
        col!("ENDPOINT", |p| {
            let mut endpoint = cell(&p["endpoint"]);
            if p["endpoint_required"] == true {
                endpoint.push_str(" (give --endpoint)");
            }
            endpoint
        }),
    ]
}
