//! Connections over time: draining on shutdown (SECURITY #23) and websocket upgrades, whose
//! connections are spliced once the handshake went through the same checks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_core::{AuthMechanism, BearerSecret};
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

/// A gateway in front of [`echo_upstream`], and a devbox's token for it.
async fn echo_gateway(h: &Harness) -> (Arc<Mutex<String>>, Vec<BearerSecret>) {
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
    (head, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_checked_then_spliced() {
    let h = Harness::sqlite().await;
    let (head, tokens) = echo_gateway(&h).await;

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

const PARKED: &str = "airlock_proxy_connections_parked";

/// Reads from `stream` until `n` whole responses have come (by their framing), or the server
/// closes, or 5 s pass; their statuses.
async fn responses<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, n: usize) -> Vec<u16> {
    let mut answer = support::RawAnswer {
        text: String::new(),
        closed: false,
    };
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while answer.statuses().len() < n {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(read)) => answer.text.push_str(&String::from_utf8_lossy(&buf[..read])),
        }
    }
    answer.statuses()
}

fn get(path: &str, token: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {token}\r\n\r\n")
}

/// An idle HTTP/1 connection gives back hyper's buffers (it is parked) and is served again when
/// its next request comes, pipelined requests and the framing guard included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_park_and_wake_for_their_next_requests() {
    let h = Harness::sqlite().await;
    let s = h.simple(header_key(), SECRET).await;
    let token = s.token.expose();
    let mut stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    stream.write_all(get("/a", token).as_bytes()).await.unwrap();
    assert_eq!(responses(&mut stream, 1).await, [200]);
    support::wait_sample(&h, PARKED, 1.0).await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(support::sample(&support::scrape(&h), PARKED), 1.0);
    }

    // Two requests in one write wake it: the second is read before the first is answered.
    let two = format!("{}{}", get("/b", token), get("/c", token));
    stream.write_all(two.as_bytes()).await.unwrap();
    assert_eq!(responses(&mut stream, 2).await, [200, 200]);
    let paths: Vec<String> = h
        .upstream
        .requests()
        .iter()
        .map(|r| r.path_and_query())
        .collect();
    assert_eq!(paths, ["/v1/a", "/v1/b", "/v1/c"]);

    // A request head that arrives in pieces across the wake-up.
    support::wait_sample(&h, PARKED, 1.0).await;
    let d = get("/d", token);
    stream.write_all(&d.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(&d.as_bytes()[10..]).await.unwrap();
    assert_eq!(responses(&mut stream, 1).await, [200]);

    // The framing guard still reads every byte of a woken connection: a bare LF is refused.
    support::wait_sample(&h, PARKED, 1.0).await;
    stream
        .write_all(
            format!("GET /e HTTP/1.1\nHost: localhost\r\nx-api-key: {token}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(responses(&mut stream, 1).await, [400]);
    assert_eq!(h.upstream.requests().len(), 4);
    support::wait_sample(&h, PARKED, 0.0).await;
    support::wait_sample(&h, "airlock_proxy_connections_active", 0.0).await;

    // A client that closes while parked: its connection goes at once.
    let mut other = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    other.write_all(get("/f", token).as_bytes()).await.unwrap();
    assert_eq!(responses(&mut other, 1).await, [200]);
    support::wait_sample(&h, PARKED, 1.0).await;
    drop(other);
    support::wait_sample(&h, PARKED, 0.0).await;
    support::wait_sample(&h, "airlock_proxy_connections_active", 0.0).await;
}

/// Parking over TLS: rustls keeps its session, hyper's buffers go, the next request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_connections_park_and_wake() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.issue_pem(&["localhost"]);
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let files = airlock_net::CertFiles::new(cert_path, key_path);
    let tls = airlock_net::TlsServer::from_files(files).unwrap();
    let h = Harness::start(
        support::sqlite().await,
        Options {
            configure: Box::new(move |c| c.tls = Some(tls)),
            ..Options::default()
        },
    )
    .await;
    let s = h.simple(header_key(), SECRET).await;
    let token = s.token.expose();
    let connector = tokio_rustls::TlsConnector::from(ca.client_config());
    let tcp = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    for path in ["/a", "/b", "/c"] {
        stream.write_all(get(path, token).as_bytes()).await.unwrap();
        assert_eq!(responses(&mut stream, 1).await, [200], "{path}");
        support::wait_sample(&h, PARKED, 1.0).await;
    }
    assert_eq!(h.upstream.requests().len(), 3);
    // It stays parked while the client is quiet (it does not wake for nothing and park again).
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(support::sample(&support::scrape(&h), PARKED), 1.0);
    }
}

/// A websocket upgrade on a connection that was parked goes through like on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_can_upgrade() {
    let h = Harness::sqlite().await;
    let (head, tokens) = echo_gateway(&h).await;
    let mut stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    // A first request, refused before the upstream, then the connection idles and parks.
    stream
        .write_all(get("/nothing", "gws_not_a_token").as_bytes())
        .await
        .unwrap();
    assert_eq!(responses(&mut stream, 1).await, [401]);
    support::wait_sample(&h, PARKED, 1.0).await;

    let request = format!(
        "GET /realtime HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         x-api-key: {}\r\n\r\n",
        tokens[0].expose()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(responses(&mut stream, 1).await, [101]);
    assert!(head
        .lock()
        .unwrap()
        .starts_with("GET /v1/realtime HTTP/1.1"));
    stream.write_all(b"\x81\x05hello").await.unwrap();
    let mut got = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"\x81\x05hello");
    // A spliced connection is not parked, however long it idles.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(support::sample(&support::scrape(&h), PARKED), 0.0);
}

/// After enough connections park, the process asks the allocator to give their freed buffers
/// back to the system (glibc keeps them resident otherwise).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_memory_goes_back_to_the_system() {
    let h = Harness::sqlite().await;
    let s = h.simple(header_key(), SECRET).await;
    let token = s.token.expose().to_owned();
    let trims = "airlock_proxy_memory_trims_total";
    assert_eq!(support::sample(&support::scrape(&h), trims), 0.0);
    let mut open = Vec::new();
    for _ in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
        stream
            .write_all(get("/x", &token).as_bytes())
            .await
            .unwrap();
        open.push(stream);
    }
    for stream in &mut open {
        assert_eq!(responses(stream, 1).await, [200]);
    }
    support::wait_sample(&h, PARKED, 300.0).await;
    let trimmed = Harness::eventually(Duration::from_secs(5), || async {
        support::sample(&support::scrape(&h), trims) >= 1.0
    })
    .await;
    assert!(trimmed, "no trim after 300 parks");
}
