//! Many replicas: one control plane and two data planes over one Postgres, each started with the
//! environment `deploy/compose.yaml` gives it (addresses, database and key file swapped for
//! local ones). A rotation and a shutdown reach both data planes; a Postgres restart under load
//! is survived by both; killing one data plane under load loses only the requests it had in
//! flight, while the other serves every request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_testkit::upstream::{RecordingUpstream, Reply};
use airlock_testkit::{airlock_binary, free_addr, AirlockProcess, TestRequest};
use airlock_tests::{compose_env, compose_file, ADMIN};
use serde_json::{json, Value};

const KEY_V1: &str = "sk-ha-first-0123456789";
const KEY_V2: &str = "sk-ha-second-9876543210";
const KEY_V3: &str = "sk-ha-third-5555555555";

/// The upstream's answer: the response head at once, the body 40 ms later, so that requests are
/// really in flight when a replica is killed.
fn slow_reply() -> Reply {
    Reply::Stream {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        chunks: vec![(
            Duration::from_millis(40),
            br#"{"object":"chat.completion","choices":[]}"#.to_vec().into(),
        )],
    }
}

struct Process {
    process: AirlockProcess,
    /// The control plane's or the data plane's base URL.
    url: String,
    ops: String,
}

/// Starts one compose service's process with its compose environment, localised.
async fn start_service(
    service: &str,
    database_url: &str,
    key_file: &str,
    public_url: Option<&str>,
) -> Process {
    let compose = compose_file();
    let mut env: BTreeMap<String, String> = compose_env(&compose["services"][service]);
    assert!(!env.is_empty(), "compose.yaml has no service {service}");
    let mut url = String::new();
    for (name, value) in env.iter_mut() {
        if name.ends_with("_ADDR") {
            let addr = free_addr();
            *value = addr.to_string();
            if name == "AIRLOCK_API_ADDR" || name == "AIRLOCK_PROXY_ADDR" {
                url = format!("http://{addr}");
            }
        }
    }
    env.insert("AIRLOCK_DATABASE_URL".into(), database_url.into());
    env.insert("AIRLOCK_MASTER_KEY_FILE".into(), key_file.into());
    // The test's upstream is on loopback rather than the compose network.
    env.insert(
        "AIRLOCK_ALLOW_PRIVATE_UPSTREAMS".into(),
        "127.0.0.0/8".into(),
    );
    env.insert("AIRLOCK_LOG".into(), "info,airlock=debug".into());
    if env["AIRLOCK_ROLE"] == "control" {
        env.insert("AIRLOCK_ADMIN_TOKEN".into(), ADMIN.into());
        env.insert("AIRLOCK_PUBLIC_URL".into(), public_url.unwrap().into());
    }
    let ops = format!("http://{}", env["AIRLOCK_METRICS_ADDR"]);
    let mut process =
        AirlockProcess::spawn(&airlock_binary(), &["serve"], env.into_iter().collect()).unwrap();
    process
        .wait_http_ok(&format!("{ops}/readyz"), Duration::from_secs(60))
        .await
        .unwrap();
    Process { process, url, ops }
}

async fn api(control: &Process, path: &str, body: Value) -> Value {
    let resp = TestRequest::post(&format!("{}{path}", control.url))
        .bearer(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status.as_u16(), 200, "POST {path}: {}", resp.text());
    resp.json().unwrap()
}

async fn call(proxy: &str, token: &str) -> anyhow::Result<u16> {
    Ok(TestRequest::post(&format!("{proxy}/chat/completions"))
        .bearer(token)
        .json(&json!({"model": "m", "messages": []}))
        .timeout(Duration::from_secs(10))
        .send()
        .await?
        .status
        .as_u16())
}

