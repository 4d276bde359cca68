//! Scale figures: a data plane holding 1 000 and 1 000 000 active tokens.
//!
//! For each size it creates a SQLite database, bulk-inserts the tokens through airlock-store
//! (`Store::bench_insert`, feature `bench`), then starts a fresh process (`bench-scale measure`)
//! so that memory figures belong to the data plane alone. That process measures:
//!
//! - the load: one full reload, exactly as the data plane's feed task runs it, timed;
//! - RSS after the load, and the peak RSS during a second full reload (the live state plus the
//!   one being built, as every 60 s in production);
//! - lookup cost, ns per lookup through the request path's lookup, two access patterns that are
//!   the same at every size: *hot*, a working set of 1 000 random tokens looked up round-robin
//!   in a shuffled order; *cold*, uniformly random tokens out of the whole set.
//!
//! `bench-scale --sizes 1000,1000000 [--tokens-per-devbox 2]` prints one JSON object.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use airlock_bench::{arg, reset_peak_rss, status_mb, Rng};
use airlock_core::{
    AccountId, AuthMechanism, BearerSecret, DevboxId, Endpoint, GatewayConfigId, Label, SecretId,
    SecretKind, SourceAddresses, TokenDigest, TokenId,
};
use airlock_crypto::{Keyring, MasterKey, SecretContext};
use airlock_store::{
    AccountRow, AuditRow, DevboxRow, DevboxStatus, GatewayConfigRow, SecretRow, Store, TokenRow,
};
use anyhow::{Context, Result};
use serde_json::json;

const HOT_SET: usize = 1000;
const LOOKUPS: usize = 2_000_000;

fn audit(account: &AccountId, what: &str) -> AuditRow {
    AuditRow {
        id: airlock_core::AuditId::generate().into_string(),
        time_ms: airlock_core::time::now_ms(),
        account_id: account.clone(),
        api_key_id: None,
        action: what.into(),
        object_type: what.into(),
        object_id: String::new(),
        detail: "{}".into(),
        client_addr: None,
    }
}

