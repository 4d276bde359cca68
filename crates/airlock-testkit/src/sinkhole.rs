//! A listener that stands in for the attacker's host: it accepts every connection, records every
//! byte it receives and never answers.
//!
//! Tests point whatever an attack would reach (an absolute-form target, a forged `Host`, a
//! redirect's `Location`) at a [`Sinkhole`] and assert afterwards that it saw no connection at
//! all. Because it answers nothing it catches any protocol: a TLS ClientHello, an HTTP/2
//! preface or an HTTP/1 request all count as a connection and their bytes are kept.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A silent, recording TCP listener on 127.0.0.1.
pub struct Sinkhole {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl Sinkhole {
    pub async fn start() -> Result<Sinkhole> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let connections = connections.clone();
            let received = received.clone();
            async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let received = received.clone();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 8192];
                        while let Ok(n) = stream.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            received.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                    });
                }
            }
        });
        Ok(Sinkhole {
            addr,
            connections,
            received,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, for a `Host` header or an authority.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    /// TCP connections accepted so far, including ones that sent nothing.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every byte received, all connections concatenated.
    pub fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Sinkhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}
