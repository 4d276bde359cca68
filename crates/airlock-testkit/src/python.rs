//! The Python interpreter that has the official client SDKs (`openai`, `anthropic`,
//! `runloop_api_client`) installed, and helpers to run scripts with it.
//!
//! `scripts/test` (what `make test` runs) creates `.venv` from `tests/python/requirements.txt`
//! and exports `AIRLOCK_TEST_PYTHON`. A missing environment is an error, never a skipped test.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::Command;

/// How long a Python script may run.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(120);

/// The root of the workspace (the directory of the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("crates/airlock-testkit sits two levels below the workspace root");
    root.canonicalize().unwrap_or_else(|_| root.to_path_buf())
}

/// The interpreter: `AIRLOCK_TEST_PYTHON` if set, else `<workspace>/.venv/bin/python`.
/// Panics when neither exists.
pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("AIRLOCK_TEST_PYTHON") {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "AIRLOCK_TEST_PYTHON={} does not exist: run `make test` (or scripts/test) which creates .venv",
            path.display()
        );
        return path;
    }
    let venv = workspace_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "python venv missing: run `make test` (or scripts/test) which creates .venv (looked for {})",
        venv.display()
    );
    venv
}

/// Runs `script` with [`python()`], with an environment of only PATH, HOME and `env` (so no
/// real `OPENAI_API_KEY` or the like leaks in), and waits for it (at most two minutes).
/// Returns the output whatever the exit status; see [`check_python_output`].
pub async fn run_python(script: &Path, env: &[(&str, &str)]) -> Result<Output> {
    let mut cmd = python_command(env);
    cmd.arg(script);
    run(cmd, &script.display().to_string()).await
}

/// Like [`run_python`], with the program given as text (`python -c`).
pub async fn run_python_code(code: &str, env: &[(&str, &str)]) -> Result<Output> {
    let mut cmd = python_command(env);
    cmd.arg("-c").arg(code);
    run(cmd, "python -c").await
}

/// The stdout of a successful run; an error with stdout and stderr otherwise.
pub fn check_python_output(output: &Output) -> Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "python failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

fn python_command(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(python());
    cmd.env_clear()
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for var in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    // Unbuffered output keeps stdout and stderr in order; no bytecode files in the tree.
    cmd.env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd.envs(env.iter().copied());
    cmd
}

async fn run(mut cmd: Command, what: &str) -> Result<Output> {
    let output = tokio::time::timeout(PYTHON_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("{what} did not finish within {PYTHON_TIMEOUT:?}"))?
        .with_context(|| format!("running {what}"))?;
    Ok(output)
}
