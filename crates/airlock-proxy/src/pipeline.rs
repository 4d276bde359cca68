//! A request's journey, top to bottom, one named phase at a time:
//!
//! 1. **accept**: the request as a whole: method, size of the head, shape of the target
//!    (the connection itself, its timeouts and limits, is `server`'s);
//! 2. **identify**: find the one `gws_` token and check its format, before any lookup;
//! 3. **authenticate**: find it in memory (or, once, in the source), not revoked, not expired;
//! 4. **authorize**: its devbox runs and the peer address is one of the devbox's; the devbox
//!    is within its rate limit; the gateway's stages start their runs for this request and may
//!    refuse it (`stage`: nothing at all for a gateway without stages);
//! 5. **rewrite**: remove the token and hop-by-hop headers, set the credential and custom headers,
//!    build the upstream URL from the gateway config alone;
//!    if a stage asks, the request body is read ahead (capped) for it to read or rewrite;
//! 6. **forward**: take a slot of the upstream origin's concurrency cap (or answer 503 at once),
//!    send it with the shared client, bounded by the response-header timeout;
//! 7. **stream back**: clean the response headers and pass the body through as it arrives, the
//!    stages watching its frames;
//! 8. **record**: the [`Recorder`] follows the request and emits its audit event when the body
//!    ends or the client goes away.
//!
//! Every refusal is a [`ProxyError`], turned into a response in one place. Before all of it the
//! request gets its id (`request_id`), which goes upstream, onto every response, into the log
//! line and into the audit event.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::audit::Recorder;
use crate::body::{Kind, RequestBody, ResponseBody};
use crate::conn::{InFlight, ServeCtx};
use crate::error::ProxyError;
use crate::limits::GatePermit;
use crate::metrics::UpstreamErrorKind;
use crate::request_id;
use crate::rewrite::{self, Presented, Route};
use crate::stage::{RequestHead, Runs};
use crate::state::{CustomValue, GatewayEntry, Refusal, SecretEntry, TokenEntry};
use crate::RequestCtx;

/// What a request turned into.
pub(crate) enum Outcome {
    /// A response to stream back, holding its slot of the origin's concurrency cap until done.
    Response(Response<Kind>, Option<GatePermit>),
    /// The upstream switched protocols: answer 101 and splice the two connections.
    Upgraded {
        head: Response<Kind>,
        client: OnUpgrade,
        upstream: OnUpgrade,
        permit: Option<GatePermit>,
    },
}

/// Serves one request. Never fails: errors become the contract's JSON error responses.
pub(crate) async fn handle(
    shared: &RequestCtx,
    ctx: &Arc<ServeCtx>,
    req: Request<Incoming>,
    peer: SocketAddr,
    in_flight: InFlight,
) -> Response<ResponseBody> {
    let id = request_id::of(req.headers());
    let mut record = Recorder::new(
        &shared.audit,
        &shared.metrics,
        id.clone(),
        req.method(),
        req.uri(),
        peer.ip(),
    );
    if let Some(tracer) = &shared.tracer {
        record.traced(tracer, req.headers());
    }
    let (mut parts, body) = match proxy(shared, req, peer.ip(), &id, &mut record).await {
        Ok(Outcome::Response(response, permit)) => {
            let (parts, kind) = response.into_parts();
            let staged = record.has_runs();
            let mut body = ResponseBody::new(kind, Some(record), Some(in_flight)).holding(permit);
            if staged {
                body = body.draining_to(&shared.drains);
            }
            (parts, body)
        }
        Ok(Outcome::Upgraded {
            head,
            client,
            upstream,
            permit,
        }) => {
            in_flight.upgraded();
            splice(ctx, client, upstream, record, permit);
            let (parts, kind) = head.into_parts();
            (parts, ResponseBody::new(kind, None, Some(in_flight)))
        }
        Err(err) => {
            let d = err.describe();
            tracing::debug!(
                request_id = id.to_str().unwrap_or_default(),
                code = d.code.as_str(),
                status = d.status.as_u16(),
                "refused a request"
            );
            shared.metrics.refusal(d.code);
            record.refused(&err);
            let response = err.to_response(|b| Kind::Full(Some(b)));
            let (parts, kind) = response.into_parts();
            let body = ResponseBody::new(kind, Some(record), Some(in_flight));
            (parts, body)
        }
    };
    request_id::stamp(&mut parts.headers, &id);
    Response::from_parts(parts, body)
}

