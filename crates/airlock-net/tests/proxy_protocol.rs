//! PROXY protocol on a real listener: headers from a trusted peer name the caller; a header from
//! anybody else, a missing, malformed, oversized or slow header closes the connection before a
//! byte is passed on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use airlock_net::{AcceptError, AcceptOptions, Acceptor, ProxyHeaderError};
use proxy_header::{ProxiedAddress, ProxyHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

const TRUSTED: &str = "127.0.0.1";
const UNTRUSTED: &str = "127.0.0.2";

/// Which refusal a case expects.
type Expect = fn(&ProxyHeaderError) -> bool;

/// What the server made of one connection: the caller and the first 6 bytes after the header.
type Outcome = Result<(SocketAddr, Vec<u8>), AcceptError>;

struct Server {
    addr: SocketAddr,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
}

async fn server(options: AcceptOptions) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = Acceptor::new(options);
    let (tx, outcomes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let outcome = match acceptor.accept(tcp, peer).await {
                    Ok(mut accepted) => {
                        let mut first = vec![0u8; 6];
                        accepted.stream.read_exact(&mut first).await.unwrap();
                        accepted.stream.write_all(b"ok").await.unwrap();
                        Ok((accepted.client, first))
                    }
                    Err(err) => Err(err),
                };
                let _ = tx.send(outcome);
            });
        }
    });
    Server { addr, outcomes }
}

fn options() -> AcceptOptions {
    AcceptOptions {
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        handshake_timeout: Duration::from_millis(300),
        ..AcceptOptions::default()
    }
}

async fn connect_from(ip: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(ip.parse().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

fn v2(header: ProxyHeader<'_>) -> Vec<u8> {
    let mut buf = Vec::new();
    header.encode_v2(&mut buf).unwrap();
    buf
}

fn v2_tcp(src: &str, dst: &str) -> Vec<u8> {
    v2(ProxyHeader::with_address(ProxiedAddress::stream(
        src.parse().unwrap(),
        dst.parse().unwrap(),
    )))
}

/// Sends `parts` (each after a short pause), then `hello!`, and returns what the server made
/// of it and whether the client got the server's answer.
async fn exchange(server: &mut Server, from: &str, parts: &[&[u8]]) -> (Outcome, bool) {
    let mut client = connect_from(from, server.addr).await;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        client.write_all(part).await.unwrap();
    }
    let _ = client.write_all(b"hello!").await;
    let outcome = tokio::time::timeout(Duration::from_secs(5), server.outcomes.recv())
        .await
        .expect("the server decided within 5 s")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut answer)).await;
    (outcome, answer == b"ok")
}

fn peer_of(outcome: &Outcome) -> IpAddr {
    outcome.as_ref().unwrap().0.ip()
}

#[tokio::test]
async fn headers_from_a_trusted_peer_name_the_caller() {
    let mut server = server(options()).await;
    let local = v2(ProxyHeader::with_local());
    let v2_tcp4 = v2_tcp("10.1.2.3:5555", "10.0.0.1:443");
    let v2_tcp6 = v2_tcp("[fd00::1]:5555", "[fd00::2]:443");
    let cases: Vec<(&str, Vec<&[u8]>, SocketAddr)> = vec![
        (
            "v1 TCP4",
            vec![b"PROXY TCP4 10.1.2.3 10.0.0.1 5555 443\r\n"],
            "10.1.2.3:5555".parse().unwrap(),
        ),
        (
            "v1 TCP6",
            vec![b"PROXY TCP6 fd00::1 fd00::2 5555 443\r\n"],
            "[fd00::1]:5555".parse().unwrap(),
        ),
        (
            "v1 split across writes",
            vec![b"PRO", b"XY TCP4 10.1.2.3 ", b"10.0.0.1 5555 443\r\n"],
            "10.1.2.3:5555".parse().unwrap(),
        ),
        ("v2 TCP4", vec![&v2_tcp4], "10.1.2.3:5555".parse().unwrap()),
        ("v2 TCP6", vec![&v2_tcp6], "[fd00::1]:5555".parse().unwrap()),
        (
            "v2 split across writes",
            vec![&v2_tcp4[..5], &v2_tcp4[5..14], &v2_tcp4[14..]],
            "10.1.2.3:5555".parse().unwrap(),
        ),
    ];
    for (name, parts, expected) in cases {
        let (outcome, answered) = exchange(&mut server, TRUSTED, &parts).await;
        let (client, first) = outcome.unwrap_or_else(|e| panic!("{name}: refused: {e}"));
        assert_eq!(client, expected, "{name}");
        assert_eq!(first, b"hello!", "{name}: the bytes after the header");
        assert!(answered, "{name}");
    }
    // LOCAL (a health check by the proxy itself) and v1 UNKNOWN: the socket's peer is the caller.
    for (name, header) in [
        ("v2 LOCAL", local.as_slice()),
        ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n".as_slice()),
    ] {
        let (outcome, answered) = exchange(&mut server, TRUSTED, &[header]).await;
        assert_eq!(
            peer_of(&outcome),
            TRUSTED.parse::<IpAddr>().unwrap(),
            "{name}"
        );
        assert_eq!(outcome.unwrap().1, b"hello!");
        assert!(answered, "{name}");
    }
}