/// Creates the database and fills it; returns the digests, in insertion order.
async fn fill(
    url: &str,
    keyring: &Keyring,
    tokens: usize,
    per_devbox: usize,
) -> Result<Vec<TokenDigest>> {
    let store = Store::connect(url).await?;
    store.migrate().await?;
    let now = airlock_core::time::now_ms();
    let account = AccountId::generate();
    store
        .create_account(
            &AccountRow {
                id: account.clone(),
                name: "bench".into(),
                operator: true,
                create_time_ms: now,
            },
            None,
            None,
        )
        .await?;
    let secret_id = SecretId::generate();
    let ctx = SecretContext {
        account_id: account.as_str(),
        secret_id: secret_id.as_str(),
        version: 1,
    };
    let sealed = keyring.seal(&ctx, b"sk-bench-real-key")?;
    store
        .insert_secret(
            &SecretRow {
                id: secret_id.clone(),
                account_id: account.clone(),
                name: airlock_core::EnvName::parse("name", "BENCH_KEY")?,
                version: 1,
                sealed,
                key_id: keyring.active_id().0,
                create_time_ms: now,
                update_time_ms: now,
            },
            &audit(&account, "secret"),
        )
        .await?;
    let gateway_id = GatewayConfigId::generate();
    let endpoint = Endpoint::parse("endpoint", "https://api.example.com/v1")?;
    let auth = AuthMechanism::Header {
        key: "x-api-key".into(),
    };
    // Bound like the control plane binds it, or the data plane would refuse the config.
    let binding = keyring.bind(
        airlock_core::binding::GATEWAY_BINDING,
        &airlock_core::binding::gateway_binding_message(
            &account,
            &gateway_id,
            &endpoint,
            &auth,
            &[],
        ),
    )?;
    store
        .insert_gateway_config(
            &GatewayConfigRow {
                id: gateway_id.clone(),
                account_id: account.clone(),
                name: Label::parse("name", "bench")?,
                endpoint,
                auth,
                custom_headers: Vec::new(),
                description: None,
                create_time_ms: now,
                update_time_ms: now,
                binding: Some(binding),
                llm: Default::default(),
                router: None,
            },
            &audit(&account, "gateway_config"),
        )
        .await?;
    let per_devbox = per_devbox.max(1);
    let mut digests = Vec::with_capacity(tokens);
    let mut devboxes = Vec::new();
    let mut rows = Vec::with_capacity(tokens);
    // In batches, so that the rows of a million tokens are never all in memory at once.
    const BATCH: usize = 50_000;
    let mut made = 0;
    while made < tokens {
        let n = BATCH.min(tokens - made);
        devboxes.clear();
        rows.clear();
        for i in 0..n {
            if i % per_devbox == 0 {
                devboxes.push(DevboxRow {
                    id: DevboxId::generate(),
                    account_id: account.clone(),
                    name: None,
                    status: DevboxStatus::Running,
                    // A /24 per devbox: a realistic, non-trivial address list.
                    source_addresses: SourceAddresses::parse(
                        "source_addresses",
                        &[format!(
                            "10.{}.{}.0/24",
                            (made + i) / 65536 % 256,
                            (made + i) / 256 % 256
                        )],
                    )?,
                    metadata: "{}".into(),
                    create_time_ms: now,
                    update_time_ms: now,
                    shutdown_time_ms: None,
                    gateway_specs: Vec::new(),
                });
            }
            let token = BearerSecret::generate(SecretKind::Gateway);
            let digest = token.digest();
            digests.push(digest);
            rows.push(TokenRow {
                id: TokenId::generate(),
                account_id: account.clone(),
                devbox_id: devboxes.last().map(|d| d.id.clone()).context("a devbox")?,
                gateway_config_id: gateway_id.clone(),
                secret_id: Some(secret_id.clone()),
                prefix: None,
                digest,
                create_time_ms: now,
                expire_time_ms: None,
                scope: None,
            });
        }
        store.bench_insert(&devboxes, &rows).await?;
        made += n;
    }
    store.close().await;
    Ok(digests)
}

/// ns per lookup of `queries`, in order. The queries are laid out in memory in the order they
/// are asked (read sequentially), so the time is the lookup's, not that of fetching a random
/// digest from the list of all of them.
fn lookups(bench: &airlock_proxy::bench::StateBench, queries: &[TokenDigest]) -> f64 {
    let mut found = 0usize;
    for d in queries.iter().take(queries.len() / 10) {
        found += usize::from(bench.lookup(d));
    }
    let started = Instant::now();
    for d in queries {
        found += usize::from(bench.lookup(d));
    }
    let ns = started.elapsed().as_nanos() as f64 / queries.len() as f64;
    assert!(
        found >= queries.len(),
        "every token looked up must be found"
    );
    ns
}

