//! The listeners through the real binary: TLS on both planes with a test CA (and the official
//! OpenAI SDK over it), certificates replaced under traffic and on SIGHUP, PROXY protocol from
//! trusted and untrusted peers driving source binding, and the drain on SIGTERM (SECURITY #15,
//! #23).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_testkit::tls::{TestCa, ALPN_H2_HTTP11};
use airlock_testkit::upstream::{self, RecordingUpstream, Reply, Responder, UpstreamOptions};
use airlock_testkit::{airlock_binary, run_python, workspace_root, AirlockProcess, TestRequest};
use airlock_tests::{Airlock, ADMIN};
use http::{StatusCode, Version};
use proxy_header::{ProxiedAddress, ProxyHeader};
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};

const OPENAI_KEY: &str = "sk-openai-net-test-key-5a4b3c2d1e";

/// A certificate and key pair on disk for one listener.
struct CertPair {
    cert: PathBuf,
    key: PathBuf,
}

impl CertPair {
    fn new(dir: &Path, name: &str) -> CertPair {
        CertPair {
            cert: dir.join(format!("{name}-cert.pem")),
            key: dir.join(format!("{name}-key.pem")),
        }
    }

    /// Issues a new certificate for localhost and 127.0.0.1 and puts it in place the way a
    /// certificate manager does: each file written aside and renamed over the old one. Returns
    /// the leaf certificate.
    fn issue(&self, ca: &TestCa) -> CertificateDer<'static> {
        let (cert, key) = ca.issue_pem(&["localhost", "127.0.0.1"]);
        for (path, text) in [(&self.key, &key), (&self.cert, &cert)] {
            let aside = path.with_extension("new");
            std::fs::write(&aside, text).unwrap();
            std::fs::rename(&aside, path).unwrap();
        }
        leaf(&cert)
    }
}

fn leaf(pem: &str) -> CertificateDer<'static> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .expect("a certificate in the PEM text")
        .unwrap()
}

struct Rig {
    airlock: Airlock,
    ca: TestCa,
    dir: tempfile::TempDir,
    upstream: RecordingUpstream,
    token: String,
    devbox: String,
    env: Value,
}

struct RigOptions<'a> {
    proxy_tls: bool,
    api_tls: bool,
    responder: Responder,
    source_addresses: &'a [&'a str],
    extra: &'a [(&'a str, &'a str)],
}

impl Default for RigOptions<'_> {
    fn default() -> Self {
        RigOptions {
            proxy_tls: false,
            api_tls: false,
            responder: upstream::openai_chat(),
            source_addresses: &["127.0.0.1"],
            extra: &[],
        }
    }
}

/// Airlock on the embedded SQLite default, a TLS upstream imitating OpenAI, a secret, a gateway
/// and a devbox with an `OPENAI` token.
async fn rig(options: RigOptions<'_>) -> Rig {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_pem(dir.path());
    let upstream = RecordingUpstream::start(
        UpstreamOptions::tls(ca.server_config(&["localhost"], ALPN_H2_HTTP11))
            .responder(options.responder),
    )
    .await
    .unwrap();
    let mut env: Vec<(String, String)> = vec![
        ("AIRLOCK_ADMIN_TOKEN".into(), ADMIN.into()),
        (
            "AIRLOCK_UPSTREAM_CA_FILE".into(),
            ca_file.to_str().unwrap().into(),
        ),
        (
            "AIRLOCK_ALLOW_PRIVATE_UPSTREAMS".into(),
            "127.0.0.0/8".into(),
        ),
    ];
    for (on, name, prefix) in [
        (options.proxy_tls, "proxy", "AIRLOCK_PROXY_TLS"),
        (options.api_tls, "api", "AIRLOCK_API_TLS"),
    ] {
        if on {
            let pair = CertPair::new(dir.path(), name);
            pair.issue(&ca);
            env.push((
                format!("{prefix}_CERT_FILE"),
                pair.cert.to_str().unwrap().into(),
            ));
            env.push((
                format!("{prefix}_KEY_FILE"),
                pair.key.to_str().unwrap().into(),
            ));
        }
    }
    for (k, v) in options.extra {
        env.push(((*k).into(), (*v).into()));
    }
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let api_tls = options.api_tls.then(|| ca.client_config());
    let airlock = Airlock::start_with(&env_refs, api_tls).await;
    airlock
        .post(
            "/v1/secrets",
            json!({"name": "OPENAI_KEY", "value": OPENAI_KEY}),
        )
        .await;
    airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "openai", "endpoint": format!("https://localhost:{}/v1", upstream.addr().port()), "auth_mechanism": {"type": "bearer"}}),
        )
        .await;
    let devbox = airlock
        .post(
            "/v1/devboxes",
            json!({"source_addresses": options.source_addresses,
                   "gateways": {"OPENAI": {"gateway": "openai", "secret": "OPENAI_KEY"}}}),
        )
        .await;
    Rig {
        token: devbox["environment"]["OPENAI"].as_str().unwrap().to_owned(),
        devbox: devbox["id"].as_str().unwrap().to_owned(),
        env: devbox["environment"].clone(),
        airlock,
        ca,
        dir,
        upstream,
    }
}

