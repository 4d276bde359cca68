//! What reaches the upstream, and what comes back: the token is gone, the real credential is the
//! only one, hop-by-hop headers are stripped, the upstream is the gateway config's whatever the
//! request says, bodies stream, redirects and reflected secrets are handled (SECURITY #1, #4–#7,
//! #10, #12).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

use std::sync::Arc;
use std::time::Duration;

use airlock_core::{AuthMechanism, CustomHeader, HeaderSource};
use airlock_testkit::upstream::Responder;
use airlock_testkit::{RecordedRequest, RecordingUpstream, Reply, TestRequest};
use bytes::Bytes;
use http::Method;
use support::{get, raw, raw_status, Db, Harness, Options};

const SECRET: &str = "sk-live-real-upstream-key-0123456789";

fn header_key() -> AuthMechanism {
    AuthMechanism::Header {
        key: "x-api-key".into(),
    }
}

/// The token in each header an SDK may use (and mixed case, and twice) reaches the upstream as
/// exactly one credential header with the real key, and no `gws_` anywhere.
async fn token_in_every_carrier(db: Db) {
    let h = Harness::start(db, Options::default()).await;
    let s = h.simple(header_key(), SECRET).await;
    let t = s.token.expose();
    let bearer = format!("Bearer {t}");
    let mixed = format!("bEaReR {t}");
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("authorization", &bearer)],
        vec![("Authorization", &mixed)],
        vec![("x-api-key", t)],
        vec![("X-Api-Key", t)],
        vec![("api-key", t)],
        vec![("x-goog-api-key", t)],
        vec![("proxy-authorization", &bearer)],
        vec![("x-api-key", t), ("authorization", &bearer)],
        vec![("x-api-key", t), ("x-api-key", t)],
    ];
    for headers in cases {
        h.upstream.clear();
        let mut req = TestRequest::post(&h.url("/messages")).body(r#"{"model":"m"}"#);
        for (n, v) in &headers {
            req = req.header(n, v);
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status, 200, "{headers:?}: {}", response.text());
        let seen = h.upstream.last_request().unwrap();
        assert_eq!(
            seen.header_values("x-api-key"),
            vec![SECRET.as_bytes()],
            "{headers:?}"
        );
        assert!(
            seen.header_values("authorization").is_empty(),
            "{headers:?}"
        );
        assert!(
            seen.header_values("proxy-authorization").is_empty(),
            "{headers:?}"
        );
        assert!(!seen.contains_bytes(b"gws_"), "{headers:?}");
        assert!(!h.upstream.received_contains(t.as_bytes()), "{headers:?}");
        assert_eq!(seen.path(), "/v1/messages");
        assert_eq!(seen.body_str(), r#"{"model":"m"}"#);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_every_carrier_sqlite() {
    token_in_every_carrier(support::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_every_carrier_postgres() {
    token_in_every_carrier(support::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_mechanisms() {
    let h = Harness::sqlite().await;
    for (auth, secret, header, expected) in [
        (
            AuthMechanism::Bearer,
            "sk-bearer",
            "authorization",
            "Bearer sk-bearer",
        ),
        (
            AuthMechanism::Header {
                key: "x-goog-api-key".into(),
            },
            "AIza-key",
            "x-goog-api-key",
            "AIza-key",
        ),
        (
            AuthMechanism::Header {
                key: "x-custom-auth".into(),
            },
            "custom-key",
            "x-custom-auth",
            "custom-key",
        ),
        (
            AuthMechanism::Basic,
            "user:pass",
            "authorization",
            "Basic dXNlcjpwYXNz",
        ),
    ] {
        let s = h.simple(auth.clone(), secret).await;
        h.upstream.clear();
        // The token goes in x-api-key here, so that `authorization` is the client's own value
        // for the bearer and basic cases: it must be replaced, not doubled.
        let response = TestRequest::get(&h.url("/models"))
            .header("x-api-key", s.token.expose())
            .header("authorization", "Bearer client-own-value")
            .header("x-goog-api-key", "client-own-value")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status, 200, "{auth:?}: {}", response.text());
        let seen = h.upstream.last_request().unwrap();
        assert_eq!(
            seen.header_values(header),
            vec![expected.as_bytes()],
            "{auth:?}"
        );
        assert!(!seen.contains_bytes(b"gws_"));
        assert!(seen.header_values("x-api-key").is_empty() || header == "x-api-key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_literal_and_secret_backed_replace_client_values() {
    let h = Harness::sqlite().await;
    let org = h.seed.secret("ORG_ID", "org-secret-42").await;
    let custom = vec![
        CustomHeader {
            name: "anthropic-version".into(),
            source: HeaderSource::Literal("2023-06-01".into()),
        },
        CustomHeader {
            name: "x-org".into(),
            source: HeaderSource::Secret(org.id.clone()),
        },
    ];
    let gateway = h.seed.gateway(&h.endpoint(""), header_key(), custom).await;
    let secret = h.seed.secret("KEY", SECRET).await;
    let (_, tokens) = h.seed.devbox(&["127.0.0.1"], &[(&gateway, &secret)]).await;
    let response = TestRequest::get(&h.url("/v1/models"))
        .bearer(tokens[0].expose())
        .header("x-api-key", "mine")
        .header("anthropic-version", "client")
        .header("x-org", "client-org")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = h.upstream.last_request().unwrap();
    assert_eq!(seen.header_values("x-api-key"), vec![SECRET.as_bytes()]);
    assert_eq!(
        seen.header_values("anthropic-version"),
        vec![&b"2023-06-01"[..]]
    );
    assert_eq!(seen.header_values("x-org"), vec![&b"org-secret-42"[..]]);
    assert!(seen.header_values("authorization").is_empty());
    assert!(!seen.contains_bytes(b"mine"));
    // The org secret is reflected nowhere either.
    assert!(!response
        .headers
        .iter()
        .any(|(_, v)| v.as_bytes() == b"org-secret-42"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_and_connection_named_headers_are_removed() {
    let h = Harness::sqlite().await;
    let s = h.simple(header_key(), SECRET).await;
    let request = format!(
        "GET /x HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {}\r\n\
         Connection: close, x-api-key, x-drop-me\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
         Trailer: x-foo\r\nProxy-Connection: keep-alive\r\nx-api-key: mine\r\nx-drop-me: 1\r\n\
         x-keep-me: 1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
         tracestate: vendor=opaque\r\n\r\n",
        s.token.expose()
    );
    let answer = raw(h.proxy, request.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let seen = h.upstream.last_request().unwrap();
    for gone in [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "proxy-connection",
        "x-drop-me",
        "authorization",
    ] {
        assert!(seen.header_values(gone).is_empty(), "{gone} was forwarded");
    }
    // `Connection: x-api-key` removed the client's value, not the credential set after it.
    assert_eq!(seen.header_values("x-api-key"), vec![SECRET.as_bytes()]);
    assert_eq!(seen.header_values("x-keep-me"), vec![&b"1"[..]]);
    // Traces are off here: the client's trace context passes through untouched.
    assert_eq!(
        seen.header_str("traceparent").unwrap(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(seen.header_str("tracestate").unwrap(), "vendor=opaque");
    assert_eq!(
        seen.header_str("host").unwrap(),
        format!("localhost:{}", h.upstream.addr().port())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_path_plus_path_plus_query() {
    let h = Harness::sqlite().await;
    let secret = h.seed.secret("K", SECRET).await;
    for (base, path, expected) in [
        (
            "/v1",
            "/chat/completions?model=x&stream=true",
            "/v1/chat/completions?model=x&stream=true",
        ),
        (
            "/v1beta/models",
            "/gemini:generateContent?alt=sse",
            "/v1beta/models/gemini:generateContent?alt=sse",
        ),
        ("", "/v1/messages", "/v1/messages"),
        ("/v1", "/", "/v1/"),
        ("/a/b", "/c/%41?q=%2F..", "/a/b/c/%41?q=%2F.."),
    ] {
        let gateway = h
            .seed
            .gateway(&h.endpoint(base), header_key(), Vec::new())
            .await;
        let (_, tokens) = h.seed.devbox(&["127.0.0.1"], &[(&gateway, &secret)]).await;
        let response = get(&h, path, &tokens[0]).await;
        assert_eq!(response.status, 200, "{base} {path}: {}", response.text());
        assert_eq!(
            h.upstream.last_request().unwrap().path_and_query(),
            expected
        );
    }
}

/// `GET http://evil/x`, `Host: evil` and an HTTP/2 `:authority` of evil all go to the
/// configured upstream; a listener standing in for evil gets no connection at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_never_chooses_the_upstream() {
    let h = Harness::sqlite().await;
    let s = h.simple(header_key(), SECRET).await;
    let evil = RecordingUpstream::plain().await.unwrap();
    let evil_host = format!("127.0.0.1:{}", evil.addr().port());
    let t = s.token.expose();
    for request in [
        format!("GET http://{evil_host}/x HTTP/1.1\r\nHost: {evil_host}\r\nx-api-key: {t}\r\nConnection: close\r\n\r\n"),
        format!("GET /x HTTP/1.1\r\nHost: {evil_host}\r\nx-api-key: {t}\r\nConnection: close\r\n\r\n"),
        format!("GET https://{evil_host}/x?y=1 HTTP/1.1\r\nHost: localhost\r\nx-api-key: {t}\r\nConnection: close\r\n\r\n"),
    ] {
        h.upstream.clear();
        let answer = raw(h.proxy, request.as_bytes(), Duration::from_secs(10)).await;
        assert_eq!(raw_status(&answer), 200, "{request}\n{answer}");
        let seen = h.upstream.last_request().unwrap();
        assert!(seen.path_and_query().starts_with("/v1/x"), "{}", seen.path_and_query());
        assert_eq!(seen.header_str("host").unwrap(), format!("localhost:{}", h.upstream.addr().port()));
    }

    // HTTP/2 with prior knowledge: `:authority` names evil.
    let stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = http::Request::builder()
        .uri(format!("http://{evil_host}/h2"))
        .header("host", evil_host.as_str())
        .header("x-api-key", t)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(h.upstream.last_request().unwrap().path(), "/v1/h2");
    assert_eq!(evil.connections(), 0);
    assert!(evil.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_passed_back_not_followed() {
    let evil = RecordingUpstream::plain().await.unwrap();
    let location = format!("{}/steal", evil.url());
    let responder: Responder = Arc::new(move |_: &RecordedRequest| Reply::redirect(302, &location));
    let h = Harness::start(
        support::sqlite().await,
        Options {
            responder: Some(responder),
            ..Options::default()
        },
    )
    .await;
    let s = h.simple(header_key(), SECRET).await;
    let response = get(&h, "/x", &s.token).await;
    assert_eq!(response.status, 302);
    assert_eq!(
        response.header("location").unwrap(),
        format!("{}/steal", evil.url())
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(evil.connections(), 0);
}

/// An upstream that copies request headers into its response: the secret's exact bytes (and, for
/// basic auth, their base64 form) are removed from the response headers (SECURITY #12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflected_secret_is_removed_from_response_headers() {
    let responder: Responder = Arc::new(|req: &RecordedRequest| {
        let mut reply = Reply::json(200, &serde_json::json!({"ok": true}));
        for (name, values) in [
            ("x-api-key", "x-echo-key"),
            ("authorization", "x-echo-auth"),
        ] {
            if let Some(v) = req.header_str(name) {
                reply = reply
                    .with_header(values, &v)
                    .with_header("x-debug", &format!("got {v} here"));
            }
        }
        // An upstream that reflects the key as a header's name (lower-cased on the way, as
        // HTTP/2 and hyper do).
        if let Some(v) = req.header_str("x-api-key") {
            let lower = v.to_ascii_lowercase();
            reply = reply
                .with_header(&lower, "1")
                .with_header(&format!("x-seen-{lower}"), "1");
        }
        reply.with_header("x-debug", "harmless")
    });
    let h = Harness::start(
        support::sqlite().await,
        Options {
            responder: Some(responder),
            ..Options::default()
        },
    )
    .await;
    for (auth, secret, forms) in [
        (header_key(), SECRET, vec![SECRET.to_owned()]),
        (
            AuthMechanism::Basic,
            "user:hunter2-password",
            vec![
                "user:hunter2-password".to_owned(),
                "dXNlcjpodW50ZXIyLXBhc3N3b3Jk".to_owned(),
            ],
        ),
    ] {
        let s = h.simple(auth, secret).await;
        let response = TestRequest::get(&h.url("/x"))
            .header("x-api-key", s.token.expose())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        for (name, value) in &response.headers {
            for form in &forms {
                assert!(
                    !String::from_utf8_lossy(value.as_bytes()).contains(form.as_str()),
                    "{name} reflects the secret"
                );
                assert!(
                    !name.as_str().contains(&form.to_ascii_lowercase()),
                    "a header name reflects the secret"
                );
            }
        }
        assert!(!response.headers.contains_key("x-echo-key"));
        assert!(!response.headers.contains_key("x-echo-auth"));
        let debug: Vec<_> = response.headers.get_all("x-debug").iter().collect();
        assert_eq!(debug, ["harmless"]);
    }
}

/// SSE events reach the client as the upstream writes them, not all at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_stream_through() {
    let gap = Duration::from_millis(150);
    let events: Vec<(Duration, String)> = (0..5)
        .map(|i| {
            (
                if i == 0 { Duration::ZERO } else { gap },
                format!("data: {{\"n\":{i}}}\n\n"),
            )
        })
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
    for http2 in [false, true] {
        let mut req = TestRequest::new(Method::POST, &h.url("/chat/completions"))
            .header("x-api-key", s.token.expose())
            .body("{}");
        if http2 {
            req = req.http2_prior_knowledge();
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("content-type").unwrap(),
            "text/event-stream"
        );
        let text = response.text();
        for i in 0..5 {
            assert!(text.contains(&format!("\"n\":{i}")));
        }
        assert!(
            response.chunks.len() >= 4,
            "events were coalesced: {} chunks",
            response.chunks.len()
        );
        let first = response.chunks.first().unwrap().0;
        let last = response.chunks.last().unwrap().0;
        assert!(
            last - first >= gap * 3,
            "events arrived together: first {first:?}, last {last:?}"
        );
    }
}

/// A request body is streamed upstream whole, and a large one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_stream_upstream() {
    let h = Harness::sqlite().await;
    let s = h.simple(header_key(), SECRET).await;
    let chunks: Vec<(Duration, Bytes)> = (0..4)
        .map(|i| {
            (
                Duration::from_millis(50),
                Bytes::from(vec![b'a' + i as u8; 100_000]),
            )
        })
        .collect();
    let response = TestRequest::post(&h.url("/upload"))
        .header("x-api-key", s.token.expose())
        .body_chunks(chunks)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let seen = h.upstream.last_request().unwrap();
    assert_eq!(seen.body.len(), 400_000);
    assert!(seen.body_complete);
}
