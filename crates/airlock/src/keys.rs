//! The master keyring: from the settings, or (embedded SQLite only) a key file created on first
//! start beside the database.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use airlock_crypto::{Keyring, MasterKey};
use anyhow::{bail, Context, Result};

use crate::settings::{sqlite_dir, Settings};

const KEY_FILE: &str = "master.key";

/// Loads the keyring. With `create`, the embedded default may create its key file (on `serve`);
/// the key tools never do, so that running one in the wrong directory cannot mint a stray key.
pub(crate) fn load(settings: &Settings, create: bool) -> Result<Keyring> {
    if let Some(text) = &settings.master_key {
        if settings.master_key_file.is_some() {
            bail!("AIRLOCK_MASTER_KEY and AIRLOCK_MASTER_KEY_FILE are both set; set one");
        }
        return Keyring::parse(text).map_err(|e| anyhow::anyhow!("AIRLOCK_MASTER_KEY: {e}"));
    }
    if let Some(path) = &settings.master_key_file {
        return read_file(path, "AIRLOCK_MASTER_KEY_FILE");
    }
    if !settings.is_sqlite() {
        bail!("AIRLOCK_MASTER_KEY or AIRLOCK_MASTER_KEY_FILE is required with Postgres (generate one with `airlock keys generate`)");
    }
    let dir = sqlite_dir(&settings.database_url).unwrap_or_else(|| PathBuf::from("."));
    let path = dir.join(KEY_FILE);
    debug_assert_eq!(embedded_key_path(settings).as_ref(), Some(&path));
    if path.exists() {
        return read_file(&path, "the embedded master key file");
    }
    if !create {
        bail!(
            "no master key: set AIRLOCK_MASTER_KEY or AIRLOCK_MASTER_KEY_FILE (no key file at {})",
            path.display()
        );
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let key =
        MasterKey::generate().map_err(|e| anyhow::anyhow!("cannot generate a master key: {e}"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(key.to_base64().as_bytes())?;
    file.write_all(b"\n")?;
    tracing::warn!(
        path = %path.display(),
        "no AIRLOCK_MASTER_KEY was set: generated a new master key in this file (mode 0600). \
         Anyone who reads it and the database can decrypt every secret. Back it up apart from the \
         database, or set AIRLOCK_MASTER_KEY_FILE to a key kept elsewhere"
    );
    Keyring::new(vec![key]).map_err(|e| anyhow::anyhow!("{e}"))
}

fn read_file(path: &Path, what: &str) -> Result<Keyring> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("{what}: cannot read {}", path.display()))?,
    );
    Keyring::parse(&text).map_err(|e| anyhow::anyhow!("{what} ({}): {e}", path.display()))
}

/// Where the embedded default keeps its key file (SQLite only).
pub(crate) fn embedded_key_path(settings: &Settings) -> Option<PathBuf> {
    settings.is_sqlite().then(|| {
        sqlite_dir(&settings.database_url)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(KEY_FILE)
    })
}
