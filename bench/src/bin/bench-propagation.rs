//! Propagation figures: how long a change made on the control plane takes to reach the data
//! plane of another replica.
//!
//! Starts a throwaway PostgreSQL cluster (airlock-testkit), `bench-upstream`, and two `airlock`
//! processes on that database: a control plane (`AIRLOCK_ROLE=control`) and a data-plane replica
//! (`AIRLOCK_ROLE=proxy`). Then, many times:
//!
//! - **rotate**: rotate the secret through the REST API, then send requests through the replica
//!   back to back until the upstream (`/echo-key`) receives the new value;
//! - **shutdown**: register a devbox, wait until the replica accepts its token, shut the devbox
//!   down through the REST API, then send requests until the replica answers 403.
//!
//! The figure is the time from sending the API call to sending the first request that saw the
//! change. `bench-propagation --trials 100` prints one JSON object.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlock_bench::{arg, quantile};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// A keep-alive HTTP/1.1 connection that reads `content-length` answers.
struct Conn {
    addr: String,
    stream: Option<TcpStream>,
}

impl Conn {
    fn new(addr: &str) -> Conn {
        Conn {
            addr: addr.to_owned(),
            stream: None,
        }
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>)> {
        for attempt in 0..2 {
            if self.stream.is_none() {
                let s = TcpStream::connect(&self.addr)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                self.stream = Some(s);
            }
            match self.try_request(method, path, headers, body) {
                Ok(r) => return Ok(r),
                Err(e) if attempt == 0 => {
                    self.stream = None;
                    let _ = e;
                }
                Err(e) => return Err(e),
            }
        }
        bail!("unreachable")
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>)> {
        let s = self.stream.as_mut().context("connected")?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.addr);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        s.write_all(req.as_bytes())?;
        let mut buf = Vec::with_capacity(1024);
        let mut tmp = [0u8; 4096];
        loop {
            let n = s.read(&mut tmp)?;
            if n == 0 {
                bail!("connection closed");
            }
            buf.extend_from_slice(&tmp[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .context("status line")?;
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .context("the benchmark expects content-length answers")?;
            while buf.len() < end + 4 + len {
                let n = s.read(&mut tmp)?;
                if n == 0 {
                    bail!("connection closed");
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            return Ok((status, buf[end + 4..end + 4 + len].to_vec()));
        }
    }
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    airlock_testkit::free_port()
}

fn wait_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port}")
}

fn summary(mut ms: Vec<f64>, timeouts: usize) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "trials": ms.len(),
        "timeouts": timeouts,
        "p50_ms": quantile(&ms, 0.5),
        "p99_ms": quantile(&ms, 0.99),
        "max_ms": ms.last().copied().unwrap_or(f64::NAN),
        "all_ms": ms,
    })
}

const TRIAL_TIMEOUT: Duration = Duration::from_secs(5);