async fn proxy(
    shared: &RequestCtx,
    mut req: Request<Incoming>,
    peer: IpAddr,
    request_id: &http::HeaderValue,
    record: &mut Recorder,
) -> Result<Outcome, ProxyError> {
    let config = &shared.config;

    // 1. accept
    rewrite::check_request(
        req.method(),
        req.uri(),
        req.headers(),
        config.max_header_bytes,
    )?;

    // 2. identify
    let presented = rewrite::identify(req.headers())?;

    // 3. authenticate
    let token = authenticate(shared, &presented, record).await?;
    record.token(&token);

    // 4. authorize
    if token.secret.is_none() {
        // A router gateway's token: the router picks a backend, and each backend brings its
        // own credential (`router`).
        check_devbox(&token, peer)?;
        check_scope_and_rate(shared, &token, &req)?;
        // Boxed: the router's future is several KiB, and every request's future (boxed per
        // request by `server`) would otherwise be as large as its largest branch.
        return Box::pin(crate::router::serve(
            shared, req, &token, request_id, record,
        ))
        .await;
    }
    let route = authorize(&token, peer)?;
    check_scope_and_rate(shared, &token, &req)?;
    record.secret_version(route.secret.version);
    if !route.gateway.stages.is_empty() {
        let head = RequestHead {
            method: req.method(),
            path: req.uri().path(),
        };
        *record.runs() = Runs::start(&route.gateway.stages, &head);
        record.runs().admit()?;
    }
    // Budgets and rate limits (`quota`): a run last, so that it sees what metering recorded.
    let ticket = match shared.quota.start(
        &token,
        req.method(),
        route.gateway.llm.api,
        Some(&route.gateway),
    ) {
        Some((run, ticket)) => {
            record.runs().push(run);
            Some(ticket)
        }
        None => None,
    };
    let staged = record.has_runs();

    // 5. rewrite
    let websocket = rewrite::is_websocket(req.method(), req.version(), req.headers());
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let uri = rewrite::upstream_uri(&route.gateway, req.uri())?;
    rewrite::request_headers(req.headers_mut(), &route, websocket)?;
    req.headers_mut()
        .insert(&request_id::X_REQUEST_ID, request_id.clone());
    // The request is turned into the upstream's in place: new target, its own body type, and
    // nothing of the client's connection (version, extensions).
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.extensions_mut() = http::Extensions::new();
    let mut upstream_req = req.map(|body| {
        if websocket {
            RequestBody::empty()
        } else {
            let bytes_in = Arc::new(AtomicU64::new(0));
            record.bytes_in(bytes_in.clone());
            RequestBody::new(body, bytes_in)
        }
    });
    if staged {
        read_ahead(&mut upstream_req, record).await?;
    }
    if let Some(ticket) = &ticket {
        ticket.admit(&shared.quota).await?;
    }

    // 6. forward
    let permit = shared
        .gates
        .enter(&route.gateway.scheme, &route.gateway.authority)
        .inspect_err(|_| record.upstream_failed(UpstreamErrorKind::Busy))?;
    let client = if websocket {
        &shared.ws_client
    } else {
        &shared.client
    };
    record.trace_upstream(&mut upstream_req, &route.gateway.authority, Vec::new);
    let sent =
        tokio::time::timeout(config.response_header_timeout, client.request(upstream_req)).await;
    let mut response = match sent {
        Err(_) => {
            record.upstream_failed(UpstreamErrorKind::Timeout);
            return Err(ProxyError::UpstreamTimeout);
        }
        Ok(Err(err)) => {
            let (err, kind) = crate::upstream::classify(&err);
            record.upstream_failed(kind);
            return Err(err);
        }
        Ok(Ok(response)) => response,
    };
    record.upstream(response.status().as_u16());

    // 7. stream back
    let upgraded = websocket && response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upstream_upgrade = upgraded.then(|| hyper::upgrade::on(&mut response));
    let (mut parts, body) = response.into_parts();
    // The upstream's headers are cleaned first: what the stages add (`x-ratelimit-*`) is
    // Airlock's own and holds no secret to scrub.
    rewrite::response_headers(&mut parts.headers, &route, upgraded);
    if staged {
        record.runs().response_head(&mut parts);
    }
    // The client's connection has its own version; extensions belong to the upstream connection.
    parts.version = Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    match (client_upgrade, upstream_upgrade) {
        (Some(client), Some(upstream)) => Ok(Outcome::Upgraded {
            head: Response::from_parts(parts, Kind::Full(None)),
            client,
            upstream,
            permit,
        }),
        _ => Ok(Outcome::Response(
            Response::from_parts(parts, Kind::Upstream(body, route)),
            permit,
        )),
    }
}

