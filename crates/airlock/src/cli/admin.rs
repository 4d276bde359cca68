//! `airlock api-key …`, `airlock account …` and `airlock audit …`: the account's keys, accounts
//! (operator keys only) and the audit trail.

use anyhow::Result;
use clap::{Args, Subcommand};
use http::Method;
use serde_json::{json, Value};

use super::output::{self, cell, col, Col, Output};
use super::{encode, parse_duration_ms, with_query, Remote};
use crate::client::ApiClient;

#[derive(Subcommand)]
pub(crate) enum ApiKeyCommand {
    /// Create an API key (shown once). `launcher` keys may register devboxes and mint tokens;
    /// `admin` keys may do everything in the account.
    #[command(
        after_help = "Example:\n  airlock api-key create --name ci-launcher --scope launcher -o json"
    )]
    Create {
        #[arg(long)]
        name: String,
        /// admin or launcher
        #[arg(long, default_value = "admin")]
        scope: String,
        /// Another account's id (operator keys only).
        #[arg(long)]
        account: Option<String>,
    },
    /// List this account's API keys (never the keys themselves).
    #[command(after_help = "Example:\n  airlock api-key list")]
    List,
    /// Revoke an API key: it stops working at once.
    #[command(after_help = "Example:\n  airlock api-key revoke key_01J…")]
    Revoke { id: String },
}

#[derive(Subcommand)]
pub(crate) enum AccountCommand {
    /// List accounts (operator keys only).
    #[command(after_help = "Example:\n  airlock account list")]
    List,
    /// Create an account and its first admin key (shown once; operator keys only).
    #[command(after_help = "Example:\n  airlock account create --name team-b -o json")]
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Requests the data plane proxied (and refused), newest first.
    #[command(after_help = "Example:\n  airlock audit requests --devbox dbx_01J… --since 1h")]
    Requests(Filter),
    /// Control-plane actions (creates, rotations, shutdowns, revocations), newest first.
    #[command(after_help = "Example:\n  airlock audit events --action devbox.shutdown --since 7d")]
    Events(Filter),
}

#[derive(Args)]
pub(crate) struct Filter {
    /// Only events at or after this long ago: 90s, 30m, 24h, 7d.
    #[arg(long)]
    since: Option<String>,
    /// Only events before this time (Unix milliseconds).
    #[arg(long)]
    until_ms: Option<i64>,
    /// Only events of this devbox (dbx_…).
    #[arg(long)]
    devbox: Option<String>,
    /// Only events of this gateway config (gwc_…).
    #[arg(long)]
    gateway: Option<String>,
    /// Only events of this secret (sec_…).
    #[arg(long)]
    secret: Option<String>,
    /// Only this action (events), e.g. secret.update.
    #[arg(long)]
    action: Option<String>,
    /// Only events about this object id (events).
    #[arg(long)]
    object: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

const KEY_FIELDS: [Col; 6] = [
    col!("id", "id"),
    col!("name", "name"),
    col!("scope", "scope"),
    col!("account", "account_id"),
    col!("created", "create_time_ms", time),
    col!("key", "key"),
];

pub(super) async fn api_key(cmd: ApiKeyCommand, api: &ApiClient, remote: &Remote) -> Result<()> {
    let out = remote.output(Output::Table);
    match cmd {
        ApiKeyCommand::Create {
            name,
            scope,
            account,
        } => {
            let mut body = json!({"name": name, "scope": scope});
            if let Some(a) = account {
                body["account_id"] = Value::from(a);
            }
            let view = api.call(Method::POST, "/v1/api-keys", Some(body)).await?;
            output::object(out, &view, &KEY_FIELDS)
        }
        ApiKeyCommand::List => {
            let listed = api
                .call(Method::GET, "/v1/api-keys?limit=5000", None)
                .await?;
            output::list(
                out,
                &listed,
                "api_keys",
                &[
                    col!("ID", "id"),
                    col!("NAME", "name"),
                    col!("SCOPE", "scope"),
                    col!("CREATED", "create_time_ms", time),
                ],
            )
        }
        ApiKeyCommand::Revoke { id } => {
            let view = api
                .call(
                    Method::POST,
                    &format!("/v1/api-keys/{}/revoke", encode(&id)),
                    None,
                )
                .await?;
            output::object(out, &view, &KEY_FIELDS[..5])
        }
    }
}

pub(super) async fn account(cmd: AccountCommand, api: &ApiClient, remote: &Remote) -> Result<()> {
    let out = remote.output(Output::Table);
    match cmd {
        AccountCommand::List => {
            let listed = api
                .call(Method::GET, "/v1/accounts?limit=5000", None)
                .await?;
            output::list(
                out,
                &listed,
                "accounts",
                &[
                    col!("ID", "id"),
                    col!("NAME", "name"),
                    col!("OPERATOR", "operator"),
                    col!("CREATED", "create_time_ms", time),
                ],
            )
        }
        AccountCommand::Create { name } => {
            let view = api
                .call(Method::POST, "/v1/accounts", Some(json!({"name": name})))
                .await?;
            output::object(
                out,
                &view,
                &[
                    col!("id", "id"),
                    col!("name", "name"),
                    col!("created", "create_time_ms", time),
                    col!("api key id", |v| cell(&v["api_key"]["id"])),
                    col!("api key", |v| cell(&v["api_key"]["key"])),
                ],
            )
        }
    }
}

pub(super) async fn audit(cmd: AuditCommand, api: &ApiClient, remote: &Remote) -> Result<()> {
    let out = remote.output(Output::Table);
    let (path, filter, key) = match &cmd {
        AuditCommand::Requests(f) => ("/v1/audit/requests", f, "requests"),
        AuditCommand::Events(f) => ("/v1/audit/events", f, "events"),
    };
    let since = filter
        .since
        .as_deref()
        .map(|s| parse_duration_ms("--since", s))
        .transpose()?
        .map(|d| airlock_core::time::now_ms().saturating_sub(d).to_string());
    let path = with_query(
        path,
        &[
            ("limit", Some(filter.limit.to_string())),
            ("since_ms", since),
            ("until_ms", filter.until_ms.map(|v| v.to_string())),
            ("devbox_id", filter.devbox.clone()),
            ("gateway_config_id", filter.gateway.clone()),
            ("secret_id", filter.secret.clone()),
            ("action", filter.action.clone()),
            ("object_id", filter.object.clone()),
        ],
    );
    let listed = api.call(Method::GET, &path, None).await?;
    match cmd {
        AuditCommand::Requests(_) => output::list(
            out,
            &listed,
            key,
            &[
                col!("TIME", "time_ms", time),
                col!("DEVBOX", "devbox_id"),
                col!("GATEWAY", "gateway_config_id"),
                col!("METHOD", "method"),
                col!("PATH", "path"),
                col!("STATUS", "status", number),
                col!("UPSTREAM", "upstream_status"),
                col!("ERROR", "error_code"),
                col!("MODEL", "model"),
                col!("COST USD", "cost_usd"),
            ],
        ),
        AuditCommand::Events(_) => output::list(
            out,
            &listed,
            key,
            &[
                col!("TIME", "time_ms", time),
                col!("ACTION", "action"),
                col!("OBJECT", "object_id"),
                col!("API KEY", "api_key_id"),
                col!("FROM", "client_addr"),
            ],
        ),
    }
}
