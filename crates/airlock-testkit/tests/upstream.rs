//! The recording upstream: what it records over plain HTTP, TLS and HTTP/2, how its replies
//! reach a client (streamed, hanging, closed, redirected), and what it counts.

// Test code panics with the value on failure: that is its report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use airlock_testkit::tls::{self, TestCa};
use airlock_testkit::upstream::{self, RecordingUpstream, Reply, UpstreamOptions};
use airlock_testkit::TestRequest;
use bytes::Bytes;
use http::{Method, StatusCode, Version};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn plain_http_records_method_path_headers_and_body() -> anyhow::Result<()> {
    let upstream = RecordingUpstream::plain().await?;
    assert!(upstream.url().starts_with("http://127.0.0.1:"));

    let response = TestRequest::post(&format!("{}/v1/things?a=1&b=two", upstream.url()))
        .header("x-dup", "first")
        .header("X-Other", "o")
        .header("x-dup", "second")
        .header_bytes("x-raw", b"caf\xc3\xa9")
        .body("hello body")
        .send()
        .await?;
    assert_eq!(response.status, StatusCode::OK);
    let echo = response.json()?;
    assert_eq!(echo["ok"], true);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/v1/things");

    let requests = upstream.wait_for_requests(1, WAIT).await?;
    let req = &requests[0];
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.path_and_query(), "/v1/things?a=1&b=two");
    assert_eq!(req.query(), Some("a=1&b=two"));
    assert_eq!(req.version, Version::HTTP_11);
    assert_eq!(
        req.header_values("X-DUP"),
        vec![b"first".as_slice(), b"second"]
    );
    assert_eq!(req.header_str("x-other").as_deref(), Some("o"));
    assert_eq!(req.header_values("x-raw"), vec!["café".as_bytes()]);
    assert_eq!(req.body, Bytes::from("hello body"));
    assert!(req.body_complete);
    assert_eq!(req.peer.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(req.connection, 1);

    // contains_bytes looks at the request line, header names and values, and the body.
    for needle in ["b=two", "x-other", "second", "o body"] {
        assert!(req.contains_bytes(needle.as_bytes()), "{needle}");
    }
    assert!(!req.contains_bytes(b"absent"));
    let raw = upstream.raw_received();
    assert!(raw.starts_with(b"POST /v1/things?a=1&b=two HTTP/1.1\r\n"));
    assert!(upstream.received_contains(b"x-other: o\r\n"));
    assert_eq!(upstream.connections(), 1);
    assert_eq!(upstream.tls_handshakes(), 0);

    upstream.clear();
    assert!(upstream.requests().is_empty());
    assert_eq!(upstream.connections(), 0);
    Ok(())
}

#[tokio::test]
async fn tls_with_the_test_ca_records_over_http1_and_http2() -> anyhow::Result<()> {
    let ca = TestCa::new();
    let config = ca.server_config(&["localhost", "127.0.0.1"], tls::ALPN_H2_HTTP11);
    let upstream = RecordingUpstream::start(UpstreamOptions::tls(config)).await?;
    assert!(upstream.url().starts_with("https://localhost:"));

    // HTTP/1.1: the client offers no ALPN.
    let response = TestRequest::post(&format!("{}/v1/one", upstream.url()))
        .header("authorization", "Bearer real-key")
        .body("over tls")
        .tls(ca.client_config())
        .send()
        .await?;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.version, Version::HTTP_11);

    // HTTP/2, chosen by ALPN, to the IP address in the certificate.
    let response = TestRequest::get(&format!("{}/v1/two?x=y", upstream.ip_url()))
        .header("x-h2", "yes")
        .tls(ca.client_config_with_alpn(&[b"h2"]))
        .send()
        .await?;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.version, Version::HTTP_2);

    let requests = upstream.wait_for_requests(2, WAIT).await?;
    assert_eq!(requests[0].version, Version::HTTP_11);
    assert_eq!(requests[0].path(), "/v1/one");
    assert_eq!(
        requests[0].header_str("authorization").as_deref(),
        Some("Bearer real-key")
    );
    assert_eq!(requests[0].body_str(), "over tls");
    assert_eq!(requests[1].version, Version::HTTP_2);
    assert_eq!(requests[1].path_and_query(), "/v1/two?x=y");
    assert_eq!(requests[1].header_str("x-h2").as_deref(), Some("yes"));
    assert_ne!(requests[0].connection, requests[1].connection);
    assert_eq!(upstream.connections(), 2);
    assert_eq!(upstream.tls_handshakes(), 2);
    Ok(())
}

#[tokio::test]
async fn plain_http2_with_prior_knowledge() -> anyhow::Result<()> {
    let upstream = RecordingUpstream::plain().await?;
    let response = TestRequest::get(&format!("{}/h2c", upstream.url()))
        .http2_prior_knowledge()
        .send()
        .await?;
    assert_eq!(response.version, Version::HTTP_2);
    let requests = upstream.wait_for_requests(1, WAIT).await?;
    assert_eq!(requests[0].version, Version::HTTP_2);
    assert_eq!(requests[0].path(), "/h2c");
    Ok(())
}

