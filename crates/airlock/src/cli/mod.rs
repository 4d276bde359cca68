//! The command line: `serve`, `migrate`, `keys`, `config`, `health`, and the admin commands,
//! which are thin clients of the REST API (one file per noun). How they print is `output.rs`;
//! the exit codes are [`crate::client::Kind`]'s (docs/cli.md lists both).

mod admin;
mod devbox;
mod gateway;
mod limits;
mod local;
pub(crate) mod output;
mod secret;
mod usage;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::client::{ApiClient, Failure, Kind};
pub(crate) use local::{config_check, health, keys, ConfigCommand, KeysCommand};
pub(crate) use output::Output;

const ABOUT: &str = "Airlock: a credential-isolating gateway for AI agents in sandboxes.";

const LONG_ABOUT: &str = "\
Airlock: a credential-isolating gateway for AI agents in sandboxes.

Operators register upstream APIs (gateway configs) and their real credentials (secrets). For each
sandbox (a devbox) Airlock mints a short gws_ token bound to the sandbox's addresses; the sandbox
calls Airlock's data plane with that token as its API key, and Airlock forwards the request with
the real key, which never enters the sandbox.

`airlock serve` runs the control plane (REST API) and the data plane (proxy). The other commands
manage a running Airlock through its API: set AIRLOCK_URL and AIRLOCK_TOKEN (an API key), or give
--url and --token. Documentation: docs/cli.md.";

const AFTER_HELP: &str = "\
Examples:
  airlock serve                                  # embedded SQLite in ./airlock-data
  export AIRLOCK_TOKEN=alk_…                     # the admin key `serve` printed once
  airlock secret set ANTHROPIC_KEY               # the value is read hidden from the terminal
  airlock gateway create --name anthropic --provider anthropic
  eval \"$(airlock devbox register --name box-1 --source 10.0.3.17 --gateway ANTHROPIC=anthropic:ANTHROPIC_KEY)\"

Exit codes: 0 ok, 1 error, 2 usage or invalid input, 3 not found, 4 conflict, 5 not allowed.";

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) remote: Remote,
}

/// How the admin commands reach the control plane, and how they print.
#[derive(Args)]
pub(crate) struct Remote {
    /// The control plane's URL, http:// or https://.
    #[arg(
        long,
        global = true,
        env = "AIRLOCK_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    url: String,
    /// An Airlock API key (alk_…).
    #[arg(long, global = true, env = "AIRLOCK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Extra PEM trust roots for an https:// control plane with a private CA.
    #[arg(long, global = true, env = "AIRLOCK_CA_CERT")]
    ca_cert: Option<String>,
    /// Output format: table, json, id or env (default: table; env for register and mint-token).
    #[arg(short, long, global = true, value_enum)]
    output: Option<Output>,
}

impl Remote {
    pub(crate) fn client(&self) -> Result<ApiClient> {
        ApiClient::new(&self.url, self.token.clone(), self.ca_cert.as_deref())
    }

    pub(crate) fn ca_cert(&self) -> Option<&str> {
        self.ca_cert.as_deref()
    }

    /// The format asked for, or the command's default.
    pub(crate) fn output(&self, default: Output) -> Output {
        self.output.unwrap_or(default)
    }
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the control plane and the data plane (AIRLOCK_ROLE=control|proxy runs one of them).
    #[command(
        after_help = "Example:\n  AIRLOCK_DATABASE_URL=postgres://airlock@db/airlock airlock serve"
    )]
    Serve,
    /// Apply the database schema and exit.
    #[command(
        after_help = "Example:\n  AIRLOCK_DATABASE_URL=postgres://airlock@db/airlock airlock migrate"
    )]
    Migrate,
    /// Master key tools.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check the settings in the environment and the files they name, without starting.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Exit 0 if URL answers 200, else 1: a health check for images without curl.
    #[command(after_help = "Example:\n  airlock health http://127.0.0.1:9090/readyz")]
    Health {
        /// Default: the operations listener's /readyz (AIRLOCK_METRICS_ADDR).
        // Its own id: `url` is the global --url of the admin commands.
        #[arg(id = "probe_url", value_name = "URL")]
        url: Option<String>,
    },
    /// Secrets: credentials Airlock injects, never shown again once set.
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Gateway configs: upstream APIs, their auth mechanism and headers.
    #[command(subcommand)]
    Gateway(gateway::GatewayCommand),
    /// Devboxes (sandboxes) and their gateway tokens.
    #[command(subcommand)]
    Devbox(devbox::DevboxCommand),
    /// API keys of this account: create, list, revoke.
    #[command(subcommand, name = "api-key")]
    ApiKey(admin::ApiKeyCommand),
    /// Accounts (operator keys only): list, create.
    #[command(subcommand)]
    Account(admin::AccountCommand),
    /// The audit trail: proxied requests and control-plane actions.
    #[command(subcommand)]
    Audit(admin::AuditCommand),
    /// List the built-in provider presets a gateway config may name with --provider.
    #[command(after_help = "Example:\n  airlock providers -o json")]
    Providers,
    /// Tokens and cost of metered requests, summed per group.
    #[command(after_help = "Example:\n  airlock usage --since 7d --group-by day,model")]
    Usage(usage::UsageArgs),
    /// Budgets and rate limits of the account, a devbox or a gateway config, with their use.
    #[command(
        after_help = "Examples:\n  airlock limits                                   # the account's\n  airlock limits --devbox box-1 --set '{\"requests_per_minute\": 60, \"cost_usd_per_day\": \"5\"}'\n  airlock limits --gateway anthropic -o json"
    )]
    Limits(limits::LimitsArgs),
}