/// Sends probes to one replica until the upstream sees `key` from it (at most a second);
/// returns how many it sent.
async fn wait_for_key(proxy: &str, token: &str, upstream: &RecordingUpstream, key: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut sent = 0;
    loop {
        assert_eq!(call(proxy, token).await.unwrap(), 200);
        sent += 1;
        let seen = upstream.last_request().unwrap().header_str("authorization");
        if seen.as_deref() == Some(format!("Bearer {key}").as_str()) {
            return sent;
        }
        assert!(
            Instant::now() < deadline,
            "{proxy} still uses the old key after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One request's fate under load.
#[derive(Clone, Debug)]
struct Outcome {
    replica: usize,
    started: Instant,
    ended: Instant,
    status: Option<u16>,
}

/// Four workers per replica sending requests back to back until `stop`; a worker on a replica
/// stops at its first failed connection (a load balancer would send it elsewhere).
fn load(
    proxies: &[String],
    token: &str,
    stop: &Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<Outcome>>>, Vec<tokio::task::JoinHandle<()>>) {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (replica, proxy) in proxies.iter().enumerate() {
        for _ in 0..4 {
            let (proxy, token, stop, outcomes) = (
                proxy.clone(),
                token.to_owned(),
                stop.clone(),
                outcomes.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let status = call(&proxy, &token).await.ok();
                    outcomes.lock().unwrap().push(Outcome {
                        replica,
                        started,
                        ended: Instant::now(),
                        status,
                    });
                    if status.is_none() {
                        return;
                    }
                }
            }));
        }
    }
    (outcomes, tasks)
}

async fn audited(control: &Process, devbox: &str) -> u64 {
    let resp = TestRequest::get(&format!(
        "{}/v1/audit/requests?devbox_id={devbox}&limit=1",
        control.url
    ))
    .bearer(ADMIN)
    .send()
    .await
    .unwrap();
    resp.json().unwrap()["total_count"].as_u64().unwrap()
}

