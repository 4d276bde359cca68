//! The request audit trail: one row per request with the right numbers, and none lost when the
//! audit sink fails for a while or the data plane restarts in between.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::AuthMechanism;
use airlock_testkit::upstream::Responder;
use airlock_testkit::{RecordedRequest, Reply, TestRequest};
use bytes::Bytes;
use support::{Db, Harness, Options};

const SECRET: &str = "sk-live-real-upstream-key-0123456789";

fn header_key() -> AuthMechanism {
    AuthMechanism::Header {
        key: "x-api-key".into(),
    }
}

fn responder() -> Responder {
    Arc::new(|req: &RecordedRequest| {
        if req.path().ends_with("/missing") {
            Reply::text(404, "no such thing")
        } else {
            Reply::text(200, "hello, world")
        }
    })
}

async fn rows_equal_requests(db: Db) {
    let h = Harness::start(
        db,
        Options {
            responder: Some(responder()),
            ..Options::default()
        },
    )
    .await;
    let s = h.simple(header_key(), SECRET).await;
    let t = s.token.expose();
    for i in 0..6 {
        let r = TestRequest::post(&h.url(&format!("/ok/{i}?secret-ish=query")))
            .header("x-api-key", t)
            .body("0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    for _ in 0..2 {
        let r = TestRequest::get(&h.url("/missing"))
            .header("x-api-key", t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 404);
    }
    let r = TestRequest::get(&h.url("/elsewhere"))
        .header("x-api-key", t)
        .from_ip("127.0.0.2".parse().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 403);

    let seed = h.seed.clone();
    let all_there = Harness::eventually(Duration::from_secs(5), || {
        let seed = seed.clone();
        async move { seed.request_events().await.len() >= 9 }
    })
    .await;
    assert!(all_there);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = h.seed.request_events().await;
    assert_eq!(events.len(), 9);
    let ok: Vec<_> = events.iter().filter(|e| e.status == 200).collect();
    assert_eq!(ok.len(), 6);
    for e in &ok {
        assert_eq!(e.upstream_status, Some(200));
        assert_eq!(e.method, "POST");
        assert!(
            e.path.starts_with("/ok/") && !e.path.contains('?'),
            "{}",
            e.path
        );
        assert_eq!(e.bytes_in, 10);
        assert_eq!(e.bytes_out, 12);
        assert!(e.latency_us > 0 && e.ttfb_us.is_some_and(|t| t <= e.latency_us));
        assert_eq!(e.devbox_id.as_ref(), Some(&s.devbox.id));
        assert_eq!(e.gateway_config_id.as_ref(), Some(&s.gateway.id));
        assert_eq!(e.secret_id.as_ref(), Some(&s.secret.id));
        assert_eq!(e.secret_version, Some(1));
        assert!(e.token_id.is_some());
        assert_eq!(e.client_addr.to_string(), "127.0.0.1");
        assert_eq!(e.error_code, None);
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| e.status == 404 && e.upstream_status == Some(404))
            .count(),
        2
    );
    let refused: Vec<_> = events.iter().filter(|e| e.status == 403).collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(
        refused[0].error_code.as_deref(),
        Some("address_not_allowed")
    );
    assert_eq!(refused[0].upstream_status, None);
    assert_eq!(refused[0].client_addr.to_string(), "127.0.0.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_equal_requests_sqlite() {
    rows_equal_requests(support::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_equal_requests_postgres() {
    rows_equal_requests(support::postgres().await).await;
}

/// The sink fails several writes in a row: the events wait in the spill file and arrive once it
/// works again, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_loses_nothing() {
    let h = Harness::start(
        support::sqlite().await,
        Options {
            sink_failures: 3,
            ..Options::default()
        },
    )
    .await;
    let s = h.simple(header_key(), SECRET).await;
    let n = 30;
    for i in 0..n {
        let r = support::get(&h, &format!("/{i}"), &s.token).await;
        assert_eq!(r.status, 200);
        if i % 10 == 9 {
            // Let the writer take a batch (and fail on it).
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let seed = h.seed.clone();
    let all = Harness::eventually(Duration::from_secs(20), || {
        let seed = seed.clone();
        async move { seed.request_events().await.len() >= n }
    })
    .await;
    assert!(
        h.sink.failed.load(Ordering::SeqCst) >= 1,
        "the sink never failed; the test proves nothing"
    );
    assert!(
        all,
        "only {} of {n} events arrived",
        h.seed.request_events().await.len()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = h.seed.request_events().await;
    assert_eq!(events.len(), n);
    let mut paths: Vec<String> = events.iter().map(|e| e.path.clone()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), n);
    assert!(std::fs::metadata(&h.spill).map_or(true, |m| m.len() == 0));
}

/// Events that could not be written before a clean shutdown are in the spill file (with no
/// token or secret in it), and the next data plane writes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spill_file_survives_a_restart() {
    let spill_dir = tempfile::tempdir().unwrap();
    let spill = spill_dir.path().join("audit.spill");
    let configure_spill = {
        let spill = spill.clone();
        move || {
            let spill = spill.clone();
            Box::new(move |c: &mut airlock_proxy::ProxyConfig| c.audit_spill_path = spill)
                as Box<dyn FnOnce(&mut _) + Send>
        }
    };
    let mut first = Harness::start(
        support::sqlite().await,
        Options {
            sink_failures: usize::MAX,
            configure: configure_spill(),
            ..Options::default()
        },
    )
    .await;
    let s = first.simple(header_key(), SECRET).await;
    for i in 0..5 {
        assert_eq!(
            support::get(&first, &format!("/{i}"), &s.token)
                .await
                .status,
            200
        );
    }
    first.stop().await;
    let text = std::fs::read_to_string(&spill).unwrap();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(!text.contains("gws_") && !text.contains(SECRET) && !text.contains(s.token.expose()));
    assert!(first.seed.request_events().await.is_empty());

    let again = airlock_store::Store::connect(&first.db.url).await.unwrap();
    let second = Harness::start(
        Db {
            store: again,
            url: first.db.url.clone(),
            _dir: None,
        },
        Options {
            configure: configure_spill(),
            ..Options::default()
        },
    )
    .await;
    let seed = first.seed.clone();
    let replayed = Harness::eventually(Duration::from_secs(10), || {
        let seed = seed.clone();
        async move { seed.request_events().await.len() == 5 }
    })
    .await;
    assert!(replayed);
    assert!(std::fs::metadata(&spill).map_or(true, |m| m.len() == 0));
    drop(second);
}

/// A client that goes away in the middle of a stream still leaves its event, marked as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_is_recorded() {
    let events: Vec<(Duration, String)> = (0..50)
        .map(|i| (Duration::from_millis(100), format!("data: {i}\n\n")))
        .collect();
    let responder: Responder = Arc::new(move |_: &RecordedRequest| Reply::sse(events.clone()));
    let h = Harness::start(
        support::sqlite().await,
        Options {
            responder: Some(responder),
            ..Options::default()
        },
    )
    .await;
    let s = h.simple(header_key(), SECRET).await;

    let stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let request = http::Request::builder()
        .uri("/stream")
        .header("host", "localhost")
        .header("x-api-key", s.token.expose())
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let mut response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    use http_body_util::BodyExt;
    let first = response.body_mut().frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(response);
    drop(sender);
    conn.abort();

    let seed = h.seed.clone();
    let recorded = Harness::eventually(Duration::from_secs(5), || {
        let seed = seed.clone();
        async move {
            seed.request_events()
                .await
                .iter()
                .any(|e| e.error_code.as_deref() == Some("client_disconnected"))
        }
    })
    .await;
    assert!(recorded);
    let events = h.seed.request_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].status, 200);
    assert!(events[0].bytes_out > 0 && events[0].bytes_out < 50 * 9);
}

/// A client that goes away while the upstream is still thinking: the upstream request is
/// dropped with it (no waiting for the 300 s bound) and the event says 499.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_the_response_is_recorded_at_once() {
    let h = Harness::sqlite().await;
    h.upstream.set_reply(Reply::Hang);
    let s = h.simple(header_key(), SECRET).await;
    let request = format!(
        "POST /slow HTTP/1.1\r\nHost: x\r\nx-api-key: {}\r\nContent-Length: 2\r\n\r\n{{}}",
        s.token.expose()
    );
    let answer = support::raw(h.proxy, request.as_bytes(), Duration::from_millis(300)).await;
    assert_eq!(answer, "", "the hanging upstream answered");
    let seed = h.seed.clone();
    let recorded = Harness::eventually(Duration::from_secs(3), || {
        let seed = seed.clone();
        async move { !seed.request_events().await.is_empty() }
    })
    .await;
    assert!(
        recorded,
        "no event: the request is still waiting on the upstream"
    );
    let events = h.seed.request_events().await;
    assert_eq!(events[0].status, 499);
    assert_eq!(events[0].error_code.as_deref(), Some("client_disconnected"));
    assert_eq!(events[0].bytes_in, 2);
    assert_eq!(h.upstream.requests().len(), 1);
}
