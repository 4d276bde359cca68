//! Server TLS from PEM files, replaceable under a running listener.
//!
//! A [`CertResolver`] holds the loaded certificate chain and key in an `ArcSwap`; rustls asks it
//! for the pair at every handshake, so a reload is one pointer store: new handshakes get the new
//! certificate, and connections already open keep the session they negotiated. A pair that fails
//! to load (unreadable, not PEM, a key that does not match the certificate, a file caught half
//! written) leaves the current one in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use zeroize::Zeroizing;

/// The ALPN protocols both listeners offer: HTTP/2 first, then HTTP/1.1.
pub const ALPN_H2_HTTP11: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Where a listener's certificate chain and private key are, and the names of the settings that
/// said so (used in error messages).
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_setting: String,
    pub key_setting: String,
}

impl CertFiles {
    /// A PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        CertFiles {
            cert: cert.into(),
            key: key.into(),
            cert_setting: "certificate file".to_owned(),
            key_setting: "key file".to_owned(),
        }
    }

    /// Names the settings the paths came from, for error messages.
    pub fn named(mut self, cert_setting: &str, key_setting: &str) -> Self {
        self.cert_setting = cert_setting.to_owned();
        self.key_setting = key_setting.to_owned();
        self
    }
}

/// Why a certificate and key could not be used. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    // Not `source`: the message already carries the I/O error, and a source would print twice.
    #[error("{setting}: cannot read {path}: {error}")]
    Read {
        setting: String,
        path: String,
        error: std::io::Error,
    },
    #[error("{setting} ({path}): {message}")]
    Invalid {
        setting: String,
        path: String,
        message: String,
    },
    #[error("{key_setting} ({key_path}) does not hold the private key of the certificate in {cert_setting} ({cert_path})")]
    Mismatch {
        cert_setting: String,
        cert_path: String,
        key_setting: String,
        key_path: String,
    },
    #[error("building the TLS configuration: {0}")]
    Config(String),
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn read(setting: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        setting: setting.to_owned(),
        path: path.display().to_string(),
        error,
    })
}

fn invalid(setting: &str, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        setting: setting.to_owned(),
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// The contents of both files, and their digest (to notice a change without keeping the key).
struct Contents {
    cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
    digest: [u8; 32],
}

fn read_both(files: &CertFiles) -> Result<Contents, TlsError> {
    let cert = read(&files.cert_setting, &files.cert)?;
    let key = Zeroizing::new(read(&files.key_setting, &files.key)?);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&(cert.len() as u64).to_be_bytes());
    ctx.update(&cert);
    ctx.update(&key);
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ctx.finish().as_ref());
    Ok(Contents { cert, key, digest })
}

fn certified_key(files: &CertFiles, contents: &Contents) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut contents.cert.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(&files.cert_setting, &files.cert, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            &files.cert_setting,
            &files.cert,
            "no CERTIFICATE block found",
        ));
    }
    let key = rustls_pemfile::private_key(&mut contents.key.as_slice())
        .map_err(|e| invalid(&files.key_setting, &files.key, format!("not PEM: {e}")))?
        .ok_or_else(|| invalid(&files.key_setting, &files.key, "no PRIVATE KEY block found"))?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|err| match err {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert_setting: files.cert_setting.clone(),
            cert_path: files.cert.display().to_string(),
            key_setting: files.key_setting.clone(),
            key_path: files.key.display().to_string(),
        },
        // A certificate that does not parse surfaces here, through the key-match check.
        rustls::Error::InvalidCertificate(e) => invalid(
            &files.cert_setting,
            &files.cert,
            format!("unusable certificate: {e}"),
        ),
        other => invalid(
            &files.key_setting,
            &files.key,
            format!("unusable private key: {other}"),
        ),
    })
}

/// What a reload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files hold what was tried last: nothing done.
    Unchanged,
    /// A new pair is in use for new handshakes.
    Loaded,
}

/// The certificate and key for new handshakes, reloadable from their files.
pub struct CertResolver {
    files: CertFiles,
    current: ArcSwap<CertifiedKey>,
    /// The digest of the contents tried last, loaded or refused: a poll acts only on a change,
    /// so a broken pair is reported once, not at every poll.
    tried: Mutex<[u8; 32]>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver")
            .field("cert", &self.files.cert)
            .field("key", &self.files.key)
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    /// Loads the pair; an error names the setting and the file.
    pub fn load(files: CertFiles) -> Result<Arc<CertResolver>, TlsError> {
        let contents = read_both(&files)?;
        let key = certified_key(&files, &contents)?;
        Ok(Arc::new(CertResolver {
            current: ArcSwap::from_pointee(key),
            tried: Mutex::new(contents.digest),
            files,
        }))
    }

    /// The files this resolver reads.
    pub fn files(&self) -> &CertFiles {
        &self.files
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// Reads the files and, if their contents differ from what was tried last (or `force`),
    /// loads them. On an error the current pair stays.
    pub fn reload(&self, force: bool) -> Result<Reload, TlsError> {
        let contents = read_both(&self.files)?;
        {
            let mut tried = self.tried.lock().unwrap_or_else(|e| e.into_inner());
            // public: a SHA-256 of the files, only to notice that they changed.
            if !force && *tried == contents.digest {
                return Ok(Reload::Unchanged);
            }
            *tried = contents.digest;
        }
        let key = certified_key(&self.files, &contents)?;
        self.current.store(Arc::new(key));
        Ok(Reload::Loaded)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A server TLS configuration whose certificate comes from a [`CertResolver`].
#[derive(Clone, Debug)]
pub struct TlsServer {
    resolver: Arc<CertResolver>,
    config: Arc<ServerConfig>,
}

impl TlsServer {
    /// TLS 1.2 and 1.3 (ring), no client certificates, the given ALPN protocols (usually
    /// [`ALPN_H2_HTTP11`]).
    pub fn new(resolver: Arc<CertResolver>, alpn: &[&[u8]]) -> Result<TlsServer, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsServer {
            resolver,
            config: Arc::new(config),
        })
    }

    /// Loads `files` and offers ALPN `h2` and `http/1.1`.
    pub fn from_files(files: CertFiles) -> Result<TlsServer, TlsError> {
        TlsServer::new(CertResolver::load(files)?, ALPN_H2_HTTP11)
    }

    /// The resolver, to reload it.
    pub fn resolver(&self) -> &Arc<CertResolver> {
        &self.resolver
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

/// Keeps `resolvers` current: every `interval` (never if zero) each reloads if its files'
/// contents changed, and every change of `nudge` (SIGHUP) reloads them all. Runs until `nudge`'s
/// sender is dropped. Outcomes are logged; a failure keeps the current pair.
pub async fn keep_fresh(
    resolvers: Vec<Arc<CertResolver>>,
    interval: Duration,
    mut nudge: tokio::sync::watch::Receiver<()>,
) {
    if resolvers.is_empty() {
        return;
    }
    let poll = !interval.is_zero();
    let mut ticker = tokio::time::interval(if poll {
        interval
    } else {
        Duration::from_secs(3600)
    });
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        let force = tokio::select! {
            _ = ticker.tick(), if poll => false,
            changed = nudge.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
        };
        for resolver in &resolvers {
            let files = resolver.files();
            match resolver.reload(force) {
                Ok(Reload::Unchanged) => {}
                Ok(Reload::Loaded) => tracing::info!(
                    cert = %files.cert.display(),
                    key = %files.key.display(),
                    "loaded a new TLS certificate; new connections get it"
                ),
                Err(err) => tracing::error!(
                    error = %err,
                    "cannot load the new TLS certificate; keeping the current one"
                ),
            }
        }
    }
}
