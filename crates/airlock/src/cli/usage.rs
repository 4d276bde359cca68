//! `airlock usage` (`GET /v1/usage` as a table) and `airlock providers`.

use anyhow::Result;
use clap::Args;
use http::Method;
use serde_json::Value;

use super::output::{self, cell, table, Output};
use super::{parse_duration_ms, with_query, Remote};
use crate::client::ApiClient;

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
}

pub(super) async fn providers(api: &ApiClient, remote: &Remote) -> Result<()> {
    let listed = api.call(Method::GET, "/v1/providers", None).await?;
    output::list(
        remote.output(Output::Table),
        &listed,
        "providers",
        &super::gateway::provider_cols(),
    )
}

pub(super) async fn usage(args: &UsageArgs, api: &ApiClient, remote: &Remote) -> Result<()> {
    let (path, keys) = usage_path(args, airlock_core::time::now_ms())?;
    let listed = api.call(Method::GET, &path, None).await?;
    match remote.output(Output::Table) {
        Output::Table => {
            print!("{}", usage_table(&keys, &listed));
            if listed["usage"].as_array().is_none_or(Vec::is_empty) {
                eprintln!("no metered requests match");
            }
            Ok(())
        }
        other => output::list(other, &listed, "usage", &[]),
    }
}

/// The `GET /v1/usage` path for the flags, and the group keys as the server names them in a
/// row, in the order asked for (the table's first columns).
fn usage_path(args: &UsageArgs, now_ms: i64) -> Result<(String, Vec<&'static str>)> {
    let mut keys = Vec::new();
    if let Some(group_by) = &args.group_by {
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
        (Some(since), _) => Some(now_ms.saturating_sub(parse_duration_ms("--since", since)?)),
        (None, start) => start,
    };
    let path = with_query(
        "/v1/usage",
        &[
            ("group_by", args.group_by.clone()),
            ("start_time_ms", start.map(|v| v.to_string())),
            ("end_time_ms", args.end_ms.map(|v| v.to_string())),
            ("devbox_id", args.devbox.clone()),
            ("gateway_id", args.gateway.clone()),
            ("model", args.model.clone()),
        ],
    );
    Ok((path, keys))
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
    use serde_json::json;

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