async fn run(trials: usize) -> Result<Value> {
    let cluster = airlock_testkit::pg::PgCluster::start().await?;
    let db = cluster.fresh_database().await?;
    let bin_dir: PathBuf = std::env::current_exe()?
        .parent()
        .context("the binary's directory")?
        .to_path_buf();
    let work = std::env::temp_dir().join(format!("airlock-bench-prop-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let key_file = work.join("master.key");
    let key = airlock_crypto::MasterKey::generate()?;
    std::fs::write(&key_file, key.to_base64().as_bytes())?;

    let up_port = free_port();
    let (api, cp_proxy, replica_api, replica) =
        (free_port(), free_port(), free_port(), free_port());
    let admin = format!("bench-admin-{}", std::process::id()) + "-0123456789abcdef0123";
    let mut procs = Procs(Vec::new());
    procs.0.push(
        Command::new(bin_dir.join("bench-upstream"))
            .args(["--addr", &format!("127.0.0.1:{up_port}"), "--key", "unused"])
            .stdout(Stdio::null())
            .spawn()
            .context(
                "starting bench-upstream (build it with cargo build --release -p airlock-bench)",
            )?,
    );
    let airlock = |role: &str, api: u16, proxy: u16| -> Result<Child> {
        let log = std::fs::File::create(work.join(format!("{role}.log")))?;
        Command::new(bin_dir.join("airlock"))
            .arg("serve")
            .env("AIRLOCK_ROLE", role)
            .env("AIRLOCK_DATABASE_URL", &db)
            .env("AIRLOCK_MASTER_KEY_FILE", &key_file)
            .env("AIRLOCK_API_ADDR", format!("127.0.0.1:{api}"))
            .env("AIRLOCK_PROXY_ADDR", format!("127.0.0.1:{proxy}"))
            .env("AIRLOCK_ALLOW_PRIVATE_UPSTREAMS", "127.0.0.0/8")
            .env("AIRLOCK_ADMIN_TOKEN", &admin)
            .env("AIRLOCK_LOG", "warn")
            .env("AIRLOCK_LOG_FORMAT", "text")
            // Two processes on one machine: the operations listener's default port would clash.
            .env("AIRLOCK_METRICS_ADDR", "off")
            .env(
                "AIRLOCK_AUDIT_SPILL_FILE",
                work.join(format!("{role}.spill")),
            )
            .current_dir(&work)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting airlock (build it with cargo build --release -p airlock)")
    };
    procs.0.push(airlock("control", api, cp_proxy)?);
    wait_port(api)?;
    procs.0.push(airlock("proxy", replica_api, replica)?);
    wait_port(replica)?;
    wait_port(up_port)?;

    let auth = format!("Bearer {admin}");
    let mut cp = Conn::new(&format!("127.0.0.1:{api}"));
    let mut call = |method: &str, path: &str, body: Value| -> Result<Value> {
        let (status, body) = cp.request(method, path, &[("authorization", &auth)], Some(&body))?;
        if status >= 300 {
            bail!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(serde_json::from_slice(&body)?)
    };
    call(
        "POST",
        "/v1/secrets",
        json!({"name": "BENCH_KEY", "value": "sk-v0"}),
    )?;
    call(
        "POST",
        "/v1/gateway-configs",
        json!({"name": "bench", "endpoint": format!("http://127.0.0.1:{up_port}"),
               "auth_mechanism": {"type": "header", "key": "x-api-key"}}),
    )?;
    let register =
        |call: &mut dyn FnMut(&str, &str, Value) -> Result<Value>| -> Result<(String, String)> {
            let d = call(
                "POST",
                "/v1/devboxes",
                json!({"source_addresses": ["127.0.0.1"],
                   "gateways": {"BENCH": {"gateway": "bench", "secret": "BENCH_KEY"}}}),
            )?;
            Ok((
                d["id"].as_str().context("devbox id")?.to_owned(),
                d["environment"]["BENCH"]
                    .as_str()
                    .context("token")?
                    .to_owned(),
            ))
        };
    let (_, token) = register(&mut call)?;
    let mut probe = Conn::new(&format!("127.0.0.1:{replica}"));

    // Rotation.
    let mut rotate_ms = Vec::new();
    let mut rotate_timeouts = 0;
    for i in 0..trials {
        let value = format!("sk-v{}-{}", i + 1, std::process::id());
        let t0 = Instant::now();
        call("POST", "/v1/secrets/BENCH_KEY", json!({"value": value}))?;
        loop {
            let sent = t0.elapsed();
            let (status, body) =
                probe.request("GET", "/echo-key", &[("x-api-key", &token)], None)?;
            if status == 200 && body == value.as_bytes() {
                rotate_ms.push(sent.as_secs_f64() * 1e3);
                break;
            }
            if sent > TRIAL_TIMEOUT {
                rotate_timeouts += 1;
                break;
            }
        }
    }

    // Shutdown.
    let mut shutdown_ms = Vec::new();
    let mut shutdown_timeouts = 0;
    for _ in 0..trials {
        let (id, token) = register(&mut call)?;
        let ready = Instant::now();
        loop {
            let (status, _) = probe.request("GET", "/echo-key", &[("x-api-key", &token)], None)?;
            if status == 200 {
                break;
            }
            if ready.elapsed() > TRIAL_TIMEOUT {
                bail!("the replica never accepted a freshly minted token ({status})");
            }
        }
        let t0 = Instant::now();
        call("POST", &format!("/v1/devboxes/{id}/shutdown"), json!({}))?;
        loop {
            let sent = t0.elapsed();
            let (status, _) = probe.request("GET", "/echo-key", &[("x-api-key", &token)], None)?;
            if status == 403 {
                shutdown_ms.push(sent.as_secs_f64() * 1e3);
                break;
            }
            if sent > TRIAL_TIMEOUT {
                shutdown_timeouts += 1;
                break;
            }
        }
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(&work);
    Ok(json!({
        "setup": "a control plane (AIRLOCK_ROLE=control) and a data-plane replica (AIRLOCK_ROLE=proxy) \
                  as two processes on one throwaway PostgreSQL; time from sending the REST call to \
                  sending the first request through the replica that saw the change (requests back to back)",
        "results": {
            "secret rotation": summary(rotate_ms, rotate_timeouts),
            "devbox shutdown": summary(shutdown_ms, shutdown_timeouts),
        }
    }))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let trials: usize = arg(&args, "--trials")
        .map(|v| v.parse())
        .transpose()
        .context("--trials")?
        .unwrap_or(100);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let out = runtime.block_on(run(trials))?;
    println!("{out}");
    Ok(())
}
