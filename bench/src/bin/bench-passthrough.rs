//! Arm A1: the smallest hyper proxy that forwards without checking anything. It is the floor for
//! any Rust proxy built on hyper: whatever Airlock costs above it is Airlock's own work.
//!
//! Same shape as Airlock's data plane: hyper-util's auto server, one pooled hyper-util client,
//! bodies streamed both ways, `TCP_NODELAY` on both sides. No token check, no header swap.
//!
//! `bench-passthrough --addr 127.0.0.1:9101 --upstream 127.0.0.1:9100 [--in-place]`
//!
//! `--in-place` swaps hyper-util's pooled client for a per-thread pool of
//! `hyper::client::conn::http1` connections driven by the request's own task (the request's
//! future, then its response body, polls the connection): no connection task, no pool lock, no
//! hand-off between tasks. It measures what issue 15's "per-worker pool driven in place" would
//! save before Airlock takes it on (docs/performance.md).

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::{Context, Result};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

type Upstream = Client<HttpConnector, Incoming>;
type Out = http_body_util::Either<
    http_body_util::Either<Incoming, in_place::Driven>,
    http_body_util::Empty<bytes::Bytes>,
>;

async fn forward(
    client: Option<&Upstream>,
    authority: &Authority,
    req: Request<Incoming>,
) -> Response<Out> {
    use http_body_util::Either::{Left, Right};
    let (mut parts, body) = req.into_parts();
    let mut uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority.clone());
    if let Some(pq) = parts.uri.path_and_query() {
        uri = uri.path_and_query(pq.clone());
    }
    match uri.build() {
        Ok(uri) => parts.uri = uri,
        Err(_) => return bad_gateway(),
    }
    let req = Request::from_parts(parts, body);
    match client {
        Some(client) => match client.request(req).await {
            Ok(response) => response.map(|b| Left(Left(b))),
            Err(_) => bad_gateway(),
        },
        None => match in_place::request(authority.as_str(), req).await {
            Some(response) => response.map(|b| Left(Right(b))),
            None => bad_gateway(),
        },
    }
}

mod in_place {
    //! A per-thread pool of HTTP/1 connections, each driven by whoever holds it.
    use std::cell::RefCell;
    use std::future::{poll_fn, Future};
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body::{Body, Frame, SizeHint};
    use hyper::body::Incoming;
    use hyper::client::conn::http1;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpStream;

    pub(crate) struct Conn {
        send: http1::SendRequest<Incoming>,
        conn: http1::Connection<TokioIo<TcpStream>, Incoming>,
    }

    thread_local! {
        static POOL: RefCell<Vec<Conn>> = const { RefCell::new(Vec::new()) };
    }

    impl Conn {
        /// Polls the connection; `Err` when it is gone.
        fn drive(&mut self, cx: &mut Context<'_>) -> Result<(), ()> {
            match Pin::new(&mut self.conn).poll(cx) {
                Poll::Pending => Ok(()),
                Poll::Ready(_) => Err(()),
            }
        }
    }

    async fn checkout(upstream: &str) -> Option<Conn> {
        while let Some(mut c) = POOL.with(|p| p.borrow_mut().pop()) {
            let ready = poll_fn(|cx| {
                if c.drive(cx).is_err() {
                    return Poll::Ready(false);
                }
                match c.send.poll_ready(cx) {
                    Poll::Ready(r) => Poll::Ready(r.is_ok()),
                    Poll::Pending => Poll::Ready(false),
                }
            })
            .await;
            if ready {
                return Some(c);
            }
        }
        let stream = TcpStream::connect(upstream).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (send, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
        Some(Conn { send, conn })
    }

    pub(crate) async fn request(
        upstream: &str,
        mut req: Request<Incoming>,
    ) -> Option<Response<Driven>> {
        // Hop-by-hop: `Connection: close` belongs to the client's connection, not this one
        // (a proxy does not forward it).
        req.headers_mut().remove(http::header::CONNECTION);
        let mut c = checkout(upstream).await?;
        let mut sent = std::pin::pin!(c.send.send_request(req));
        let response = poll_fn(|cx| {
            if let Poll::Ready(r) = sent.as_mut().poll(cx) {
                return Poll::Ready(r.ok());
            }
            if c.drive(cx).is_err() {
                return Poll::Ready(None);
            }
            sent.as_mut().poll(cx).map(Result::ok)
        })
        .await?;
        Some(response.map(|body| Driven {
            body,
            conn: Some(c),
        }))
    }

    /// The response body, driving its connection; the connection goes back to the pool when
    /// the body ends.
    pub(crate) struct Driven {
        body: Incoming,
        conn: Option<Conn>,
    }

    impl Body for Driven {
        type Data = Bytes;
        type Error = hyper::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            let this = &mut *self;
            if let Some(c) = &mut this.conn {
                if c.drive(cx).is_err() {
                    this.conn = None;
                }
            }
            let polled = Pin::new(&mut this.body).poll_frame(cx);
            if this.body.is_end_stream() {
                if let Some(mut c) = this.conn.take() {
                    // One more turn, so the connection sees the message end.
                    if c.drive(cx).is_ok() {
                        POOL.with(|p| p.borrow_mut().push(c));
                    }
                }
            }
            polled
        }

        fn is_end_stream(&self) -> bool {
            self.body.is_end_stream()
        }

        fn size_hint(&self) -> SizeHint {
            self.body.size_hint()
        }
    }
}

fn bad_gateway() -> Response<Out> {
    let mut r = Response::new(http_body_util::Either::Right(http_body_util::Empty::new()));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = arg(&args, "--addr").unwrap_or_else(|| "127.0.0.1:9101".into());
    let upstream = arg(&args, "--upstream").unwrap_or_else(|| "127.0.0.1:9100".into());
    let authority: Arc<Authority> = Arc::new(upstream.parse().context("--upstream")?);
    let threads: usize = arg(&args, "--threads")
        .map(|t| t.parse())
        .transpose()
        .context("--threads")?
        .unwrap_or(1);
    let in_place = args.iter().any(|a| a == "--in-place");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Arc<Upstream> = Arc::new(
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_max_idle_per_host(256)
                .build(connector),
        );
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("--addr {addr}"))?;
        let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            let authority = authority.clone();
            let server = server.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let client = client.clone();
                    let authority = authority.clone();
                    async move {
                        let client = (!in_place).then_some(&*client);
                        Ok::<_, Infallible>(forward(client, &authority, req).await)
                    }
                });
                let _ = server.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}
