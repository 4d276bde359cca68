//! `airlock secret …`: secrets by name. A value is read from standard input (a hidden prompt on
//! a terminal) and never printed; the API never returns one.

use std::io::{IsTerminal, Read};

use anyhow::Result;
use clap::Subcommand;
use http::Method;
use serde_json::json;

use super::output::{self, col, Col, Output};
use super::{encode, Remote};
use crate::client::{ApiClient, Failure, Kind};

#[derive(Subcommand)]
pub(crate) enum SecretCommand {
    /// Create a secret; fails (exit 4) if the name is taken. The value is read from standard
    /// input (a hidden prompt on a terminal), never from the command line unless --value is given.
    #[command(after_help = "Example:\n  printf %s \"$KEY\" | airlock secret create ANTHROPIC_KEY")]
    Create {
        name: String,
        /// The value on the command line (visible in shell history and `ps`; avoid).
        #[arg(long)]
        value: Option<String>,
    },
    /// Create a secret, or rotate it if it exists.
    #[command(
        after_help = "Example:\n  airlock secret set ANTHROPIC_KEY   # prompts for the value"
    )]
    Set {
        name: String,
        /// The value on the command line (visible in shell history and `ps`; avoid).
        #[arg(long)]
        value: Option<String>,
    },
    /// Replace an existing secret's value: every token using it switches at once.
    #[command(
        after_help = "Example:\n  printf %s \"$NEW_KEY\" | airlock secret rotate ANTHROPIC_KEY"
    )]
    Rotate {
        name: String,
        /// The value on the command line (visible in shell history and `ps`; avoid).
        #[arg(long)]
        value: Option<String>,
    },
    /// List secrets (names and ids only).
    #[command(after_help = "Example:\n  airlock secret list -o json")]
    List {
        /// At most this many (newest first).
        #[arg(long, default_value_t = 5000)]
        limit: u32,
    },
    /// Show one secret (never its value).
    #[command(after_help = "Example:\n  airlock secret get ANTHROPIC_KEY")]
    Get { name: String },
    /// Delete a secret.
    #[command(after_help = "Example:\n  airlock secret delete ANTHROPIC_KEY")]
    Delete { name: String },
}

const FIELDS: [Col; 4] = [
    col!("id", "id"),
    col!("name", "name"),
    col!("created", "create_time_ms", time),
    col!("updated", "update_time_ms", time),
];

pub(super) async fn run(cmd: SecretCommand, api: &ApiClient, remote: &Remote) -> Result<()> {
    let out = remote.output(Output::Table);
    match cmd {
        SecretCommand::Create { name, value } => {
            let value = zeroize::Zeroizing::new(value_or_stdin(value)?);
            let view = api
                .call(
                    Method::POST,
                    "/v1/secrets",
                    Some(json!({"name": name, "value": value.as_str()})),
                )
                .await?;
            output::object(out, &view, &FIELDS)
        }
        SecretCommand::Set { name, value } => {
            let value = zeroize::Zeroizing::new(value_or_stdin(value)?);
            let path = format!("/v1/secrets/{}", encode(&name));
            let view = match api.call(Method::GET, &path, None).await {
                Ok(_) => {
                    api.call(Method::POST, &path, Some(json!({"value": value.as_str()})))
                        .await?
                }
                Err(e) if is_not_found(&e) => {
                    api.call(
                        Method::POST,
                        "/v1/secrets",
                        Some(json!({"name": name, "value": value.as_str()})),
                    )
                    .await?
                }
                Err(e) => return Err(e),
            };
            output::object(out, &view, &FIELDS)
        }
        SecretCommand::Rotate { name, value } => {
            let value = zeroize::Zeroizing::new(value_or_stdin(value)?);
            let view = api
                .call(
                    Method::POST,
                    &format!("/v1/secrets/{}", encode(&name)),
                    Some(json!({"value": value.as_str()})),
                )
                .await?;
            output::object(out, &view, &FIELDS)
        }
        SecretCommand::List { limit } => {
            let listed = api
                .call(Method::GET, &format!("/v1/secrets?limit={limit}"), None)
                .await?;
            output::list(
                out,
                &listed,
                "secrets",
                &[
                    col!("ID", "id"),
                    col!("NAME", "name"),
                    col!("CREATED", "create_time_ms", time),
                    col!("UPDATED", "update_time_ms", time),
                ],
            )
        }
        SecretCommand::Get { name } => {
            let view = api
                .call(Method::GET, &format!("/v1/secrets/{}", encode(&name)), None)
                .await?;
            output::object(out, &view, &FIELDS)
        }
        SecretCommand::Delete { name } => {
            let view = api
                .call(
                    Method::POST,
                    &format!("/v1/secrets/{}/delete", encode(&name)),
                    None,
                )
                .await?;
            output::object(out, &view, &FIELDS)
        }
    }
}

pub(super) fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Failure>()
        .is_some_and(|f| f.kind == Kind::NotFound)
}

fn value_or_stdin(value: Option<String>) -> Result<String> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        Some(_) => Err(Failure::error(Kind::Usage, "--value is empty")),
        None => read_value(),
    }
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
        return Err(Failure::error(Kind::Usage, "the value is empty"));
    }
    Ok(value)
}
