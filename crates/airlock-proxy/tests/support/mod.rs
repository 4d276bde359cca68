//! What the data-plane tests share: a real store (SQLite in a temporary directory, or a fresh
//! Postgres database), rows seeded through the store's public methods, a TLS upstream that
//! records what it received, and the data plane serving on a real listener.
//!
//! Two fault injectors wrap the real store (they are not mocks of the proxy): [`Source`] counts
//! single-token lookups, can fail full loads and can take its change feed down ([`Feed`]),
//! [`Sink`] can fail audit writes.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_core::state::LlmSettings;
use airlock_core::state::{
    AuditSink, Change, ChangeFeed, FeedEvent, RequestAuditEvent, SourceError, StateSnapshot,
    StateSource,
};
use airlock_core::{
    AccountId, AuditId, AuthMechanism, BearerSecret, CustomHeader, DevboxId, Endpoint, EnvName,
    GatewayConfigId, Label, SecretId, SecretKind, SourceAddresses, TokenDigest, TokenId,
    UpstreamPolicy,
};
use airlock_crypto::{Keyring, MasterKey, SecretContext};
use airlock_proxy::{DataPlane, ProxyConfig};
use airlock_store::{
    AccountRow, AuditFilter, AuditRow, DevboxRow, DevboxStatus, GatewayConfigRow, Page, SecretRow,
    Store, StoreFeed, TokenRow,
};
use airlock_testkit::tls::{TestCa, ALPN_H2_HTTP11};
use airlock_testkit::upstream::Responder;
use airlock_testkit::{RecordingUpstream, TestRequest, UpstreamOptions};
use tokio::net::TcpListener;

/// A store with its backing files.
pub struct Db {
    pub store: Store,
    pub url: String,
    pub _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("airlock.db").display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    Db {
        store,
        url,
        _dir: Some(dir),
    }
}

pub async fn postgres() -> Db {
    let url = airlock_testkit::pg::shared()
        .await
        .fresh_database()
        .await
        .unwrap();
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    Db {
        store,
        url,
        _dir: None,
    }
}

impl Db {
    /// Runs one SQL statement behind the store's back, as someone with write access to the
    /// database would; `bytes` are bound to `$1` when given.
    pub async fn tamper(&self, sql: &str, bytes: Option<&[u8]>) {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.url).await.unwrap();
        let mut query = sqlx::query(sql);
        if let Some(bytes) = bytes {
            query = query.bind(bytes.to_vec());
        }
        let done = query.execute(&mut conn).await.unwrap();
        assert!(done.rows_affected() > 0, "{sql} changed nothing");
        conn.close().await.unwrap();
    }
}

/// The real store, counting what the data plane asks of it; full loads can be made to fail,
/// and the change feed can be taken down.
pub struct Source {
    pub store: Store,
    pub token_lookups: AtomicUsize,
    pub full_loads: AtomicUsize,
    pub fail_loads: AtomicBool,
    /// While set, the feed loses every change, as notifications are lost while a Postgres
    /// listener is disconnected.
    pub feed_down: Arc<AtomicBool>,
    /// The changes the feed lost.
    pub lost: Arc<std::sync::Mutex<Vec<Change>>>,
    /// While set, the limits' ledger cannot be reached (leases and settles fail).
    pub ledger_down: AtomicBool,
    /// Leases asked of the ledger.
    pub leases: AtomicUsize,
}

/// The store's change feed behind [`Source::feed_down`]. Changes that arrive while the feed is
/// down are dropped; the first one after it is back up is reported as [`FeedEvent::Resync`],
/// as the store's own feed reports a reconnect (so a test brings the feed back with
/// `feed_down = false` followed by any change).
pub struct Feed {
    inner: StoreFeed,
    down: Arc<AtomicBool>,
    lost: Arc<std::sync::Mutex<Vec<Change>>>,
    missed: bool,
}

