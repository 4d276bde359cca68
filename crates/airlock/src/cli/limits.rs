//! `airlock limits`: the budgets and rate limits of the account, a devbox or a gateway config
//! (`GET`/`POST …/limits`, docs/limits.md), each with its use in the current window.

use anyhow::Result;
use clap::Args;
use http::Method;
use serde_json::{json, Value};

use super::output::{cell, table, utc, Output};
use super::{encode, Remote};
use crate::client::{ApiClient, Failure, Kind};

#[derive(Args)]
pub(crate) struct LimitsArgs {
    /// A devbox's limits (dbx_… or its name) instead of the account's.
    #[arg(long, conflicts_with = "gateway")]
    devbox: Option<String>,
    /// A gateway config's limits (gwc_… or its name) instead of the account's.
    #[arg(long)]
    gateway: Option<String>,
    /// First replace the limits with this JSON object, e.g. '{"requests_per_minute": 60}'
    /// ('{}' removes them).
    #[arg(long, value_name = "JSON")]
    set: Option<String>,
}

pub(super) async fn run(args: &LimitsArgs, api: &ApiClient, remote: &Remote) -> Result<()> {
    // Where the limits are written (the object itself, or the account's limits), and read.
    let (object, status) = match (&args.devbox, &args.gateway) {
        (Some(devbox), _) => {
            let id = cell(&super::devbox::resolve(api, devbox).await?["id"]);
            (
                Some(format!("/v1/devboxes/{}", encode(&id))),
                format!("/v1/devboxes/{}/limits", encode(&id)),
            )
        }
        (None, Some(gateway)) => {
            let id = cell(&super::gateway::resolve(api, gateway).await?["id"]);
            (
                Some(format!("/v1/gateway-configs/{}", encode(&id))),
                format!("/v1/gateway-configs/{}/limits", encode(&id)),
            )
        }
        (None, None) => (None, "/v1/account/limits".to_owned()),
    };
    if let Some(text) = &args.set {
        let limits: Value = serde_json::from_str(text)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| {
                Failure::error(
                    Kind::Usage,
                    "--set: expected a JSON object, e.g. '{\"requests_per_minute\": 60}'",
                )
            })?;
        match &object {
            Some(path) => {
                api.call(Method::POST, path, Some(json!({ "limits": limits })))
                    .await?
            }
            None => api.call(Method::POST, &status, Some(limits)).await?,
        };
    }
    let shown = api.call(Method::GET, &status, None).await?;
    match remote.output(Output::Table) {
        Output::Json => println!("{}", serde_json::to_string_pretty(&shown)?),
        Output::Table => {
            let rows = rows(&shown);
            if rows.is_empty() {
                eprintln!("no limits are set");
            } else {
                print!(
                    "{}",
                    table(
                        &["LIMIT", "VALUE", "USED", "REMAINING", "RESETS (UTC)"],
                        &[false, true, true, true, false],
                        &rows
                    )
                );
            }
        }
        Output::Id | Output::Env => {
            return Err(Failure::error(
                Kind::Usage,
                "airlock limits prints -o table or -o json",
            ))
        }
    }
    Ok(())
}

/// One table row per limit that is set: its name, value, use, what is left and the window's end.
fn rows(shown: &Value) -> Vec<Vec<String>> {
    let Some(limits) = shown["limits"].as_object() else {
        return Vec::new();
    };
    limits
        .iter()
        .filter(|(_, s)| !s.is_null())
        .map(|(name, s)| {
            vec![
                name.clone(),
                cell(&s["limit"]),
                cell(&s["used"]),
                cell(&s["remaining"]),
                s["resets_at_ms"]
                    .as_i64()
                    .map_or_else(|| "never".to_owned(), utc),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_limit_set() {
        let shown = json!({"limits": {
            "requests_per_minute": {"limit": 60, "used": 3, "remaining": 57, "resets_at_ms": 60_000},
            "cost_usd_total": {"limit": "25", "used": "1.5", "remaining": "23.5", "resets_at_ms": null},
            "tokens_per_day": null
        }});
        let rows = rows(&shown);
        assert_eq!(rows.len(), 2);
        assert!(rows.contains(&vec![
            "requests_per_minute".to_owned(),
            "60".into(),
            "3".into(),
            "57".into(),
            "1970-01-01 00:01:00".into()
        ]));
        assert!(rows
            .iter()
            .any(|r| r[0] == "cost_usd_total" && r[4] == "never"));
        assert!(super::rows(&json!({})).is_empty());
    }
}