#[tokio::test]
async fn a_self_signed_server_is_refused_by_a_client_trusting_the_test_ca() -> anyhow::Result<()> {
    let ca = TestCa::new();
    let upstream =
        RecordingUpstream::start(UpstreamOptions::tls(tls::self_signed_server_config(&[
            "localhost",
        ])))
        .await?;
    let err = TestRequest::get(&format!("{}/", upstream.url()))
        .tls(ca.client_config())
        .send()
        .await
        .expect_err("the certificate is not from the trusted CA");
    assert!(format!("{err:#}").contains("TLS handshake"), "{err:#}");
    assert_eq!(upstream.connections(), 1);
    assert_eq!(upstream.tls_handshakes(), 0);
    assert!(upstream.requests().is_empty());
    Ok(())
}

#[tokio::test]
async fn sse_events_arrive_as_separate_chunks_with_the_pauses() -> anyhow::Result<()> {
    let upstream = RecordingUpstream::plain().await?;
    let gap = Duration::from_millis(200);
    upstream.set_reply(Reply::sse(vec![
        (Duration::ZERO, "data: one\n\n".into()),
        (gap, "data: two\n\n".into()),
        (gap, "data: three\n\n".into()),
    ]));
    let response = TestRequest::get(&format!("{}/stream", upstream.url()))
        .send()
        .await?;
    assert_eq!(
        response.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let chunks: Vec<&[u8]> = response.chunks.iter().map(|(_, c)| c.as_ref()).collect();
    assert_eq!(
        chunks,
        vec![
            b"data: one\n\n".as_slice(),
            b"data: two\n\n",
            b"data: three\n\n"
        ]
    );
    // The last event cannot leave before both pauses have passed; the first leaves at once.
    // (A lower bound only: a busy machine may deliver late, never early.)
    let first = response.chunks[0].0;
    let last = response.chunks[2].0;
    assert!(
        last >= 2 * gap - Duration::from_millis(100),
        "first {first:?}, last {last:?}"
    );
    Ok(())
}

#[tokio::test]
async fn hang_close_and_redirect_replies() -> anyhow::Result<()> {
    let upstream = RecordingUpstream::plain().await?;

    upstream.set_reply(Reply::Hang);
    let err = TestRequest::get(&format!("{}/hang", upstream.url()))
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .expect_err("a hanging upstream never answers");
    assert!(
        format!("{err:#}").contains("no complete response"),
        "{err:#}"
    );

    upstream.set_reply(Reply::Close);
    TestRequest::get(&format!("{}/close", upstream.url()))
        .send()
        .await
        .expect_err("the connection closes without a response");

    upstream.set_reply(Reply::redirect(302, "https://elsewhere.example/next"));
    let response = TestRequest::get(&format!("{}/moved", upstream.url()))
        .send()
        .await?;
    assert_eq!(response.status, StatusCode::FOUND);
    assert_eq!(
        response.header("location").as_deref(),
        Some("https://elsewhere.example/next")
    );

    let paths: Vec<String> = upstream
        .wait_for_requests(3, WAIT)
        .await?
        .iter()
        .map(|r| r.path().to_owned())
        .collect();
    assert_eq!(paths, ["/hang", "/close", "/moved"]);
    Ok(())
}

#[tokio::test]
async fn counts_connections_that_send_nothing() -> anyhow::Result<()> {
    let upstream = RecordingUpstream::plain().await?;
    assert_eq!(upstream.connections(), 0);
    let stream = tokio::net::TcpStream::connect(upstream.addr()).await?;
    drop(stream);
    let deadline = tokio::time::Instant::now() + WAIT;
    while upstream.connections() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(upstream.connections(), 1);
    assert!(upstream.requests().is_empty());
    let err = upstream
        .wait_for_requests(1, Duration::from_millis(100))
        .await
        .expect_err("no request was sent");
    assert!(err.to_string().contains("got 0"), "{err}");
    Ok(())
}

#[tokio::test]
async fn records_the_source_address_and_a_streamed_request_body() -> anyhow::Result<()> {
    let upstream = RecordingUpstream::plain().await?;
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    TestRequest::post(&format!("{}/upload", upstream.url()))
        .from_ip(from)
        .body_chunks(vec![
            (Duration::ZERO, Bytes::from("part one;")),
            (Duration::from_millis(150), Bytes::from("part two")),
        ])
        .send()
        .await?;
    let req = &upstream.wait_for_requests(1, WAIT).await?[0];
    assert_eq!(req.peer.ip(), from);
    assert_eq!(req.body_str(), "part one;part two");
    assert_eq!(
        req.header_str("transfer-encoding").as_deref(),
        Some("chunked")
    );
    assert_eq!(req.body_chunks.len(), 2, "{:?}", req.body_chunks);
    Ok(())
}

#[tokio::test]
async fn custom_responder_sees_the_request() -> anyhow::Result<()> {
    let upstream = RecordingUpstream::start(UpstreamOptions::plain().responder(
        std::sync::Arc::new(|req: &upstream::RecordedRequest| {
            Reply::text(201, &format!("got {}", req.body_str())).with_header("x-seen", "1")
        }),
    ))
    .await?;
    let response = TestRequest::post(&upstream.url())
        .body("abc")
        .send()
        .await?;
    assert_eq!(response.status, StatusCode::CREATED);
    assert_eq!(response.text(), "got abc");
    assert_eq!(response.header("x-seen").as_deref(), Some("1"));
    Ok(())
}
