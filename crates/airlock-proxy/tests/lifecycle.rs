//! Connections over time: draining on shutdown (SECURITY #23) and websocket upgrades, whose
//! connections are spliced once the handshake went through the same checks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_core::AuthMechanism;
use airlock_testkit::tls::TestCa;
use airlock_testkit::upstream::Responder;
use airlock_testkit::{RecordedRequest, Reply, TestRequest};
use support::{Harness, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "sk-live-real-upstream-key-0123456789";

fn header_key() -> AuthMechanism {
    AuthMechanism::Header {
        key: "x-api-key".into(),
    }
}

/// A shutdown in the middle of a stream lets it finish; new connections are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_open_streams() {
    let events: Vec<(Duration, String)> = (0..8)
        .map(|i| (Duration::from_millis(100), format!("data: {i}\n\n")))
        .collect();
    let responder: Responder = Arc::new(move |_: &RecordedRequest| Reply::sse(events.clone()));
    let mut h = Harness::start(
        support::sqlite().await,
        Options {
            responder: Some(responder),
            ..Options::default()
        },
    )
    .await;
    let s = h.simple(header_key(), SECRET).await;
    let url = h.url("/stream");
    let token = s.token.expose().to_owned();
    let streaming = tokio::spawn(async move {
        TestRequest::get(&url)
            .header("x-api-key", &token)
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!h.plane.draining());
    h.stop().await;
    assert!(h.plane.draining(), "a stopped data plane reports draining");
    let response = streaming.await.unwrap().unwrap();
    assert_eq!(response.status, 200);
    for i in 0..8 {
        assert!(
            response.text().contains(&format!("data: {i}\n\n")),
            "event {i} lost: {}",
            response.text()
        );
    }
    assert!(
        tokio::net::TcpStream::connect(h.proxy).await.is_err(),
        "a new connection was accepted after shutdown"
    );
    // The audit queue was flushed before `serve` returned.
    assert_eq!(h.seed.request_events().await.len(), 1);
}

/// A websocket-ish upstream over TLS: records the handshake head, answers 101, then echoes.
async fn echo_upstream(ca: &TestCa) -> (u16, Arc<Mutex<String>>) {
    let config = ca.server_config(&["localhost"], &[b"http/1.1"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let head = Arc::new(Mutex::new(String::new()));
    let seen = head.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            tls.read_exact(&mut byte).await.unwrap();
            buf.push(byte[0]);
        }
        *seen.lock().unwrap() = String::from_utf8_lossy(&buf).into_owned();
        tls.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
            .await
            .unwrap();
        let mut data = [0u8; 1024];
        loop {
            match tls.read(&mut data).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tls.write_all(&data[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    (port, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_checked_then_spliced() {
    let h = Harness::sqlite().await;
    let (port, head) = echo_upstream(&h.ca).await;
    let gateway = h
        .seed
        .gateway(
            &format!("https://localhost:{port}/v1"),
            header_key(),
            Vec::new(),
        )
        .await;
    let secret = h.seed.secret("WS_KEY", SECRET).await;
    let (_, tokens) = h.seed.devbox(&["127.0.0.1"], &[(&gateway, &secret)]).await;

    // Without a token: refused like any request.
    let mut stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let handshake =
        "GET /realtime HTTP/1.1\r\nHost: evil\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    stream
        .write_all(format!("{handshake}\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 401"));

    let mut stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let request = format!("{handshake}x-api-key: {}\r\n\r\n", tokens[0].expose());
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed during the handshake");
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 101"), "{answer}");
    assert!(answer.contains("upgrade: websocket"));
    assert!(answer.contains("sec-websocket-accept"));

    let upstream_head = head.lock().unwrap().clone();
    let lower = upstream_head.to_lowercase();
    assert!(
        upstream_head.starts_with("GET /v1/realtime HTTP/1.1"),
        "{upstream_head}"
    );
    assert!(lower.contains(&format!("x-api-key: {}", SECRET.to_lowercase())));
    assert!(!upstream_head.contains("gws_"));
    assert!(lower.contains("upgrade: websocket") && lower.contains("connection: upgrade"));
    assert!(lower.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="));

    for message in [&b"hello"[..], b"\x81\x05world"] {
        stream.write_all(message).await.unwrap();
        let mut got = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, message);
    }
    drop(stream);
    let seed = h.seed.clone();
    assert!(
        Harness::eventually(Duration::from_secs(5), || {
            let seed = seed.clone();
            async move {
                seed.request_events()
                    .await
                    .iter()
                    .any(|e| e.status == 101 && e.bytes_out >= 12)
            }
        })
        .await
    );
}

/// A keep-alive connection may idle longer than the header timeout (which only runs once a
/// request head has started), and is closed after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_idles_until_the_idle_timeout() {
    use http_body_util::BodyExt;
    let h = Harness::start(
        support::sqlite().await,
        Options {
            configure: Box::new(|c| {
                c.header_read_timeout = Duration::from_millis(200);
                c.idle_timeout = Duration::from_millis(900);
            }),
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
    for pause in [Duration::ZERO, Duration::from_millis(500)] {
        tokio::time::sleep(pause).await;
        sender.ready().await.unwrap();
        let request = http::Request::builder()
            .uri("/x")
            .header("host", "localhost")
            .header("x-api-key", s.token.expose())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    }
    assert!(!conn.is_finished());
    let closed = tokio::time::timeout(Duration::from_secs(3), conn).await;
    assert!(closed.is_ok(), "the idle connection was not closed");
    assert_eq!(h.upstream.requests().len(), 2);
}