impl ChangeFeed for Feed {
    async fn next(&mut self) -> Result<FeedEvent, SourceError> {
        loop {
            let event = self.inner.next().await?;
            if self.down.load(Ordering::SeqCst) {
                if let FeedEvent::Changed(change) = event {
                    self.lost.lock().unwrap().push(change);
                }
                self.missed = true;
                continue;
            }
            if std::mem::take(&mut self.missed) {
                return Ok(FeedEvent::Resync);
            }
            return Ok(event);
        }
    }
}

impl StateSource for Source {
    type Feed = Feed;

    async fn load_all(&self) -> Result<StateSnapshot, SourceError> {
        self.full_loads.fetch_add(1, Ordering::SeqCst);
        if self.fail_loads.load(Ordering::SeqCst) {
            return Err(SourceError("injected: the database is down".into()));
        }
        self.store.load_all().await
    }

    /// The store's own paged load (the one the data plane uses), not the trait's default.
    async fn load_all_paged<F>(&self, page: F) -> Result<(), SourceError>
    where
        F: FnMut(StateSnapshot) + Send,
    {
        self.full_loads.fetch_add(1, Ordering::SeqCst);
        if self.fail_loads.load(Ordering::SeqCst) {
            return Err(SourceError("injected: the database is down".into()));
        }
        self.store.load_all_paged(page).await
    }

    async fn load_changed(&self, changes: &[Change]) -> Result<StateSnapshot, SourceError> {
        if self.fail_loads.load(Ordering::SeqCst) {
            return Err(SourceError("injected: the database is down".into()));
        }
        self.store.load_changed(changes).await
    }

    async fn load_token(&self, digest: &TokenDigest) -> Result<Option<StateSnapshot>, SourceError> {
        self.token_lookups.fetch_add(1, Ordering::SeqCst);
        if self.fail_loads.load(Ordering::SeqCst) {
            return Err(SourceError("injected: the database is down".into()));
        }
        self.store.load_token(digest).await
    }

    async fn subscribe(&self) -> Result<Feed, SourceError> {
        Ok(Feed {
            inner: self.store.subscribe().await?,
            down: self.feed_down.clone(),
            lost: self.lost.clone(),
            missed: false,
        })
    }

    async fn limits_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<airlock_core::LimitsRecord>, SourceError> {
        self.store.limits_since(since_ms).await
    }

    async fn lease(
        &self,
        key: &airlock_core::CounterKey,
        limit: u64,
        want: u64,
    ) -> Result<airlock_core::state::Lease, SourceError> {
        self.leases.fetch_add(1, Ordering::SeqCst);
        if self.ledger_down.load(Ordering::SeqCst) {
            return Err(SourceError("the ledger is down (test)".into()));
        }
        self.store.lease(key, limit, want).await
    }

    async fn settle(&self, key: &airlock_core::CounterKey, delta: i64) -> Result<(), SourceError> {
        if self.ledger_down.load(Ordering::SeqCst) {
            return Err(SourceError("the ledger is down (test)".into()));
        }
        self.store.settle(key, delta).await
    }
}

/// The real store as the audit sink, failing the next `failures` writes; while `stalled`, a
/// write waits (as a database that hangs would).
pub struct Sink {
    pub store: Store,
    pub failures: AtomicUsize,
    pub failed: AtomicUsize,
    pub writes: AtomicUsize,
    pub stalled: AtomicBool,
    /// Every event stored, those without an account (refused before authentication) included.
    pub written: Mutex<Vec<RequestAuditEvent>>,
}

impl Sink {
    /// Every event stored so far.
    pub fn written(&self) -> Vec<RequestAuditEvent> {
        self.written.lock().unwrap().clone()
    }
}

impl AuditSink for Sink {
    async fn write_batch(&self, events: &[RequestAuditEvent]) -> Result<(), SourceError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        while self.stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(SourceError("injected: audit write failed".into()));
        }
        self.store.write_batch(events).await?;
        self.written.lock().unwrap().extend_from_slice(events);
        Ok(())
    }

    async fn write_limit_hits(&self, hits: &[airlock_core::LimitHit]) -> Result<(), SourceError> {
        self.store.write_limit_hits(hits).await
    }
}