/// The request-body phase of the stages: reads the body ahead when a run asks (up to the
/// largest cap asked for), hands it to the runs, sends what they leave (its length set anew),
/// and lets them see the head that goes upstream.
async fn read_ahead(
    req: &mut Request<RequestBody>,
    record: &mut Recorder,
) -> Result<(), ProxyError> {
    if let Some(cap) = record.runs().body_cap() {
        let mut read = req.body_mut().read_ahead(cap).await?;
        record.runs().request_body(read.as_mut())?;
        if let Some(body) = read {
            // Set anew only when a run changed the length (or the client sent none).
            let sent = req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if sent != Some(body.len()) {
                req.headers_mut()
                    .insert(http::header::CONTENT_LENGTH, body.len().into());
            }
            req.body_mut().replace(body);
        }
    }
    let (mut head, body) = std::mem::replace(req, Request::new(RequestBody::empty())).into_parts();
    record.runs().upstream_request(&mut head);
    *req = Request::from_parts(head, body);
    Ok(())
}

/// Finds the token: in memory first; a token that is not there has its checksum checked, and
/// may have been minted a moment ago, so the source is asked once (guarded by
/// [`crate::feed::TokenLoader`]).
async fn authenticate(
    shared: &RequestCtx,
    presented: &Presented<'_>,
    record: &mut Recorder,
) -> Result<Arc<TokenEntry>, ProxyError> {
    let state = &shared.state;
    let digest = &presented.digest;
    let token = match state.lookup(digest) {
        Some(token) => token,
        None => {
            presented.check_checksum()?;
            if let Some((refusal, owner)) = state.refusal_owned(digest) {
                // A revoked or shut-down token's refusal is its account's audit event.
                record.owner(owner);
                return Err(match refusal {
                    Refusal::Unknown => ProxyError::UnknownToken,
                    Refusal::Revoked => ProxyError::RevokedToken,
                    Refusal::Expired => ProxyError::ExpiredToken,
                    Refusal::DevboxShutdown => ProxyError::DevboxShutdown,
                });
            }
            if !state.ready() {
                return Err(ProxyError::StateNotLoaded);
            }
            if !shared.loader.load(state, digest).await? {
                return Err(ProxyError::UnknownToken);
            }
            state.lookup(digest).ok_or(ProxyError::StateUnavailable)?
        }
    };
    if token
        .expires_at_ms
        .is_some_and(|t| t <= airlock_core::time::now_ms())
    {
        return Err(ProxyError::ExpiredToken);
    }
    Ok(token)
}

/// A scoped token's methods and paths, and the devbox's rate limit.
fn check_scope_and_rate(
    shared: &RequestCtx,
    token: &TokenEntry,
    req: &Request<Incoming>,
) -> Result<(), ProxyError> {
    if let Some(scope) = &token.scope {
        if !scope.allows(req.method().as_str(), req.uri().path()) {
            return Err(ProxyError::TokenScope);
        }
    }
    if let Some(limiter) = &shared.limiter {
        limiter.check(&token.devbox.id)?;
    }
    Ok(())
}

