//! Oversized and slow requests (SECURITY #11): a head over the limit gets 431 (the pipeline's
//! JSON one, or hyper's own beyond its buffer), too many headers and over-long targets are
//! refused, and a head dripped slowly is cut off at the header timeout. Nothing reaches the
//! upstream. (The harness for this module runs with a 500 ms header timeout.)

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::attacks::common::{exchange, target, upstream_paths, Seen};
use crate::support::Harness;

pub async fn run(h: &Harness, seen: &mut Seen) {
    let s = target(h).await;
    let t = s.token.expose();
    let big = "a".repeat(80 * 1024);
    let many: String = (0..200).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    let long_target = format!("/{}", "a".repeat(70_000));
    let cases: Vec<(&str, String, u16)> = vec![
        ("80 KiB header, within the parser's buffer", format!("GET /x HTTP/1.1\r\nHost: localhost\r\nx-api-key: {t}\r\nx-big: {big}\r\nConnection: close\r\n\r\n"), 431),
        ("1 MiB header", format!("GET /x HTTP/1.1\r\nHost: localhost\r\nx-api-key: {t}\r\nx-big: {}\r\n\r\n", "a".repeat(1024 * 1024)), 431),
        ("1 MiB of small headers", format!("GET /x HTTP/1.1\r\nHost: localhost\r\nx-api-key: {t}\r\n{}\r\n", "x-a: b\r\n".repeat(131_072)), 431),
        ("200 headers", format!("GET /x HTTP/1.1\r\nHost: localhost\r\nx-api-key: {t}\r\n{many}Connection: close\r\n\r\n"), 431),
        ("70 KB target", format!("GET {long_target} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {t}\r\nConnection: close\r\n\r\n"), 414),
    ];
    for (name, request, status) in cases {
        h.upstream.clear();
        let answer = exchange(h, seen, request.as_bytes()).await;
        assert_eq!(answer.statuses(), [status], "{name}: {:.200}", answer.text);
        assert!(answer.closed || status == 431, "{name}");
        assert!(upstream_paths(h).is_empty(), "{name}");
    }

    // A head dripped a byte every 100 ms is cut off at the header timeout (500 ms here), long
    // before the drip would end.
    h.upstream.clear();
    let mut stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /x HTTP/1.1\r\nHost: local")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let mut closed = false;
    for _ in 0..100 {
        if stream.write_all(b"h").await.is_err() {
            closed = true;
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "the dripping connection was not closed");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed only after {:?}",
        started.elapsed()
    );

    // The same with "PRI", the first word of the HTTP/2 preface, as an HTTP/1 method.
    let mut stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    stream
        .write_all(b"PRI / HTTP/1.1\r\nHost: local")
        .await
        .unwrap();
    let mut closed = false;
    for _ in 0..100 {
        if stream.write_all(b"h").await.is_err() {
            closed = true;
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(
        closed,
        "a dripping head that starts with PRI was not closed"
    );

    // A connection that opens and sends nothing costs a timer until the idle timeout; one that
    // sends half a request line is cut off like the drip.
    let mut stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    stream.write_all(b"GET /x HT").await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(upstream_paths(h).is_empty());
}