pub fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::new(vec![MasterKey::generate().unwrap()]).unwrap())
}

fn now() -> i64 {
    airlock_core::time::now_ms()
}

fn audit(account: &AccountId, action: &str, object_type: &str, object_id: &str) -> AuditRow {
    AuditRow {
        id: AuditId::generate().into_string(),
        time_ms: now(),
        account_id: account.clone(),
        api_key_id: None,
        action: action.into(),
        object_type: object_type.into(),
        object_id: object_id.into(),
        detail: "{}".into(),
        client_addr: None,
    }
}

/// Seeds rows through the store's public methods, as the control plane would.
#[derive(Clone)]
pub struct Seed {
    pub store: Store,
    pub keyring: Arc<Keyring>,
    pub account: AccountId,
    /// Every token minted through this seed, for the leak checks.
    pub minted: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Seed {
    pub async fn new(store: Store, keyring: Arc<Keyring>) -> Seed {
        let account = AccountId::generate();
        let row = AccountRow {
            id: account.clone(),
            name: "tests".into(),
            operator: false,
            create_time_ms: now(),
        };
        store.create_account(&row, None, None).await.unwrap();
        Seed {
            store,
            keyring,
            account,
            minted: Arc::default(),
        }
    }

    pub async fn secret(&self, name: &str, value: &str) -> SecretRow {
        let id = SecretId::generate();
        let ctx = SecretContext {
            account_id: self.account.as_str(),
            secret_id: id.as_str(),
            version: 1,
        };
        let sealed = self.keyring.seal(&ctx, value.as_bytes()).unwrap();
        let row = SecretRow {
            id,
            account_id: self.account.clone(),
            name: EnvName::parse("name", name).unwrap(),
            version: 1,
            sealed,
            key_id: self.keyring.active_id().0,
            create_time_ms: now(),
            update_time_ms: now(),
        };
        let a = audit(&self.account, "secret.create", "secret", row.id.as_str());
        self.store.insert_secret(&row, &a).await.unwrap();
        row
    }

    /// A new version of the secret, through `rotate_secret`.
    pub async fn rotate(&self, old: &SecretRow, value: &str) -> SecretRow {
        let version = old.version + 1;
        let ctx = SecretContext {
            account_id: self.account.as_str(),
            secret_id: old.id.as_str(),
            version,
        };
        let row = SecretRow {
            version,
            sealed: self.keyring.seal(&ctx, value.as_bytes()).unwrap(),
            update_time_ms: now(),
            ..old.clone()
        };
        let a = audit(&self.account, "secret.update", "secret", row.id.as_str());
        self.store
            .rotate_secret(&row, old.version, &a)
            .await
            .unwrap();
        row
    }

    pub async fn gateway(
        &self,
        endpoint: &str,
        auth: AuthMechanism,
        custom_headers: Vec<CustomHeader>,
    ) -> GatewayConfigRow {
        self.gateway_llm(endpoint, auth, custom_headers, LlmSettings::default())
            .await
    }

    /// A gateway config with LLM settings (provider, dialect, model list): a metered gateway.
    pub async fn gateway_llm(
        &self,
        endpoint: &str,
        auth: AuthMechanism,
        custom_headers: Vec<CustomHeader>,
        llm: LlmSettings,
    ) -> GatewayConfigRow {
        let mut row = GatewayConfigRow {
            id: GatewayConfigId::generate(),
            account_id: self.account.clone(),
            name: Label::parse("name", "test gateway").unwrap(),
            endpoint: Endpoint::parse("endpoint", endpoint).unwrap(),
            auth,
            custom_headers,
            description: None,
            create_time_ms: now(),
            update_time_ms: now(),
            binding: None,
            llm,
            router: None,
        };
        self.bind(&mut row);
        let a = audit(
            &self.account,
            "gateway_config.create",
            "gateway_config",
            row.id.as_str(),
        );
        self.store.insert_gateway_config(&row, &a).await.unwrap();
        row
    }

    /// Makes the config's binding with the keyring, as the control plane does on every write.
    pub fn bind(&self, row: &mut GatewayConfigRow) {
        let message = airlock_core::binding::gateway_binding_message(
            &row.account_id,
            &row.id,
            &row.endpoint,
            &row.auth,
            &row.custom_headers,
        );
        row.binding = Some(
            self.keyring
                .bind(airlock_core::binding::GATEWAY_BINDING, &message)
                .unwrap(),
        );
    }

    /// Registers a running devbox with one token per (gateway, secret) pair.
    pub async fn devbox(
        &self,
        addresses: &[&str],
        bindings: &[(&GatewayConfigRow, &SecretRow)],
    ) -> (DevboxRow, Vec<BearerSecret>) {
        self.devbox_expiring(addresses, bindings, None).await
    }

    pub async fn devbox_expiring(
        &self,
        addresses: &[&str],
        bindings: &[(&GatewayConfigRow, &SecretRow)],
        expire_time_ms: Option<i64>,
    ) -> (DevboxRow, Vec<BearerSecret>) {
        let row = DevboxRow {
            id: DevboxId::generate(),
            account_id: self.account.clone(),
            name: None,
            status: DevboxStatus::Running,
            source_addresses: SourceAddresses::parse("source_addresses", addresses).unwrap(),
            metadata: "{}".into(),
            create_time_ms: now(),
            update_time_ms: now(),
            shutdown_time_ms: None,
            gateway_specs: Vec::new(),
        };
        let mut tokens = Vec::new();
        let mut rows = Vec::new();
        for (i, (gateway, secret)) in bindings.iter().enumerate() {
            let token = BearerSecret::generate(SecretKind::Gateway);
            self.minted.lock().unwrap().push(token.expose().to_owned());
            rows.push(TokenRow {
                id: TokenId::generate(),
                account_id: self.account.clone(),
                devbox_id: row.id.clone(),
                gateway_config_id: gateway.id.clone(),
                secret_id: Some(secret.id.clone()),
                prefix: Some(EnvName::parse("prefix", &format!("GW{i}")).unwrap()),
                digest: token.digest(),
                create_time_ms: now(),
                expire_time_ms,
                scope: None,
            });
            tokens.push(token);
        }
        let a = audit(&self.account, "devbox.create", "devbox", row.id.as_str());
        self.store.register_devbox(&row, &rows, &a).await.unwrap();
        (row, tokens)
    }

    pub async fn shutdown(&self, devbox: &DevboxRow) {
        let a = audit(
            &self.account,
            "devbox.shutdown",
            "devbox",
            devbox.id.as_str(),
        );
        self.store
            .shutdown_devbox(&self.account, &devbox.id, now(), &a)
            .await
            .unwrap();
    }

    pub async fn request_events(&self) -> Vec<RequestAuditEvent> {
        let page = Page {
            limit: 100_000,
            starting_after: None,
            include_total_count: false,
        };
        let listed = self
            .store
            .list_request_events(&self.account, &AuditFilter::default(), &page)
            .await
            .unwrap();
        listed.items.into_iter().map(|r| r.event).collect()
    }
}

/// How to start a [`Harness`].
pub struct Options {
    pub configure: Box<dyn FnOnce(&mut ProxyConfig) + Send>,
    pub responder: Option<Responder>,
    pub sink_failures: usize,
    pub fail_loads: bool,
    /// Records per page of the data plane's full loads (`Store::with_load_page_size`).
    pub load_page: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            configure: Box::new(|_| {}),
            responder: None,
            sink_failures: 0,
            fail_loads: false,
            load_page: None,
        }
    }
}

