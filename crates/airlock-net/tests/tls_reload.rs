//! Server TLS from files, replaced under a running listener: new handshakes get the new
//! certificate, a connection opened before keeps working, a broken new pair keeps the old one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_net::{
    keep_fresh, AcceptOptions, Acceptor, CertFiles, NetStream, Reload, TlsError, TlsServer,
};
use airlock_testkit::tls::TestCa;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        Files {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            _dir: dir,
        }
    }

    /// Writes a new pair for `localhost` and returns the leaf certificate.
    fn issue(&self, ca: &TestCa) -> CertificateDer<'static> {
        let (cert, key) = ca.issue_pem(&["localhost"]);
        std::fs::write(&self.key, key).unwrap();
        std::fs::write(&self.cert, &cert).unwrap();
        leaf(&self.cert)
    }

    fn files(&self) -> CertFiles {
        CertFiles::new(&self.cert, &self.key)
            .named("AIRLOCK_PROXY_TLS_CERT_FILE", "AIRLOCK_PROXY_TLS_KEY_FILE")
    }
}

fn leaf(path: &Path) -> CertificateDer<'static> {
    let pem = std::fs::read(path).unwrap();
    let first = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    first
}

/// An echo server behind the acceptor; it reports the ALPN protocol of each connection first.
async fn echo_server(tls: TlsServer) -> SocketAddr {
    echo_server_with(AcceptOptions {
        tls: Some(tls),
        ..AcceptOptions::default()
    })
    .await
}

async fn echo_server_with(options: AcceptOptions) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = Acceptor::new(options);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(accepted) = acceptor.accept(tcp, peer).await else {
                    return;
                };
                let NetStream::Tls(_) = &accepted.stream else {
                    panic!("a plain stream on a TLS listener");
                };
                let (mut read, mut write) = tokio::io::split(accepted.stream);
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

async fn connect(
    ca: &TestCa,
    addr: SocketAddr,
    alpn: &[&[u8]],
) -> (TlsStream<TcpStream>, CertificateDer<'static>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = TlsConnector::from(ca.client_config_with_alpn(alpn))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let cert = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    (stream, cert)
}

async fn echo(stream: &mut TlsStream<TcpStream>, text: &[u8]) {
    stream.write_all(text).await.unwrap();
    let mut back = vec![0u8; text.len()];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(back, text);
}

#[tokio::test]
async fn reload_serves_new_handshakes_and_keeps_open_connections() {
    let ca = TestCa::new();
    let files = Files::new();
    let first = files.issue(&ca);
    let tls = TlsServer::from_files(files.files()).unwrap();
    let addr = echo_server(tls.clone()).await;

    let (mut before, seen) = connect(&ca, addr, &[b"h2", b"http/1.1"]).await;
    assert_eq!(seen, first);
    assert_eq!(before.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    echo(&mut before, b"one").await;

    // Unchanged files: nothing to do.
    assert_eq!(tls.resolver().reload(false).unwrap(), Reload::Unchanged);

    let second = files.issue(&ca);
    assert_ne!(first, second);
    assert_eq!(tls.resolver().reload(false).unwrap(), Reload::Loaded);
    let (mut after, seen) = connect(&ca, addr, &[b"http/1.1"]).await;
    assert_eq!(seen, second, "a new handshake gets the new certificate");
    assert_eq!(
        after.get_ref().1.alpn_protocol(),
        Some(b"http/1.1".as_slice())
    );
    echo(&mut after, b"two").await;
    echo(&mut before, b"still here").await;

    // A broken pair keeps the current one, and is reported once.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    assert!(matches!(
        tls.resolver().reload(false),
        Err(TlsError::Invalid { .. })
    ));
    assert_eq!(tls.resolver().reload(false).unwrap(), Reload::Unchanged);
    assert_eq!(connect(&ca, addr, &[]).await.1, second);

    // A certificate whose key is not the one in the key file.
    let (other_cert, _) = ca.issue_pem(&["localhost"]);
    std::fs::write(&files.cert, other_cert).unwrap();
    let err = tls.resolver().reload(false).unwrap_err();
    assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("AIRLOCK_PROXY_TLS_KEY_FILE"),
        "{err}"
    );
    assert_eq!(connect(&ca, addr, &[]).await.1, second);

    // A missing file.
    std::fs::remove_file(&files.key).unwrap();
    let err = tls.resolver().reload(true).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert_eq!(connect(&ca, addr, &[]).await.1, second);
    echo(&mut before, b"and still").await;
}

#[tokio::test]
async fn keep_fresh_polls_the_files_and_reloads_on_a_nudge() {
    let ca = TestCa::new();
    let files = Files::new();
    files.issue(&ca);
    let polled = TlsServer::from_files(files.files()).unwrap();
    let polled_addr = echo_server(polled.clone()).await;
    let other = Files::new();
    other.issue(&ca);
    let nudged = TlsServer::from_files(other.files()).unwrap();
    let nudged_addr = echo_server(nudged.clone()).await;

    let (nudge, nudges) = tokio::sync::watch::channel(());
    let fresh = tokio::spawn(keep_fresh(
        vec![polled.resolver().clone()],
        Duration::from_millis(50),
        nudges.clone(),
    ));
    // Zero interval: only a nudge reloads.
    let fresh_on_nudge = tokio::spawn(keep_fresh(
        vec![nudged.resolver().clone()],
        Duration::ZERO,
        nudges,
    ));

    let renewed = files.issue(&ca);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while connect(&ca, polled_addr, &[]).await.1 != renewed {
        assert!(
            std::time::Instant::now() < deadline,
            "the poll never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let renewed = other.issue(&ca);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_ne!(
        connect(&ca, nudged_addr, &[]).await.1,
        renewed,
        "reloaded without a nudge"
    );
    nudge.send(()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while connect(&ca, nudged_addr, &[]).await.1 != renewed {
        assert!(
            std::time::Instant::now() < deadline,
            "the nudge never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Dropping the sender stops both tasks.
    drop(nudge);
    tokio::time::timeout(Duration::from_secs(5), fresh)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), fresh_on_nudge)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_bad_pair_at_start_names_the_setting() {
    let ca = TestCa::new();
    let files = Files::new();
    files.issue(&ca);
    std::fs::write(&files.key, "no key here").unwrap();
    let err = TlsServer::from_files(files.files())
        .unwrap_err()
        .to_string();
    assert!(err.contains("AIRLOCK_PROXY_TLS_KEY_FILE"), "{err}");
    assert!(err.contains("no PRIVATE KEY"), "{err}");
}

/// A ClientHello that starts and stalls is cut off at the handshake timeout; so is a plain-text
/// client on a TLS listener.
#[tokio::test]
async fn a_slow_or_plain_text_handshake_is_closed() {
    let ca = TestCa::new();
    let files = Files::new();
    files.issue(&ca);
    let addr = echo_server_with(AcceptOptions {
        tls: Some(TlsServer::from_files(files.files()).unwrap()),
        handshake_timeout: Duration::from_millis(300),
        ..AcceptOptions::default()
    })
    .await;
    for first in [&b"\x16\x03\x01"[..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(first).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest))
            .await
            .expect("the connection was closed");
        // Closed (perhaps after a TLS alert), never answered in HTTP.
        assert!(read.is_err() || !rest.starts_with(b"HTTP/"), "{rest:?}");
    }
}
