//! Upstreams that cannot be trusted, reached or waited for (SECURITY #2, #3, #24).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

use std::time::{Duration, Instant};

use airlock_core::{AuthMechanism, UpstreamPolicy};
use airlock_testkit::tls::{self_signed_server_config, TestCa, ALPN_H2_HTTP11};
use airlock_testkit::{HttpResponse, RecordingUpstream, Reply, TestRequest, UpstreamOptions};
use support::{code, Harness, Options};

const SECRET: &str = "sk-live-real-upstream-key-0123456789";

/// A gateway to `endpoint`, a devbox and one POST through the proxy.
async fn through(h: &Harness, endpoint: &str) -> HttpResponse {
    let gateway = h
        .seed
        .gateway(endpoint, AuthMechanism::Bearer, Vec::new())
        .await;
    let secret = h.seed.secret(&support::unique_name(), SECRET).await;
    let (_, tokens) = h.seed.devbox(&["127.0.0.1"], &[(&gateway, &secret)]).await;
    TestRequest::post(&format!("{}/v1/x", h.url("")))
        .bearer(tokens[0].expose())
        .body("{}")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificates_get_no_request() {
    let h = Harness::sqlite().await;
    let self_signed = RecordingUpstream::start(UpstreamOptions::tls(self_signed_server_config(&[
        "localhost",
    ])))
    .await
    .unwrap();
    let wrong_name = RecordingUpstream::start(UpstreamOptions::tls(
        h.ca.server_config(&["other.example"], ALPN_H2_HTTP11),
    ))
    .await
    .unwrap();
    let other_ca = RecordingUpstream::start(UpstreamOptions::tls(
        TestCa::new().server_config(&["localhost"], ALPN_H2_HTTP11),
    ))
    .await
    .unwrap();
    for upstream in [&self_signed, &wrong_name, &other_ca] {
        let response = through(&h, &upstream.url()).await;
        assert_eq!(response.status, 502, "{}", response.text());
        assert_eq!(code(&response), "upstream_tls");
        assert!(
            upstream.connections() >= 1,
            "the test did not reach the upstream at all"
        );
        assert_eq!(upstream.tls_handshakes(), 0);
        assert!(upstream.requests().is_empty());
        assert!(!upstream.received_contains(SECRET.as_bytes()));
    }
    // The trusted upstream, for contrast, speaks HTTP/2 (ALPN) with the proxy.
    let response = through(&h, &h.upstream.url()).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        h.upstream.last_request().unwrap().version,
        http::Version::HTTP_2
    );
}

/// Addresses are checked when dialling, after DNS: `localhost` is loopback, refused unless the
/// policy allows it, and Airlock's own listener is never dialled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_are_checked_after_dns() {
    let h = Harness::start(
        support::sqlite().await,
        Options {
            configure: Box::new(|c| c.policy = UpstreamPolicy::default()),
            ..Options::default()
        },
    )
    .await;
    // The config names `localhost`, which passes the write-time check; it resolves to loopback.
    let response = through(&h, &h.upstream.url()).await;
    assert_eq!(response.status, 502, "{}", response.text());
    assert_eq!(code(&response), "upstream_forbidden");
    assert_eq!(h.upstream.connections(), 0);

    let h = Harness::sqlite().await;
    let own = format!("http://127.0.0.1:{}", h.proxy.port());
    let response = through(&h, &own).await;
    assert_eq!(response.status, 502, "{}", response.text());
    assert_eq!(code(&response), "upstream_forbidden");
    assert!(response.json().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("own listeners"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream() {
    let h = Harness::sqlite().await;
    let closed = airlock_testkit::free_port();
    let response = through(&h, &format!("https://localhost:{closed}")).await;
    assert_eq!(response.status, 502, "{}", response.text());
    assert_eq!(code(&response), "upstream_unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upstream_times_out_at_the_bound() {
    let h = Harness::start(
        support::sqlite().await,
        Options {
            configure: Box::new(|c| c.response_header_timeout = Duration::from_millis(700)),
            ..Options::default()
        },
    )
    .await;
    h.upstream.set_reply(Reply::Hang);
    let started = Instant::now();
    let response = through(&h, &h.upstream.url()).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status, 504, "{}", response.text());
    assert_eq!(code(&response), "upstream_timeout");
    assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(h.upstream.requests().len(), 1);
}

/// A connection that breaks after the request was sent is a 502, and the request is not sent
/// again (it may not be idempotent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_exchange_is_not_retried() {
    let h = Harness::sqlite().await;
    h.upstream.set_reply(Reply::Close);
    let response = through(&h, &h.upstream.url()).await;
    assert_eq!(response.status, 502, "{}", response.text());
    assert_eq!(code(&response), "upstream_failed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.upstream.requests().len(), 1);
}