/// A data plane on a real listener in front of a TLS recording upstream.
pub struct Harness {
    pub seed: Seed,
    pub source: Arc<Source>,
    pub sink: Arc<Sink>,
    pub ca: TestCa,
    pub upstream: RecordingUpstream,
    pub plane: Arc<DataPlane>,
    pub proxy: SocketAddr,
    pub spill: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
    pub db: Db,
}

/// The policy every TLS test needs: the recording upstream lives on loopback.
pub fn loopback_policy() -> UpstreamPolicy {
    UpstreamPolicy::parse("127.0.0.0/8, ::1").unwrap()
}

impl Harness {
    pub async fn start(db: Db, options: Options) -> Harness {
        let keyring = keyring();
        let seed = Seed::new(db.store.clone(), keyring.clone()).await;
        let ca = TestCa::new();
        let mut upstream_options =
            UpstreamOptions::tls(ca.server_config(&["localhost"], ALPN_H2_HTTP11));
        if let Some(responder) = options.responder {
            upstream_options = upstream_options.responder(responder);
        }
        let upstream = RecordingUpstream::start(upstream_options).await.unwrap();
        let mut source_store = db.store.clone();
        if let Some(records) = options.load_page {
            source_store = source_store.with_load_page_size(records);
        }
        let source = Arc::new(Source {
            store: source_store,
            token_lookups: AtomicUsize::new(0),
            full_loads: AtomicUsize::new(0),
            fail_loads: AtomicBool::new(options.fail_loads),
            feed_down: Arc::new(AtomicBool::new(false)),
            lost: Arc::default(),
            ledger_down: AtomicBool::new(false),
            leases: AtomicUsize::new(0),
        });
        let sink = Arc::new(Sink {
            store: db.store.clone(),
            failures: AtomicUsize::new(options.sink_failures),
            failed: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            stalled: AtomicBool::new(false),
            written: Mutex::default(),
        });
        let dir = tempfile::tempdir().unwrap();
        let spill = dir.path().join("audit.spill");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let mut config = ProxyConfig {
            policy: loopback_policy(),
            extra_roots_pem: Some(ca.cert_pem().into_bytes()),
            own_addrs: vec![proxy],
            audit_spill_path: spill.clone(),
            ..ProxyConfig::default()
        };
        (options.configure)(&mut config);
        let plane = Arc::new(
            airlock_proxy::start(config, keyring, source.clone(), sink.clone())
                .await
                .unwrap(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn({
            let plane = plane.clone();
            async move {
                plane
                    .serve(
                        listener,
                        async move {
                            let _ = stopped.await;
                        },
                        Duration::from_secs(5),
                    )
                    .await
            }
        });
        Harness {
            seed,
            source,
            sink,
            ca,
            upstream,
            plane,
            proxy,
            spill,
            stop: Some(stop),
            served: Some(served),
            _dir: dir,
            db,
        }
    }

    pub async fn sqlite() -> Harness {
        Harness::start(sqlite().await, Options::default()).await
    }

    /// `http://<proxy><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }

    /// The upstream's base URL plus `base_path` (a gateway endpoint).
    pub fn endpoint(&self, base_path: &str) -> String {
        format!("{}{}", self.upstream.url(), base_path)
    }

    /// A gateway to the recording upstream at `/v1`, a secret and a devbox with one token, bound
    /// to 127.0.0.1.
    pub async fn simple(&self, auth: AuthMechanism, secret: &str) -> Simple {
        let gateway = self
            .seed
            .gateway(&self.endpoint("/v1"), auth, Vec::new())
            .await;
        let secret = self.seed.secret(&unique_name(), secret).await;
        let (devbox, mut tokens) = self
            .seed
            .devbox(&["127.0.0.1"], &[(&gateway, &secret)])
            .await;
        Simple {
            gateway,
            secret,
            devbox,
            token: tokens.remove(0),
        }
    }

    /// Stops serving (gracefully) and waits for the audit flush.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.unwrap().unwrap();
        }
    }

