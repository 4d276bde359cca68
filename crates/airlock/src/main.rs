//! The `airlock` binary: reads settings, starts tracing, wires the crates and waits for shutdown.

// The CLI's job is to print results and the one-time bootstrap key.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod client;
mod keys;
mod ops;
mod otlp;
mod settings;

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::sync::watch;

use crate::settings::{LogFormat, Role, Settings};

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("airlock: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlock: {e:#}");
            std::process::ExitCode::from(cli::exit_code(&e))
        }
    }
}

async fn run(args: cli::Cli) -> Result<()> {
    match args.command.unwrap_or(cli::Command::Serve) {
        cli::Command::Serve => {
            let settings = Settings::from_env()?;
            init_tracing(&settings);
            serve(settings).await
        }
        cli::Command::Migrate => {
            let settings = Settings::from_env()?;
            init_tracing(&settings);
            let store = connect(&settings).await?;
            store.migrate().await?;
            println!("schema is up to date");
            Ok(())
        }
        cli::Command::Keys(cmd) => cli::keys(cmd).await,
        cli::Command::Config(cli::ConfigCommand::Check { strict }) => cli::config_check(strict),
        cli::Command::Health { url } => cli::health(url, args.remote.ca_cert()).await,
        other => cli::remote(other, &args.remote).await,
    }
}

fn init_tracing(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::new(&settings.log);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

pub(crate) async fn connect(settings: &Settings) -> Result<airlock_store::Store> {
    airlock_store::Store::connect(&settings.database_url)
        .await
        .map_err(|e| anyhow::anyhow!("AIRLOCK_DATABASE_URL: cannot open the database: {e}"))
}

/// Resolves when the watch flips to true.
async fn signalled(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The first SIGTERM or SIGINT starts a graceful drain (`stop` flips to true); a second one
/// exits at once. SIGHUP re-reads the TLS certificate files (`hup` changes).
fn watch_signals(stop: watch::Sender<bool>, hup: watch::Sender<()>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut stops = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: re-reading the TLS certificate files");
                    let _ = hup.send(());
                    continue;
                }
            }
            stops += 1;
            if stops == 1 {
                tracing::info!(
                    "shutting down: draining open requests (send the signal again to exit at once)"
                );
                let _ = stop.send(true);
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(1);
            }
        }
    });
    Ok(())
}

/// Loads a listener's certificate and key; an error names the setting.
pub(crate) fn load_tls(
    files: &Option<airlock_net::CertFiles>,
) -> Result<Option<airlock_net::TlsServer>> {
    files
        .clone()
        .map(airlock_net::TlsServer::from_files)
        .transpose()
        .map_err(anyhow::Error::from)
}

