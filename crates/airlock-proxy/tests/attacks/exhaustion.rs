//! Holding connections open to lock sandboxes out (SECURITY #11, #15): connections that send no
//! byte, an HTTP/2 peer that sends its preface and nothing else, a response stalled behind a
//! zero flow-control window, a peer that never answers PINGs, and one address taking the whole
//! connection cap. Each row runs on its own data plane with small timeouts and caps, so it is
//! over in seconds; each waits a bounded time for the server to close the connection, and a
//! connection still open then (what happened before these limits existed) fails the row.
//!
//! These rows build their own harnesses (the shared one has production timeouts), so the leak
//! test does not run them; they carry no token in any unusual place.

use std::net::SocketAddr;
use std::time::Duration;

use airlock_proxy::ProxyConfig;
use airlock_testkit::h2raw::{self, request_block, END_HEADERS, END_STREAM, HEADERS, SETTINGS};
use airlock_testkit::Reply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::attacks::common::{exchange, target, Seen};
use crate::support::{self, Harness, Options};

/// How long a row waits for the server to close a connection it must close.
const CLOSED_WITHIN: Duration = Duration::from_secs(6);

/// Timeouts long enough never to fire during a row, unless a row shortens one.
fn quiet(c: &mut ProxyConfig) {
    c.header_read_timeout = Duration::from_secs(60);
    c.idle_timeout = Duration::from_secs(60);
    c.send_timeout = Duration::from_secs(60);
    c.h2_keep_alive_interval = Duration::from_secs(60);
}

async fn harness(configure: impl FnOnce(&mut ProxyConfig) + Send + 'static) -> Harness {
    Harness::start(
        support::sqlite().await,
        Options {
            configure: Box::new(move |c| {
                quiet(c);
                configure(c);
            }),
            ..Options::default()
        },
    )
    .await
}

/// A TCP connection to `to` from the local address `from` (any of 127/8 on Linux).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads (and drops) whatever the server sends until it closes the connection; `false` if it
/// is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 16384];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// SETTINGS with SETTINGS_INITIAL_WINDOW_SIZE = 0: the server may send no DATA until a
/// WINDOW_UPDATE, which never comes.
fn zero_window_settings() -> Vec<u8> {
    let mut out = h2raw::frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]);
    out.extend(h2raw::frame(SETTINGS, h2raw::ACK, 0, &[]));
    out
}

pub async fn run(seen: &mut Seen) {
    // 1. A connection that sends no byte holds its slot until the header timeout, not the idle
    //    timeout.
    let h = harness(|c| c.header_read_timeout = Duration::from_millis(300)).await;
    let mut silent = TcpStream::connect(h.proxy).await.unwrap();
    assert!(
        closed_within(&mut silent, CLOSED_WITHIN).await,
        "a connection that sent nothing stayed open past the header timeout"
    );

    // 2. An HTTP/2 peer that sends its preface and nothing else (it never acknowledges the
    //    GOAWAY's PING) is dropped after the idle timeout and the close deadline.
    let h = harness(|c| {
        c.idle_timeout = Duration::from_millis(300);
        c.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    for (name, bytes) in [
        ("the preface alone", h2raw::PREFACE.to_vec()),
        (
            "the preface and SETTINGS, no ACK",
            [h2raw::PREFACE, &h2raw::frame(SETTINGS, 0, 0, &[])].concat(),
        ),
    ] {
        let mut stream = TcpStream::connect(h.proxy).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        assert!(
            closed_within(&mut stream, CLOSED_WITHIN).await,
            "{name}: the connection stayed open after its graceful shutdown"
        );
        seen.push(name);
    }

    // 3. A response the client never takes (its HTTP/2 stream window held at zero) closes the
    //    connection at the send timeout, although a request is in flight.
    let h = harness(|c| c.send_timeout = Duration::from_millis(400)).await;
    let s = target(&h).await;
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    let mut frames = h2raw::PREFACE.to_vec();
    frames.extend(zero_window_settings());
    frames.extend(h2raw::frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &request_block("GET", "/stalled", &[("x-api-key", s.token.expose())]),
    ));
    stream.write_all(&frames).await.unwrap();
    assert!(
        closed_within(&mut stream, CLOSED_WITHIN).await,
        "a stream stalled at a zero window kept its connection open"
    );
    assert_eq!(
        h.upstream.last_request().map(|r| r.path_and_query()),
        Some("/v1/stalled".to_owned()),
        "the stalled request never reached the upstream, so the row tested nothing"
    );

    // The same over HTTP/1.1: a client that never reads a large response.
    let h = harness(|c| c.send_timeout = Duration::from_millis(400)).await;
    let s = target(&h).await;
    h.upstream
        .set_reply(Reply::text(200, &"x".repeat(16 * 1024 * 1024)));
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    let request = format!(
        "GET /big HTTP/1.1\r\nHost: localhost\r\nx-api-key: {}\r\n\r\n",
        s.token.expose()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Never read: the socket buffers fill and hyper stops polling the body. Then see whether
    // the server closed its side (a read now drains the buffers and ends in EOF or a reset).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        closed_within(&mut stream, Duration::from_secs(2)).await,
        "an HTTP/1.1 client that never reads kept its connection open"
    );

    // 4. A peer that never answers the server's PINGs, while its request waits for a slow
    //    upstream, is closed by HTTP/2 keep-alive (not at the response-header timeout).
    let h = harness(|c| c.h2_keep_alive_interval = Duration::from_millis(300)).await;
    let s = target(&h).await;
    h.upstream.set_reply(Reply::Hang);
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    let mut frames = h2raw::PREFACE.to_vec();
    frames.extend(h2raw::settings());
    frames.extend(h2raw::frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &request_block("GET", "/slow", &[("x-api-key", s.token.expose())]),
    ));
    stream.write_all(&frames).await.unwrap();
    assert!(
        closed_within(&mut stream, CLOSED_WITHIN).await,
        "a peer that never answered PINGs stayed connected"
    );

    // 5. One address cannot take the whole connection cap: its connections beyond
    //    AIRLOCK_MAX_CONNECTIONS_PER_SOURCE are closed at once, and a sandbox at another
    //    address still gets in although the flood would otherwise fill the global cap.
    let h = harness(|c| {
        c.max_connections = 6;
        c.max_connections_per_source = 4;
    })
    .await;
    let s = target(&h).await;
    let mut flood = Vec::new();
    for _ in 0..4 {
        flood.push(connect_from("127.0.0.2", h.proxy).await);
    }
    // Let the accept loop count them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..3 {
        let mut extra = connect_from("127.0.0.2", h.proxy).await;
        assert!(
            closed_within(&mut extra, Duration::from_secs(2)).await,
            "connection {} from the flooding address was kept",
            5 + i
        );
    }
    for held in &mut flood {
        // The first four are still open (the header timeout is long here).
        let mut buf = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(50), held.read(&mut buf))
                .await
                .is_err(),
            "a connection within the per-source cap was closed"
        );
    }
    let request = format!(
        "GET /x HTTP/1.1\r\nHost: localhost\r\nx-api-key: {}\r\nConnection: close\r\n\r\n",
        s.token.expose()
    );
    let answer = exchange(&h, seen, request.as_bytes()).await;
    assert_eq!(answer.statuses(), [200], "{}", answer.text);
    let scrape = h.plane.encode_metrics();
    assert_eq!(
        support::sample(
            &scrape,
            "airlock_proxy_connections_refused_per_source_total"
        ),
        3.0,
        "{scrape}"
    );
    drop(flood);
}