impl Rig {
    fn proxy(&self, scheme: &str) -> String {
        match scheme {
            "https" => format!("https://localhost:{}", self.airlock.proxy_addr.port()),
            _ => format!("http://{}", self.airlock.proxy_addr),
        }
    }

    fn chat(&self, scheme: &str) -> TestRequest {
        TestRequest::post(&format!("{}/chat/completions", self.proxy(scheme)))
            .bearer(&self.token)
            .json(&json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}))
            .timeout(Duration::from_secs(10))
    }

    /// The request audit rows of the devbox.
    async fn audit(&self) -> Vec<Value> {
        let (status, v) = self
            .airlock
            .call(
                http::Method::GET,
                &format!("/v1/audit/requests?devbox_id={}&limit=100", self.devbox),
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v["requests"].as_array().unwrap().clone()
    }
}

#[tokio::test]
async fn tls_on_both_listeners_and_the_official_sdk() {
    let rig = rig(RigOptions {
        proxy_tls: true,
        api_tls: true,
        ..RigOptions::default()
    })
    .await;
    // `start_with` already reached `/readyz` over TLS; the control plane also speaks HTTP/2 by
    // ALPN, and nothing in plain text.
    let api = &rig.airlock.api;
    let healthz = TestRequest::get(&format!("{api}/healthz"))
        .tls(rig.ca.client_config_with_alpn(ALPN_H2_HTTP11))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status, StatusCode::OK);
    assert_eq!(healthz.version, Version::HTTP_2);
    let plain_api = api.replace("https://localhost", "http://127.0.0.1");
    assert!(
        TestRequest::get(&format!("{plain_api}/healthz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_err(),
        "the TLS control plane answered plain HTTP"
    );

    // The default public URL is https:// when the data plane has TLS.
    let url = rig.env["OPENAI_URL"].as_str().unwrap();
    assert_eq!(
        url,
        format!("https://{}", rig.airlock.proxy_addr),
        "{}",
        rig.env
    );

    // HTTP/2 and HTTP/1.1 by ALPN on the data plane.
    for (alpn, version) in [
        (ALPN_H2_HTTP11, Version::HTTP_2),
        (&[b"http/1.1".as_slice()][..], Version::HTTP_11),
    ] {
        let response = rig
            .chat("https")
            .tls(rig.ca.client_config_with_alpn(alpn))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        assert_eq!(response.version, version);
        assert!(response.server_cert.is_some());
    }
    assert!(
        rig.chat("http").send().await.is_err(),
        "the TLS data plane answered plain HTTP"
    );

    // The official OpenAI SDK, trusting the test CA through SSL_CERT_FILE.
    let ca_file = rig.dir.path().join("test-ca.pem");
    let out = run_python(
        &workspace_root().join("tests/python/openai_sdk.py"),
        &[
            ("OPENAI_URL", url),
            ("OPENAI", &rig.token),
            ("SSL_CERT_FILE", ca_file.to_str().unwrap()),
        ],
    )
    .await
    .unwrap();
    let stdout = airlock_testkit::check_python_output(&out).unwrap();
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(seen["text"].as_str().unwrap().contains("ping"), "{seen}");
    assert!(seen["stream"].as_array().unwrap().len() >= 3, "{seen}");
    assert_eq!(seen["tool"], "get_weather");
    assert_eq!(seen["error"], 429);
    for r in rig.upstream.requests() {
        assert_eq!(
            r.header_values("authorization"),
            vec![format!("Bearer {OPENAI_KEY}").as_bytes()]
        );
        assert!(!r.contains_bytes(b"gws_"));
    }
}

/// Replaces the data plane's certificate files while a client keeps making requests, each on a
/// new connection: no request fails, and new handshakes move to the new certificate.
#[tokio::test]
async fn certificate_reload_under_traffic() {
    let rig = rig(RigOptions {
        proxy_tls: true,
        extra: &[("AIRLOCK_TLS_RELOAD_INTERVAL", "1")],
        ..RigOptions::default()
    })
    .await;
    let pair = CertPair::new(rig.dir.path(), "proxy");
    let old = std::fs::read_to_string(&pair.cert).unwrap();
    let old = leaf(&old);

    let mut seen = Vec::new();
    let mut new = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after_new = 0;
    for i in 0.. {
        if i == 5 {
            new = Some(pair.issue(&rig.ca));
        }
        // A fresh client config per request: a shared one would resume the TLS session, and a
        // resumed session reports the certificate of the handshake it resumes.
        let response = rig.chat("https").tls(rig.ca.client_config()).send().await;
        let response = response.unwrap_or_else(|e| panic!("request {i} failed: {e:#}"));
        assert_eq!(response.status, StatusCode::OK, "request {i}");
        let cert = response.server_cert.unwrap();
        if Some(&cert) == new.as_ref() {
            after_new += 1;
        } else {
            assert_eq!(cert, old, "request {i}: a certificate that is neither");
            assert_eq!(after_new, 0, "request {i}: back to the old certificate");
        }
        seen.push(cert);
        if after_new >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 30 s\n{}",
            rig.airlock.process.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen[0], old);
    let log = rig.airlock.process.log();
    assert!(log.contains("loaded a new TLS certificate"), "{log}");
}

/// With polling off, SIGHUP alone reloads the control plane's certificate; the process lives on.
#[tokio::test]
async fn sighup_reloads_the_certificates() {
    let mut rig = rig(RigOptions {
        api_tls: true,
        extra: &[("AIRLOCK_TLS_RELOAD_INTERVAL", "0")],
        ..RigOptions::default()
    })
    .await;
    let pair = CertPair::new(rig.dir.path(), "api");
    let healthz =
        || TestRequest::get(&format!("{}/healthz", rig.airlock.api)).tls(rig.ca.client_config());
    let old = healthz().send().await.unwrap().server_cert.unwrap();
    let new = pair.issue(&rig.ca);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        healthz().send().await.unwrap().server_cert.unwrap(),
        old,
        "reloaded without SIGHUP while polling is off"
    );
    rig.airlock.process.signal("HUP").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = healthz().send().await.unwrap();
        assert_eq!(response.status, StatusCode::OK);
        if response.server_cert.unwrap() == new {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A broken file on SIGHUP keeps the current certificate and is logged.
    std::fs::write(&pair.key, "not a key").unwrap();
    rig.airlock.process.signal("HUP").unwrap();
    rig.airlock
        .process
        .wait_for_log(
            "cannot load the new TLS certificate; keeping the current one",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(healthz().send().await.unwrap().server_cert.unwrap(), new);
}

fn v1(source: &str) -> Vec<u8> {
    let ip: IpAddr = source.parse().unwrap();
    let family = if ip.is_ipv4() { "TCP4" } else { "TCP6" };
    let dst = if ip.is_ipv4() { "10.0.0.1" } else { "fd00::99" };
    format!("PROXY {family} {source} {dst} 40000 443\r\n").into_bytes()
}

fn v2(source: Option<&str>) -> Vec<u8> {
    let header = match source {
        None => ProxyHeader::with_local(),
        Some(source) => {
            let ip: IpAddr = source.parse().unwrap();
            let dst: SocketAddr = if ip.is_ipv4() {
                "10.0.0.1:443".parse().unwrap()
            } else {
                "[fd00::99]:443".parse().unwrap()
            };
            ProxyHeader::with_address(ProxiedAddress::stream(SocketAddr::new(ip, 40000), dst))
        }
    };
    let mut buf = Vec::new();
    header.encode_v2(&mut buf).unwrap();
    buf
}

/// A load balancer at 127.0.0.1 is trusted; the devbox is bound to 10.1.2.3 and fd00:1::/64.
/// The PROXY header (before TLS) decides the caller; from 127.0.0.2, which is not trusted, a
/// PROXY header closes the connection and nothing reaches the upstream.
#[tokio::test]
async fn proxy_protocol_drives_source_binding() {
    let rig = rig(RigOptions {
        proxy_tls: true,
        source_addresses: &["10.1.2.3", "fd00:1::/64"],
        extra: &[("AIRLOCK_TRUSTED_PROXIES", "127.0.0.1/32")],
        ..RigOptions::default()
    })
    .await;
    let tls = rig.ca.client_config_with_alpn(ALPN_H2_HTTP11);
    let lb: IpAddr = "127.0.0.1".parse().unwrap();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("v1 naming the devbox", v1("10.1.2.3"), 200),
        ("v1 naming another address", v1("10.1.2.4"), 403),
        ("v1 TCP6 naming the devbox", v1("fd00:1::7"), 200),
        ("v2 naming the devbox", v2(Some("10.1.2.3")), 200),
        ("v2 naming another address", v2(Some("10.9.9.9")), 403),
        ("v2 TCP6 naming the devbox", v2(Some("fd00:1::8")), 200),
        ("v2 TCP6 naming another address", v2(Some("fd00:2::8")), 403),
        // LOCAL: the balancer's own connection, so the caller is 127.0.0.1, not the devbox.
        ("v2 LOCAL", v2(None), 403),
    ];
    for (name, header, expected) in &cases {
        let response = rig
            .chat("https")
            .from_ip(lb)
            .prelude(header.clone())
            .tls(tls.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(
            response.status.as_u16(),
            *expected,
            "{name}: {}",
            response.text()
        );
    }
    let forwarded = rig.upstream.requests().len();
    assert_eq!(forwarded, 4);

    // From the trusted balancer the header is required.
    let missing = rig.chat("https").from_ip(lb).tls(tls.clone()).send().await;
    assert!(missing.is_err(), "served without a PROXY header");

    // From an untrusted peer: connection closed, whatever follows the header.
    let untrusted: IpAddr = "127.0.0.2".parse().unwrap();
    for (scheme, header) in [
        ("https", v1("10.1.2.3")),
        ("https", v2(Some("10.1.2.3"))),
        ("http", v1("10.1.2.3")),
    ] {
        let refused = rig
            .chat(scheme)
            .from_ip(untrusted)
            .prelude(header)
            .tls(tls.clone())
            .send()
            .await;
        assert!(refused.is_err(), "an untrusted PROXY header was served");
    }
    // Without a header, an untrusted peer is identified by its own address.
    let direct = rig
        .chat("https")
        .from_ip(untrusted)
        .tls(tls.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status.as_u16(), 403);
    assert_eq!(
        rig.upstream.requests().len(),
        forwarded,
        "the upstream got more"
    );
    assert!(!rig.upstream.received_contains(b"PROXY"));

    // The audit trail records the address the header named.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = rig.audit().await;
        let mut addrs: Vec<(String, u64)> = rows
            .iter()
            .map(|r| {
                (
                    r["client_addr"].as_str().unwrap().to_owned(),
                    r["status"].as_u64().unwrap(),
                )
            })
            .collect();
        addrs.sort();
        if addrs.len() == 9 {
            let served: Vec<&str> = addrs
                .iter()
                .filter(|(_, status)| *status == 200)
                .map(|(addr, _)| addr.as_str())
                .collect();
            assert_eq!(
                served,
                ["10.1.2.3", "10.1.2.3", "fd00:1::7", "fd00:1::8"],
                "{addrs:?}"
            );
            let refused: Vec<&str> = addrs
                .iter()
                .filter(|(_, status)| *status == 403)
                .map(|(addr, _)| addr.as_str())
                .collect();
            assert_eq!(
                refused,
                [
                    "10.1.2.4",
                    "10.9.9.9",
                    "127.0.0.1",
                    "127.0.0.2",
                    "fd00:2::8"
                ],
                "{addrs:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "audit rows: {addrs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn sse_events(n: usize, gap_ms: u64) -> Responder {
    let events: Vec<(Duration, String)> = (0..n)
        .map(|i| {
            (
                Duration::from_millis(gap_ms),
                format!("data: {{\"n\": {i}}}\n\n"),
            )
        })
        .collect();
    Arc::new(move |_: &upstream::RecordedRequest| Reply::sse(events.clone()))
}

fn stream_request(rig: &Rig) -> TestRequest {
    TestRequest::get(&format!("{}/stream", rig.proxy("http")))
        .bearer(&rig.token)
        .timeout(Duration::from_secs(60))
}

async fn wait_upstream(rig: &Rig, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.upstream.requests().len() < n {
        assert!(Instant::now() < deadline, "the streams never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SECURITY #23: SIGTERM during two SSE streams. `/readyz` turns 503 at once, new connections
/// are refused, both streams finish complete, the audit queue is flushed, and the exit is 0.
#[tokio::test]
async fn sigterm_drains_open_streams() {
    const EVENTS: usize = 40;
    let mut rig = rig(RigOptions {
        responder: sse_events(EVENTS, 100),
        extra: &[("AIRLOCK_SHUTDOWN_GRACE", "30")],
        ..RigOptions::default()
    })
    .await;
    let streams: Vec<_> = (0..2)
        .map(|_| tokio::spawn(stream_request(&rig).send()))
        .collect();
    wait_upstream(&rig, 2).await;
    assert_eq!(readyz(&rig).await, 200);
    rig.airlock.process.signal("TERM").unwrap();

    // During the drain: not ready, and the data plane takes no new connection.
    let deadline = Instant::now() + Duration::from_secs(2);
    while readyz(&rig).await != 503 {
        assert!(Instant::now() < deadline, "/readyz did not turn 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(rig.airlock.proxy_addr)
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "the data plane still accepts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        rig.airlock.process.try_status().is_none(),
        "exited before the streams ended"
    );

    for stream in streams {
        let response = stream.await.unwrap().unwrap();
        assert_eq!(response.status, StatusCode::OK);
        let text = response.text();
        for i in 0..EVENTS {
            assert!(
                text.contains(&format!("data: {{\"n\": {i}}}\n\n")),
                "event {i} lost: {text}"
            );
        }
    }
    let status = rig
        .airlock
        .process
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", rig.airlock.process.log());

    // The audit queue went to the database before the exit, not to the spill file.
    let spill = rig
        .airlock
        .process
        .workdir()
        .join("airlock-data/audit-spill.jsonl");
    let spilled = std::fs::read(&spill).unwrap_or_default();
    assert!(spilled.is_empty(), "events were spilled instead of flushed");
    rig.airlock.process.respawn().unwrap();
    rig.airlock
        .process
        .wait_http_ok(
            &format!("{}/readyz", rig.airlock.api),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let rows = rig.audit().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in rows {
        assert_eq!(row["status"], 200, "{row}");
    }
}

async fn readyz(rig: &Rig) -> u16 {
    TestRequest::get(&format!("{}/readyz", rig.airlock.api))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map(|r| r.status.as_u16())
        .unwrap_or(0)
}

/// A second SIGTERM during the drain exits at once, with status 1, long before the stream or
/// the grace period would have ended.
#[tokio::test]
async fn a_second_sigterm_exits_at_once() {
    let mut rig = rig(RigOptions {
        responder: sse_events(600, 100),
        extra: &[("AIRLOCK_SHUTDOWN_GRACE", "120")],
        ..RigOptions::default()
    })
    .await;
    let stream = tokio::spawn(stream_request(&rig).send());
    wait_upstream(&rig, 1).await;
    rig.airlock.process.signal("TERM").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while readyz(&rig).await != 503 {
        assert!(Instant::now() < deadline, "/readyz did not turn 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(rig.airlock.process.try_status().is_none());
    rig.airlock.process.signal("TERM").unwrap();
    let status = rig
        .airlock
        .process
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1));
    rig.airlock
        .process
        .wait_for_log("second signal: exiting now", Duration::from_secs(1))
        .await
        .unwrap();
    let cut = stream.await.unwrap();
    assert!(
        cut.is_err() || cut.unwrap().text().matches("data:").count() < 600,
        "the stream ran to its end"
    );
}

/// TLS settings that cannot be used stop the start with a line naming the setting.
#[tokio::test]
async fn unusable_tls_settings_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let pair = CertPair::new(dir.path(), "proxy");
    pair.issue(&ca);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let cert = pair.cert.to_str().unwrap();
    let key = pair.key.to_str().unwrap();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("AIRLOCK_PROXY_TLS_CERT_FILE", cert)],
            "AIRLOCK_PROXY_TLS_KEY_FILE: must be set together with AIRLOCK_PROXY_TLS_CERT_FILE",
        ),
        (
            vec![("AIRLOCK_API_TLS_KEY_FILE", key)],
            "AIRLOCK_API_TLS_CERT_FILE: must be set together with AIRLOCK_API_TLS_KEY_FILE",
        ),
        (
            vec![
                ("AIRLOCK_API_TLS_CERT_FILE", garbage.to_str().unwrap()),
                ("AIRLOCK_API_TLS_KEY_FILE", key),
            ],
            "AIRLOCK_API_TLS_CERT_FILE",
        ),
        (
            vec![
                ("AIRLOCK_PROXY_TLS_CERT_FILE", cert),
                ("AIRLOCK_PROXY_TLS_KEY_FILE", "/nonexistent/key.pem"),
            ],
            "AIRLOCK_PROXY_TLS_KEY_FILE: cannot read /nonexistent/key.pem",
        ),
        (
            vec![("AIRLOCK_TLS_RELOAD_INTERVAL", "soon")],
            "AIRLOCK_TLS_RELOAD_INTERVAL: \"soon\" is not a number of seconds",
        ),
    ];
    for (env, expected) in cases {
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        env.push(("AIRLOCK_ADMIN_TOKEN".into(), ADMIN.into()));
        env.push((
            "AIRLOCK_API_ADDR".into(),
            airlock_testkit::free_addr().to_string(),
        ));
        env.push((
            "AIRLOCK_PROXY_ADDR".into(),
            airlock_testkit::free_addr().to_string(),
        ));
        let mut process = AirlockProcess::spawn(&airlock_binary(), &["serve"], env).unwrap();
        let status = process.wait_exit(Duration::from_secs(30)).await.unwrap();
        assert!(!status.success());
        let log = process.log();
        assert!(log.contains(expected), "expected {expected:?} in:\n{log}");
    }
}
