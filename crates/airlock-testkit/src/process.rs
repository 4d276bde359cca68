//! Drives the real `airlock` binary: spawned with a clean environment in a temporary working
//! directory (so the SQLite default `./airlock-data` lands there), its stdout and stderr in one
//! log file, killed when the handle is dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use http::StatusCode;
use tempfile::TempDir;

pub use crate::http::{http_get, http_request, HttpResponse};

/// A port on 127.0.0.1 that was free a moment ago (bound, read, released).
pub fn free_port() -> u16 {
    free_addr().port()
}

/// An address on 127.0.0.1 with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding 127.0.0.1:0 to find a free port")
}

/// The `airlock` binary to test: `AIRLOCK_BIN` if set; else the binary of this workspace in the
/// same profile as the running test, built first with `cargo build -p airlock` (once per
/// process; a no-op when it is fresh), so a test never runs a stale binary. Panics if the build
/// fails.
pub fn airlock_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("AIRLOCK_BIN") {
                return PathBuf::from(path);
            }
            // A test binary lives in `<target>/<profile>/deps/`.
            let exe = std::env::current_exe().expect("the path of the running test binary");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("the test binary sits in <target>/<profile>/deps")
                .to_path_buf();
            let target_dir = profile_dir
                .parent()
                .expect("the profile directory sits in the target directory");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = std::process::Command::new(cargo);
            build
                .args(["build", "--quiet", "-p", "airlock", "--bin", "airlock"])
                .arg("--target-dir")
                .arg(target_dir)
                .current_dir(crate::workspace_root());
            if profile_dir
                .file_name()
                .is_some_and(|name| name == "release")
            {
                build.arg("--release");
            }
            let output = build
                .stdin(Stdio::null())
                .output()
                .expect("running cargo build -p airlock");
            assert!(
                output.status.success(),
                "cargo build -p airlock failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let binary = profile_dir.join("airlock");
            assert!(
                binary.is_file(),
                "{} missing after cargo build",
                binary.display()
            );
            binary
        })
        .clone()
}

/// A running `airlock` process.
pub struct AirlockProcess {
    child: Child,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    workdir: TempDir,
    log_path: PathBuf,
}

impl std::fmt::Debug for AirlockProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AirlockProcess")
            .field("pid", &self.child.id())
            .field("binary", &self.binary)
            .field("args", &self.args)
            .field("workdir", &self.workdir.path())
            .finish_non_exhaustive()
    }
}

impl Drop for AirlockProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AirlockProcess {
    /// Spawns `binary args…` with an environment of only PATH, HOME and `env`, in a new
    /// temporary working directory, stdout and stderr appended to `airlock.log` there.
    ///
    /// Unless `env` sets `AIRLOCK_METRICS_ADDR`, it is set to a free port: the default
    /// (127.0.0.1:7090) would be taken by the first of several processes started by tests
    /// running in parallel, and the others would refuse to start.
    pub fn spawn(binary: &Path, args: &[&str], mut env: Vec<(String, String)>) -> Result<Self> {
        if !env.iter().any(|(k, _)| k == "AIRLOCK_METRICS_ADDR") {
            env.push(("AIRLOCK_METRICS_ADDR".into(), free_addr().to_string()));
        }
        let workdir = tempfile::Builder::new()
            .prefix("airlock-proc-")
            .tempdir()
            .context("creating the working directory")?;
        let log_path = workdir.path().join("airlock.log");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = launch(binary, &args, &env, workdir.path(), &log_path)?;
        Ok(AirlockProcess {
            child,
            binary: binary.to_path_buf(),
            args,
            env,
            workdir,
            log_path,
        })
    }

    /// Kills the process if it still runs and starts it again with the same binary, arguments,
    /// environment and working directory (so the SQLite database and key file are kept). The
    /// log file keeps growing.
    pub fn respawn(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.child = launch(
            &self.binary,
            &self.args,
            &self.env,
            self.workdir.path(),
            &self.log_path,
        )?;
        Ok(())
    }

    /// The operations listener's address (`AIRLOCK_METRICS_ADDR`), unless it is `off`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.env
            .iter()
            .find(|(k, _)| k == "AIRLOCK_METRICS_ADDR")
            .and_then(|(_, v)| v.parse().ok())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The working directory.
    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// The log file (stdout and stderr together).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process has printed so far, stdout and stderr interleaved.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`, …) with `kill -s`.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .stdin(Stdio::null())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -s {signal} {} failed", self.child.id());
        }
        Ok(())
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until the process exits; an error with the log after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "the process did not exit within {timeout:?}\n--- log ---\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `GET url` until it answers 200. Fails early, with the log, if the process exits,
    /// and after `timeout` with the last answer and the log.
    pub async fn wait_http_ok(&mut self, url: &str, timeout: Duration) -> Result<()> {
        self.wait_ok(url, None, timeout).await
    }

    /// Like [`wait_http_ok`](Self::wait_http_ok), for `https://` URLs with a client config
    /// (for example [`crate::tls::TestCa::client_config`]).
    pub async fn wait_https_ok(
        &mut self,
        url: &str,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<()> {
        self.wait_ok(url, Some(tls), timeout).await
    }

    async fn wait_ok(
        &mut self,
        url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "airlock exited ({status}) before {url} answered\n--- log ---\n{}",
                    self.log()
                );
            }
            let mut request = crate::http::TestRequest::get(url).timeout(Duration::from_secs(2));
            if let Some(tls) = &tls {
                request = request.tls(tls.clone());
            }
            let attempt = request.send().await;
            let last = match attempt {
                Ok(response) if response.status == StatusCode::OK => return Ok(()),
                Ok(response) => format!("status {}: {}", response.status, response.text()),
                Err(err) => format!("{err:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "{url} did not answer 200 within {timeout:?} (last: {last})\n--- log ---\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the log contains `needle` and returns the whole log; an error with the log
    /// after `timeout` or when the process exits first.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return Ok(log);
            }
            if let Some(status) = self.child.try_wait()? {
                // One more read: the line may have been written just before the exit.
                let log = self.log();
                if log.contains(needle) {
                    return Ok(log);
                }
                bail!("airlock exited ({status}) without logging {needle:?}\n--- log ---\n{log}");
            }
            if Instant::now() > deadline {
                bail!("airlock did not log {needle:?} within {timeout:?}\n--- log ---\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn launch(
    binary: &Path,
    args: &[String],
    env: &[(String, String)],
    workdir: &Path,
    log_path: &Path,
) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let log_err = log.try_clone()?;
    let mut cmd = std::process::Command::new(binary);
    cmd.args(args)
        .env_clear()
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    for var in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.spawn()
        .with_context(|| format!("spawning {}", binary.display()))
}