#[tokio::test]
async fn bad_headers_from_a_trusted_peer_are_refused() {
    let mut server = server(options()).await;
    let mut oversized = v2_tcp("10.1.2.3:5555", "10.0.0.1:443");
    // Declare 5000 bytes of TLVs: refused from the length alone.
    oversized[14..16].copy_from_slice(&5000u16.to_be_bytes());
    let udp = v2(ProxyHeader::with_address(ProxiedAddress::datagram(
        "10.1.2.3:5555".parse().unwrap(),
        "10.0.0.1:443".parse().unwrap(),
    )));
    let long_v1 = format!("PROXY TCP4 {}", "1".repeat(200));
    let cases: Vec<(&str, Vec<&[u8]>, Expect)> = vec![
        ("missing", vec![b"GET / HTTP/1.1\r\n"], |e| {
            matches!(e, ProxyHeaderError::Missing)
        }),
        ("garbage v1", vec![b"PROXY TCP9 a b c d\r\n"], |e| {
            matches!(e, ProxyHeaderError::Invalid)
        }),
        (
            "bad v1 address",
            vec![b"PROXY TCP4 10.1.2 10.0.0.1 1 2\r\n"],
            |e| matches!(e, ProxyHeaderError::Invalid),
        ),
        ("v1 without an end", vec![long_v1.as_bytes()], |e| {
            matches!(e, ProxyHeaderError::Invalid)
        }),
        ("oversized v2", vec![&oversized], |e| {
            matches!(e, ProxyHeaderError::TooLarge)
        }),
        ("v2 for UDP", vec![&udp], |e| {
            matches!(e, ProxyHeaderError::NotTcp)
        }),
    ];
    for (name, parts, expected) in cases {
        let (outcome, answered) = exchange(&mut server, TRUSTED, &parts).await;
        match outcome {
            Err(AcceptError::ProxyHeader { error, .. }) if expected(&error) => {}
            other => panic!("{name}: {other:?}"),
        }
        assert!(!answered, "{name}: the connection was served");
    }
}

#[tokio::test]
async fn a_slow_header_is_cut_off() {
    let mut server = server(options()).await;
    let mut client = connect_from(TRUSTED, server.addr).await;
    client.write_all(b"PROXY TCP4 10.1.2.3").await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), server.outcomes.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(outcome, Err(AcceptError::Timeout(_))),
        "{outcome:?}"
    );
    let mut rest = Vec::new();
    let read = client.read_to_end(&mut rest).await;
    assert!(
        read.is_err() || rest.is_empty(),
        "the connection was closed"
    );
}

#[tokio::test]
async fn a_header_from_an_untrusted_peer_closes_the_connection() {
    let mut server = server(options()).await;
    let header = v2_tcp("127.0.0.1:5555", "10.0.0.1:443");
    let cases: Vec<(&str, Vec<&[u8]>)> = vec![
        ("v1", vec![b"PROXY TCP4 127.0.0.1 10.0.0.1 5555 443\r\n"]),
        ("v1 in pieces", vec![b"PR", b"OX", b"Y TCP4 127.0.0.1 "]),
        ("v2", vec![&header]),
        ("v2 in pieces", vec![&header[..3], &header[3..]]),
    ];
    for (name, parts) in cases {
        let (outcome, answered) = exchange(&mut server, UNTRUSTED, &parts).await;
        assert!(
            matches!(outcome, Err(AcceptError::UntrustedProxyHeader(ip)) if ip == UNTRUSTED.parse::<IpAddr>().unwrap()),
            "{name}: {outcome:?}"
        );
        assert!(!answered, "{name}: the connection was served");
    }
    // Without a header an untrusted peer is the caller, and its bytes arrive intact, however
    // they are split.
    for (name, parts) in [
        ("whole", vec![b"".as_slice()]),
        ("a P first", vec![b"P".as_slice()]),
        ("a CR first", vec![b"\r".as_slice(), b"\n".as_slice()]),
    ] {
        let (outcome, answered) = exchange(&mut server, UNTRUSTED, &parts).await;
        let (client, first) = outcome.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(client.ip(), UNTRUSTED.parse::<IpAddr>().unwrap());
        let sent: Vec<u8> = parts.concat().into_iter().chain(*b"hello!").collect();
        assert_eq!(first, sent[..6], "{name}");
        assert!(answered, "{name}");
    }
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_time() {
    let mut server = server(AcceptOptions {
        first_byte_timeout: Duration::from_millis(200),
        ..options()
    })
    .await;
    let mut client = connect_from(UNTRUSTED, server.addr).await;
    let outcome = tokio::time::timeout(Duration::from_secs(5), server.outcomes.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Err(AcceptError::Idle(_))), "{outcome:?}");
    let mut rest = Vec::new();
    assert!(client.read_to_end(&mut rest).await.is_err() || rest.is_empty());
}