/// Runs an admin command against the control plane.
pub(crate) async fn remote(cmd: Command, remote: &Remote) -> Result<()> {
    let api = remote.client()?;
    match cmd {
        Command::Secret(cmd) => secret::run(cmd, &api, remote).await,
        Command::Gateway(cmd) => gateway::run(cmd, &api, remote).await,
        Command::Devbox(cmd) => devbox::run(cmd, &api, remote).await,
        Command::ApiKey(cmd) => admin::api_key(cmd, &api, remote).await,
        Command::Account(cmd) => admin::account(cmd, &api, remote).await,
        Command::Audit(cmd) => admin::audit(cmd, &api, remote).await,
        Command::Providers => usage::providers(&api, remote).await,
        Command::Usage(args) => usage::usage(&args, &api, remote).await,
        Command::Limits(args) => limits::run(&args, &api, remote).await,
        Command::Serve
        | Command::Migrate
        | Command::Keys(_)
        | Command::Config(_)
        | Command::Health { .. } => Err(Failure::error(Kind::Error, "not a remote command")),
    }
}

/// The exit code for an error (docs/cli.md): a [`Failure`]'s kind, else 1.
pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map_or(1, |f| f.kind.exit_code())
}

/// Percent-encodes a query parameter's value or a path segment (model ids hold `/`, `:` and
/// worse; names are the user's).
pub(crate) fn encode(text: &str) -> String {
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

/// `path?name=value&…` with the values encoded, leaving out the absent ones.
pub(crate) fn with_query(path: &str, params: &[(&str, Option<String>)]) -> String {
    let query: Vec<String> = params
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={}", encode(v))))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// `--since`: a number and a unit (s, m, h, d), in milliseconds.
pub(crate) fn parse_duration_ms(flag: &str, text: &str) -> Result<i64> {
    let bad = || {
        Failure::error(
            Kind::Usage,
            format!("{flag} {text}: expected a number and a unit, like 90s, 30m, 24h or 7d"),
        )
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
            assert_eq!(parse_duration_ms("--since", text).ok(), ms, "{text}");
        }
    }

    /// Every command people run has an example in its help; the top level says what Airlock is.
    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            let subs: Vec<&clap::Command> = cmd.get_subcommands().collect();
            if subs.is_empty() {
                let example = cmd
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                if !example.contains("airlock ") {
                    missing.push(path.clone());
                }
            }
            for sub in subs {
                walk(sub, &path, missing);
            }
        }
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cli, "", &mut missing);
        assert!(missing.is_empty(), "no example in the help of: {missing:?}");
        assert!(cli
            .get_about()
            .is_some_and(|a| a.to_string().contains("credential-isolating gateway")));
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(
            with_query(
                "/v1/usage",
                &[
                    ("model", Some("meta-llama/Llama 3:70b&x".into())),
                    ("devbox_id", None),
                    ("group_by", Some("model,day".into()))
                ]
            ),
            "/v1/usage?model=meta-llama%2FLlama%203%3A70b%26x&group_by=model%2Cday"
        );
        assert_eq!(with_query("/v1/usage", &[("a", None)]), "/v1/usage");
    }
}