/// The devbox runs and the caller's address is one of its own.
fn check_devbox(token: &TokenEntry, peer: IpAddr) -> Result<(), ProxyError> {
    let devbox = token.devbox.load().ok_or(ProxyError::DevboxShutdown)?;
    if !devbox.running {
        return Err(ProxyError::DevboxShutdown);
    }
    // The caller's address (the socket's peer, or what a trusted proxy's PROXY header named, as
    // `server` decided), IPv4-mapped IPv6 compared as IPv4; never X-Forwarded-For.
    if !devbox.source_addresses.contains(peer) {
        return Err(ProxyError::AddressNotAllowed);
    }
    Ok(())
}

/// Checks the devbox and the peer, and takes the versions of everything the request will use.
pub(crate) fn authorize(token: &TokenEntry, peer: IpAddr) -> Result<Route, ProxyError> {
    check_devbox(token, peer)?;
    let devbox = token.devbox.load().ok_or(ProxyError::DevboxShutdown)?;
    let gateway = token
        .gateway
        .load()
        .ok_or(if token.gateway.is_unverified() {
            ProxyError::GatewayUnverified
        } else {
            ProxyError::GatewayUnavailable
        })?;
    let secret = token
        .secret
        .as_ref()
        .and_then(|slot| slot.load())
        .ok_or(ProxyError::SecretUnavailable)?;
    if secret.material().is_none() {
        return Err(ProxyError::SecretUnavailable);
    }
    // The store never binds across accounts; a row that does was written by someone else.
    let account = &*token.account_id;
    if *devbox.account_id != *account
        || &gateway.account_id != account
        || &secret.account_id != account
    {
        tracing::error!(
            token_id = %token.id,
            "a token references objects of another account; refusing it"
        );
        return Err(ProxyError::Internal("the token's state is inconsistent"));
    }
    let custom_secrets = custom_secrets(&gateway, account)?;
    Ok(Route {
        gateway,
        secret,
        custom_secrets,
    })
}

/// The current versions of a gateway's secret-backed custom headers, all of `account`.
pub(crate) fn custom_secrets(
    gateway: &GatewayEntry,
    account: &airlock_core::AccountId,
) -> Result<Vec<Arc<SecretEntry>>, ProxyError> {
    let mut out = Vec::new();
    for (_, value) in gateway.custom.iter() {
        if let CustomValue::Secret(slot) = value {
            let s = slot
                .load()
                .filter(|s| s.material().is_some() && &s.account_id == account); // public: ids
            out.push(s.ok_or(ProxyError::SecretUnavailable)?);
        }
    }
    Ok(out)
}

/// Joins the client's and the upstream's upgraded connections (a websocket) until either side
/// closes, or the server's grace period is over.
fn splice(
    ctx: &Arc<ServeCtx>,
    client: OnUpgrade,
    upstream: OnUpgrade,
    mut record: Box<Recorder>,
    permit: Option<GatePermit>,
) {
    let kill = ctx.kill.clone();
    ctx.splices.spawn(async move {
        // A websocket holds its slot of the origin's cap for as long as it is open.
        let _permit = permit;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(error = %err, "a websocket upgrade failed");
                record.broken("upgrade_failed");
                return;
            }
        };
        let mut client = Counted {
            io: TokioIo::new(client),
            read: 0,
            written: 0,
        };
        let mut upstream = TokioIo::new(upstream);
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                record.spliced(client.read, client.written);
                match copied {
                    Ok(_) => record.complete(),
                    // A side that vanishes without closing properly still ends the session.
                    Err(_) => record.broken("connection_reset"),
                }
            }
            () = kill.cancelled() => {
                record.spliced(client.read, client.written);
                record.broken("shutdown");
            }
        }
    });
}

/// The client's side of a splice, counting bytes each way even when the copy ends in an error.
struct Counted<T> {
    io: T,
    read: u64,
    written: u64,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = polled {
            self.written += n as u64;
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