#[tokio::test]
async fn one_control_plane_and_two_data_planes_on_one_postgres() {
    let cluster = airlock_testkit::pg::PgCluster::start().await.unwrap();
    let database_url = cluster.fresh_database().await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("master.key");
    let generated = std::process::Command::new(airlock_binary())
        .args(["keys", "generate"])
        .env_clear()
        .output()
        .unwrap();
    std::fs::write(&key_file, &generated.stdout).unwrap();
    let key_file = key_file.to_str().unwrap().to_owned();

    let upstream = RecordingUpstream::plain().await.unwrap();
    upstream.set_reply(slow_reply());
    let control = start_service(
        "control",
        &database_url,
        &key_file,
        Some("http://sandbox-lb"),
    )
    .await;
    api(
        &control,
        "/v1/secrets",
        json!({"name": "KEY", "value": KEY_V1}),
    )
    .await;
    api(
        &control,
        "/v1/gateway-configs",
        json!({"name": "llm", "endpoint": upstream.url(), "auth_mechanism": {"type": "bearer"}}),
    )
    .await;
    let devbox = |name: &str| {
        json!({"name": name, "source_addresses": ["127.0.0.1"],
               "gateways": {"LLM": {"gateway": "llm", "secret": "KEY"}}})
    };
    let busy = api(&control, "/v1/devboxes", devbox("busy")).await;
    let doomed = api(&control, "/v1/devboxes", devbox("doomed")).await;
    let busy_token = busy["environment"]["LLM"].as_str().unwrap().to_owned();
    let doomed_token = doomed["environment"]["LLM"].as_str().unwrap().to_owned();
    let busy_id = busy["id"].as_str().unwrap().to_owned();
    assert_eq!(busy["environment"]["LLM_URL"], "http://sandbox-lb");

    let mut a = start_service("proxy-a", &database_url, &key_file, None).await;
    let b = start_service("proxy-b", &database_url, &key_file, None).await;
    let proxies = [a.url.clone(), b.url.clone()];
    // The data planes serve no control-plane API.
    let stray = TestRequest::get(&format!("{}/v1/secrets", a.url))
        .bearer(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(stray.status.as_u16(), 401, "{}", stray.text());
    for p in &proxies {
        assert_eq!(call(p, &busy_token).await.unwrap(), 200);
        assert_eq!(call(p, &doomed_token).await.unwrap(), 200);
    }
    // Requests with the busy devbox's token that got an answer: each must be audited.
    let mut sent: u64 = 2;

    // A rotation reaches both replicas.
    api(&control, "/v1/secrets/KEY", json!({"value": KEY_V2})).await;
    for p in &proxies {
        sent += wait_for_key(p, &busy_token, &upstream, KEY_V2).await;
    }

    // A shutdown reaches both replicas; the other devbox is unaffected.
    api(
        &control,
        &format!("/v1/devboxes/{}/shutdown", doomed["id"].as_str().unwrap()),
        json!({}),
    )
    .await;
    for p in &proxies {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let status = call(p, &doomed_token).await.unwrap();
            if status == 403 || status == 401 {
                break;
            }
            assert_eq!(status, 200);
            assert!(
                Instant::now() < deadline,
                "{p} still serves a shut-down devbox"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(call(p, &busy_token).await.unwrap(), 200);
        sent += 1;
    }

    // A Postgres restart under load: both replicas answer every request, and afterwards both
    // follow changes again without a restart of their own.
    let stop = Arc::new(AtomicBool::new(false));
    let (outcomes, tasks) = load(&proxies, &busy_token, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.restart().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let during = outcomes.lock().unwrap().clone();
    for replica in 0..2 {
        let mine: Vec<_> = during.iter().filter(|o| o.replica == replica).collect();
        assert!(
            mine.len() > 8,
            "replica {replica} served only {} requests",
            mine.len()
        );
        assert!(
            mine.iter().all(|o| o.status == Some(200)),
            "replica {replica} failed requests during the Postgres restart: {:?}",
            mine.iter()
                .filter(|o| o.status != Some(200))
                .collect::<Vec<_>>()
        );
    }
    sent += during.len() as u64;
    api(&control, "/v1/secrets/KEY", json!({"value": KEY_V3})).await;
    for p in &proxies {
        sent += wait_for_key(p, &busy_token, &upstream, KEY_V3).await;
    }

    // Kill replica A (SIGKILL) under load.
    let stop = Arc::new(AtomicBool::new(false));
    let (outcomes, tasks) = load(&proxies, &busy_token, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    a.process.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    let on = |r: usize| outcomes.iter().filter(move |o| o.replica == r);
    assert!(
        on(1).all(|o| o.status == Some(200)),
        "replica B failed a request"
    );
    assert!(
        on(1).filter(|o| o.started > killed_at).count() > 4,
        "B kept serving after A died"
    );
    for o in on(0) {
        if o.ended < killed_at {
            assert_eq!(
                o.status,
                Some(200),
                "A failed a request before it was killed"
            );
        } else if o.status.is_none() {
            // Lost: it was in flight at the kill, or it found A gone.
            assert!(o.ended >= killed_at);
        }
    }
    let lost = on(0).filter(|o| o.status.is_none()).count();
    let in_flight = on(0)
        .filter(|o| o.started < killed_at && o.ended >= killed_at)
        .count();
    assert_eq!(lost, 4, "each of the 4 workers on A fails once, then stops");
    eprintln!(
        "SIGKILL of replica A: {in_flight} request(s) in flight, {lost} lost; B served all {}",
        on(1).count()
    );

    // The audit trail: every request answered by a replica that stayed up is there; replica A
    // may have lost what it had not yet written (at most its last 200 ms batch).
    let expected = sent + outcomes.iter().filter(|o| o.status.is_some()).count() as u64;
    let unwritten = on(0)
        .filter(|o| o.status.is_some() && o.ended + Duration::from_millis(300) >= killed_at)
        .count() as u64;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut rows = audited(&control, &busy_id).await;
    while rows < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rows = audited(&control, &busy_id).await;
    }
    eprintln!("audit: {rows} rows for {expected} answered requests ({unwritten} answered by A in its last 300 ms)");
    assert!(
        rows <= expected,
        "more audit rows ({rows}) than requests ({expected})"
    );
    assert!(
        rows + unwritten >= expected,
        "audit rows {rows}: more lost than A's unwritten batch ({expected} - {unwritten})"
    );
    // The surviving replica's metrics saw the traffic.
    let metrics = TestRequest::get(&format!("{}/metrics", b.ops))
        .send()
        .await
        .unwrap();
    assert!(
        metrics.text().contains("airlock_proxy_requests_total"),
        "{}",
        metrics.text()
    );
    drop(b);
    drop(control);
}