    /// Waits until `check` holds, for at most `within`.
    pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        loop {
            if check().await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub struct Simple {
    pub gateway: GatewayConfigRow,
    pub secret: SecretRow,
    pub devbox: DevboxRow,
    pub token: BearerSecret,
}

pub fn unique_name() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("SECRET_{}", N.fetch_add(1, Ordering::SeqCst))
}

/// A GET through the proxy with `Authorization: Bearer <token>`.
pub async fn get(h: &Harness, path: &str, token: &BearerSecret) -> airlock_testkit::HttpResponse {
    TestRequest::get(&h.url(path))
        .bearer(token.expose())
        .send()
        .await
        .unwrap()
}

/// The value of one sample in a scrape (`name{labels}` exactly as encoded), 0 when absent.
pub fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

/// The data plane's metrics now.
pub fn scrape(h: &Harness) -> String {
    h.plane.encode_metrics()
}

/// Waits until a sample of the data plane's metrics has the value (the request's metrics are
/// recorded when its response ends, a moment after the client has read it).
pub async fn wait_sample(h: &Harness, series: &str, value: f64) {
    let reached = Harness::eventually(Duration::from_secs(5), || async {
        sample(&scrape(h), series) == value
    })
    .await;
    assert!(
        reached,
        "{series} never became {value}; scrape:\n{}",
        scrape(h)
    );
}

/// The `x-airlock-error` code of a response, or "" when there is none.
pub fn code(r: &airlock_testkit::HttpResponse) -> String {
    r.header("x-airlock-error").unwrap_or_default()
}

/// What came back on a raw connection.
pub struct RawAnswer {
    pub text: String,
    /// The server closed the connection before the deadline.
    pub closed: bool,
}

impl RawAnswer {
    /// The status of every response, in order, read by their framing (content-length or
    /// chunked); a response that cannot be framed ends the list.
    pub fn statuses(&self) -> Vec<u16> {
        let bytes = self.text.as_bytes();
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let Some(head_len) = find(&bytes[at..], b"\r\n\r\n") else {
                break;
            };
            let head = &self.text[at..at + head_len];
            let Some(status) = head
                .strip_prefix("HTTP/1.")
                .and_then(|r| r.get(2..5))
                .and_then(|s| s.parse::<u16>().ok())
            else {
                break;
            };
            out.push(status);
            at += head_len + 4;
            let lower = head.to_ascii_lowercase();
            let length = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(n) = length {
                at += n;
            } else if lower.contains("transfer-encoding: chunked") {
                loop {
                    let Some(line) = find(&bytes[at..], b"\r\n") else {
                        return out;
                    };
                    let size =
                        usize::from_str_radix(self.text[at..at + line].trim(), 16).unwrap_or(0);
                    at += line + 2 + size + 2;
                    if size == 0 || at >= bytes.len() {
                        break;
                    }
                }
            } else if status != 101 && status != 204 && status != 304 {
                break;
            }
        }
        out
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends raw bytes, reads until the server closes or `timeout` passes, and says which.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> RawAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may close before reading everything; what it answered is what counts.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + timeout;
    let mut closed = false;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    RawAnswer {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// Sends raw bytes and reads until the server closes or `timeout` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw HTTP/1.1 answer.
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A second data plane (a replica) on the harness's database, serving on its own listener.
pub async fn replica(h: &Harness) -> (Arc<DataPlane>, SocketAddr) {
    let source = Arc::new(Source {
        store: h.db.store.clone(),
        token_lookups: AtomicUsize::new(0),
        full_loads: AtomicUsize::new(0),
        fail_loads: AtomicBool::new(false),
        feed_down: Arc::new(AtomicBool::new(false)),
        lost: Arc::default(),
        ledger_down: AtomicBool::new(false),
        leases: AtomicUsize::new(0),
    });
    let sink = Arc::new(Sink {
        store: h.db.store.clone(),
        failures: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        writes: AtomicUsize::new(0),
        stalled: AtomicBool::new(false),
        written: Mutex::default(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig {
        policy: loopback_policy(),
        extra_roots_pem: Some(h.ca.cert_pem().into_bytes()),
        own_addrs: vec![addr],
        audit_spill_path: dir.keep().join("audit.spill"),
        ..ProxyConfig::default()
    };
    let plane = Arc::new(
        airlock_proxy::start(config, h.seed.keyring.clone(), source, sink)
            .await
            .unwrap(),
    );
    tokio::spawn({
        let plane = plane.clone();
        async move {
            plane
                .serve(listener, std::future::pending(), Duration::from_secs(1))
                .await
        }
    });
    (plane, addr)
}
