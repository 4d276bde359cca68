//! HTTP/1 framing attacks (SECURITY #8): whatever the parser makes of an ambiguous head, a second
//! request hidden in it never reaches the upstream as part of the first, and Airlock re-frames
//! what it forwards.
//!
//! hyper refuses two different Content-Lengths, a non-chunked Transfer-Encoding, obs-fold and a
//! space before the colon with 400. For Content-Length *and* Transfer-Encoding it follows
//! RFC 9112 §6.3 (Transfer-Encoding wins, the connection is closed after the response) rather
//! than answering 400; a bare LF is accepted as a line end. Both are pinned here as they are.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

use std::time::Duration;

use airlock_core::AuthMechanism;
use support::{raw, raw_status, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_do_not_reach_the_upstream() {
    let h = Harness::sqlite().await;
    let s = h.simple(AuthMechanism::Bearer, "sk-x").await;
    let t = s.token.expose();
    // The hidden request carries the token too, so that only framing can stop it.
    let hidden = format!("GET /smuggled HTTP/1.1\r\nHost: x\r\nx-api-key: {t}\r\n\r\n");
    let first = format!("Host: x\r\nx-api-key: {t}\r\n");
    for (name, request, status, closes) in [
        ("cl+te", format!("POST /a HTTP/1.1\r\n{first}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"), 200, true),
        ("te+cl", format!("POST /a HTTP/1.1\r\n{first}Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{hidden}"), 200, true),
        ("two cl", format!("POST /a HTTP/1.1\r\n{first}Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcd{hidden}"), 400, true),
        ("xchunked", format!("POST /a HTTP/1.1\r\n{first}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{hidden}"), 400, true),
        ("chunked, gzip", format!("POST /a HTTP/1.1\r\n{first}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n{hidden}"), 400, true),
        ("obs-fold", format!("GET /a HTTP/1.1\r\n{first}X-Foo: a\r\n b\r\n\r\n{hidden}"), 400, true),
        ("space before colon", format!("GET /a HTTP/1.1\r\n{first}X-Foo : a\r\n\r\n{hidden}"), 400, true),
    ] {
        h.upstream.clear();
        let answer = raw(h.proxy, request.as_bytes(), Duration::from_secs(3)).await;
        assert_eq!(raw_status(&answer), status, "{name}: {answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{name}: the hidden request was answered: {answer}");
        if closes && status == 200 {
            assert!(answer.to_ascii_lowercase().contains("connection: close"), "{name}: {answer}");
        }
        let paths: Vec<String> = h.upstream.requests().iter().map(|r| r.path_and_query()).collect();
        assert!(!paths.iter().any(|p| p.contains("smuggled")), "{name}: {paths:?}");
        assert!(paths.len() <= 1, "{name}: {paths:?}");
        // What was forwarded is re-framed: no Transfer-Encoding header travels upstream.
        for r in h.upstream.requests() {
            assert!(r.header_values("transfer-encoding").is_empty(), "{name}");
            assert_eq!(r.body_str(), "", "{name}");
        }
    }

    // Bare LF line ends: each request is parsed, checked and forwarded on its own.
    h.upstream.clear();
    let request =
        format!("GET /a HTTP/1.1\nHost: x\nx-api-key: {t}\n\nGET /b HTTP/1.1\nHost: x\n\n");
    let answer = raw(h.proxy, request.as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(
        answer.contains("missing_token"),
        "the second request was not checked on its own: {answer}"
    );
    let paths: Vec<String> = h
        .upstream
        .requests()
        .iter()
        .map(|r| r.path_and_query())
        .collect();
    assert_eq!(paths, ["/v1/a"]);
}