async fn serve(settings: Settings) -> Result<()> {
    let keyring = Arc::new(keys::load(&settings, true)?);
    let proxy_tls = load_tls(&settings.proxy_tls)?;
    let api_tls = load_tls(&settings.api_tls)?;
    let store = connect(&settings).await?;
    if settings.auto_migrate {
        store.migrate().await.context("applying the schema")?;
    }
    let (tx, rx) = watch::channel(false);
    let (hup_tx, hup_rx) = watch::channel(());
    watch_signals(tx, hup_tx)?;
    let resolvers = [&proxy_tls, &api_tls]
        .into_iter()
        .flatten()
        .map(|tls| tls.resolver().clone())
        .collect();
    let reloader = tokio::spawn(airlock_net::keep_fresh(
        resolvers,
        settings.tls_reload_interval,
        hup_rx,
    ));
    let mut tasks = tokio::task::JoinSet::new();
    let ops_listener = match settings.metrics_addr {
        Some(addr) => Some(ops::bind(addr).await?),
        None => None,
    };
    let ops_addr = ops_listener
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()?;
    let mut registry = prometheus_client::registry::Registry::default();
    ops::register_process_metrics(&mut registry);
    let mut ops_data_plane = None;
    let traces = match settings.trace_settings() {
        Some(trace) => {
            let traces = otlp::Traces::start(&trace, &mut registry)?;
            tracing::info!(
                url = %trace.traces_url(),
                service = %trace.service_name,
                sample_ratio = trace.sample_ratio,
                "exporting traces over OTLP/HTTP"
            );
            Some(traces)
        }
        None => None,
    };

    // Flips to true when the data plane has drained (at once when this process has none): the
    // control plane keeps answering until then, so `/readyz` can say 503 during the drain.
    let (drained_tx, drained_rx) = watch::channel(settings.role == Role::Control);
    let mut ready: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(|| true);
    if settings.role != Role::Control {
        let listener = tokio::net::TcpListener::bind(settings.proxy_addr)
            .await
            .with_context(|| {
                format!(
                    "AIRLOCK_PROXY_ADDR: cannot listen on {}",
                    settings.proxy_addr
                )
            })?;
        let proxy_addr = listener.local_addr()?;
        let config = airlock_proxy::ProxyConfig {
            policy: settings.policy.clone(),
            extra_roots_pem: settings::read_ca(&settings)?,
            own_addrs: [proxy_addr, settings.api_addr]
                .into_iter()
                .chain(ops_addr)
                .collect(),
            audit_spill_path: settings.audit_spill_file.clone(),
            tls: proxy_tls.clone(),
            trusted_proxies: settings.trusted_proxies.clone(),
            max_connections: settings.max_connections,
            max_connections_per_source: settings.max_connections_per_source,
            upstream_max_concurrency: settings.upstream_max_concurrency,
            devbox_rate_limit: settings.devbox_rate_limit,
            limits_on_outage: settings.limits_on_outage,
            tracer: traces
                .as_ref()
                .map(|t| airlock_proxy::Tracer::new(t.tracer("airlock.proxy"))),
            ..airlock_proxy::ProxyConfig::default()
        };
        let source = Arc::new(store.clone());
        let data_plane = Arc::new(
            airlock_proxy::start(config, keyring.clone(), source.clone(), source)
                .await
                .map_err(|e| anyhow::anyhow!("starting the data plane: {e}"))?,
        );
        let dp = data_plane.clone();
        ready = Arc::new(move || dp.ready());
        data_plane.register_metrics(&mut registry);
        ops_data_plane = Some(data_plane.clone());
        let shutdown = signalled(rx.clone());
        let grace = settings.shutdown_grace;
        tasks.spawn(async move {
            let served = data_plane.serve(listener, shutdown, grace).await;
            let _ = drained_tx.send(true);
            served
        });
        tracing::info!(
            addr = %proxy_addr,
            public_url = %settings.public_url,
            tls = proxy_tls.is_some(),
            trusted_proxies = settings.trusted_proxies.len(),
            "data plane listening"
        );
    }
    if settings.role != Role::Proxy {
        match airlock_api::bootstrap(&store, settings.admin_token.as_deref()).await? {
            airlock_api::Bootstrap::Generated(key) => {
                println!(
                    "\nFirst start: created the operator account and its admin API key.\n\
                     It is shown only this once; store it now:\n\n    export AIRLOCK_TOKEN={}\n",
                    key.expose()
                );
            }
            airlock_api::Bootstrap::FromSetting => {
                tracing::info!("AIRLOCK_ADMIN_TOKEN registered as an admin key")
            }
            airlock_api::Bootstrap::Existing => {}
        }
        let listener = tokio::net::TcpListener::bind(settings.api_addr)
            .await
            .with_context(|| format!("AIRLOCK_API_ADDR: cannot listen on {}", settings.api_addr))?;
        tracing::info!(
            addr = %listener.local_addr()?,
            backend = ?store.backend(),
            tls = api_tls.is_some(),
            "control plane listening"
        );
        let stopping = rx.clone();
        let state = airlock_api::AppState {
            store: store.clone(),
            keyring: keyring.clone(),
            public_url: settings.public_url.clone(),
            // An endpoint at one of these is refused when it is written, not only when dialled.
            policy: settings.policy.clone().with_own_listeners(
                [settings.api_addr, settings.proxy_addr]
                    .into_iter()
                    .chain(ops_addr),
            ),
            data_plane_ready: ready,
            draining: Arc::new(move || *stopping.borrow()),
            metrics: match &traces {
                Some(t) => airlock_api::ApiMetrics::default().with_tracer(t.tracer("airlock.api")),
                None => airlock_api::ApiMetrics::default(),
            },
            routers: ops_data_plane
                .clone()
                .map(|p| p as Arc<dyn airlock_core::router::RouterInspector>),
        };
        state.metrics.register(&mut registry);
        let options = airlock_api::ServeOptions {
            tls: api_tls.clone(),
            grace: settings.shutdown_grace,
            ..airlock_api::ServeOptions::default()
        };
        // Stop once the signal came and the data plane (if any) has drained.
        let (stop, drained) = (rx.clone(), drained_rx);
        let shutdown = async move {
            signalled(stop).await;
            signalled(drained).await;
        };
        tasks.spawn(airlock_api::serve(listener, state, options, shutdown));
    }
    let ops_task = ops_listener.map(|listener| {
        if let Some(addr) = ops_addr {
            tracing::info!(%addr, "operations listener (/metrics, /healthz, /readyz)");
        }
        ops::spawn(
            listener,
            ops::Ops {
                registry,
                data_plane: ops_data_plane,
                store: (settings.role != Role::Proxy).then(|| store.clone()),
                draining: rx.clone(),
            },
        )
    });
    while let Some(done) = tasks.join_next().await {
        done.context("a server task failed")?
            .context("a server stopped with an error")?;
    }
    reloader.abort();
    if let Some(task) = ops_task {
        task.abort();
    }
    store.close().await;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}