/// The child: load, reload, look up. Prints one JSON object.
async fn measure(url: &str, key_file: &str, digest_file: &str) -> Result<()> {
    let key = std::fs::read_to_string(key_file)?;
    let keyring = Arc::new(Keyring::new(vec![MasterKey::from_base64(key.trim())?])?);
    let store = Store::connect(url).await?;
    let bench = airlock_proxy::bench::StateBench::new(keyring);
    let rss_start = status_mb("VmRSS");

    let started = Instant::now();
    let count = bench.full_reload(&store).await?;
    let load_s = started.elapsed().as_secs_f64();
    let rss_after_load = status_mb("VmRSS");
    let peak_first_load = status_mb("VmHWM");

    reset_peak_rss()?;
    let started = Instant::now();
    bench.full_reload(&store).await?;
    let reload_s = started.elapsed().as_secs_f64();
    let peak_reload = status_mb("VmHWM");
    let rss_after_reload = status_mb("VmRSS");

    let bytes = std::fs::read(digest_file)?;
    let digests: Vec<TokenDigest> = bytes
        .chunks_exact(32)
        .map(|c| {
            let mut d = [0u8; 32];
            d.copy_from_slice(c);
            TokenDigest::from_bytes(d)
        })
        .collect();
    let n = digests.len();
    let mut rng = Rng::new(0x5eed_1234_abcd_0001);
    // Hot: the same-size working set at every size.
    let mut hot: Vec<u32> = (0..n as u32).collect();
    rng.shuffle(&mut hot);
    hot.truncate(HOT_SET.min(n));
    let hot_queries: Vec<TokenDigest> = (0..LOOKUPS)
        .map(|i| digests[hot[i % hot.len()] as usize])
        .collect();
    let hot_ns = lookups(&bench, &hot_queries);
    drop(hot_queries);
    let cold_queries: Vec<TokenDigest> = (0..LOOKUPS).map(|_| digests[rng.below(n)]).collect();
    let cold_ns = lookups(&bench, &cold_queries);

    println!(
        "{}",
        json!({
            "tokens": count,
            "load_s": load_s,
            "reload_s": reload_s,
            "rss_start_mb": rss_start,
            "rss_after_load_mb": rss_after_load,
            "peak_rss_first_load_mb": peak_first_load,
            "peak_rss_reload_mb": peak_reload,
            "rss_after_reload_mb": rss_after_reload,
            "lookup_hot_ns": hot_ns,
            "lookup_cold_ns": cold_ns,
        })
    );
    Ok(())
}

async fn run(args: &[String]) -> Result<()> {
    let sizes: Vec<usize> = arg(args, "--sizes")
        .unwrap_or_else(|| "1000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().context("--sizes"))
        .collect::<Result<_>>()?;
    let per_devbox: usize = arg(args, "--tokens-per-devbox")
        .map(|v| v.parse())
        .transpose()
        .context("--tokens-per-devbox")?
        .unwrap_or(2);
    let dir = tempfile_dir()?;
    let key = MasterKey::generate()?;
    let key_file = dir.join("master.key");
    std::fs::write(&key_file, key.to_base64())?;
    let keyring = Keyring::new(vec![key])?;
    let mut out = Vec::new();
    for &size in &sizes {
        let url = format!("sqlite://{}/scale-{size}.db", dir.display());
        let started = Instant::now();
        let digests = fill(&url, &keyring, size, per_devbox).await?;
        let insert_s = started.elapsed().as_secs_f64();
        eprintln!("bench-scale: {size} tokens inserted in {insert_s:.1} s");
        let digest_file = dir.join(format!("digests-{size}.bin"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&digest_file)?);
        for d in &digests {
            f.write_all(d.as_bytes())?;
        }
        f.flush()?;
        drop(digests);
        let child = std::process::Command::new(std::env::current_exe()?)
            .args([
                "measure",
                &url,
                &key_file.display().to_string(),
                &digest_file.display().to_string(),
            ])
            .output()?;
        if !child.status.success() {
            anyhow::bail!(
                "measuring {size} tokens failed: {}",
                String::from_utf8_lossy(&child.stderr)
            );
        }
        eprint!("{}", String::from_utf8_lossy(&child.stderr));
        let mut row: serde_json::Value = serde_json::from_slice(&child.stdout)?;
        row["insert_s"] = json!(insert_s);
        eprintln!("bench-scale: {row}");
        out.push(row);
        let _ = std::fs::remove_file(dir.join(format!("scale-{size}.db")));
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{}",
        json!({
            "shape": format!(
                "one account, one gateway config, one secret; {per_devbox} tokens per running devbox, \
                 each devbox with one /24 source range; embedded SQLite; load = one full reload as the \
                 feed task runs it"
            ),
            "sizes": out,
        })
    );
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("airlock-bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    if args.get(1).map(String::as_str) == Some("measure") {
        let [_, _, url, key, digests] = &args[..] else {
            anyhow::bail!("usage: bench-scale measure URL KEY_FILE DIGEST_FILE");
        };
        return runtime.block_on(measure(url, key, digests));
    }
    runtime.block_on(run(&args))
}
