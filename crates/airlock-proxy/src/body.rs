//! The two bodies of a proxied exchange, passed through without buffering.
//!
//! [`RequestBody`] is hyper's incoming request body on its way upstream, counted. [`ResponseBody`]
//! is either the upstream's response body (counted, frame by frame, so an SSE event leaves as
//! soon as it arrives) or a small body Airlock wrote itself (an error). It carries the request's
//! [`Recorder`], which emits the audit event when the body ends or is dropped (the client went
//! away), and the connection's in-flight guard.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::audit::Recorder;
use crate::conn::InFlight;
use crate::error::ProxyError;
use crate::limits::GatePermit;
use crate::rewrite::{self, Route};

/// The client's request body, streamed upstream as it arrives. When a stage read it ahead
/// (`stage::StageRun::request_body`), what was read goes first, then whatever is left.
pub(crate) struct RequestBody {
    /// Bytes already read from the client (and perhaps rewritten by a stage), sent first.
    prefix: Option<Bytes>,
    /// The trailers read ahead with them, sent after them.
    trailers: Option<http::HeaderMap>,
    inner: Option<Incoming>,
    bytes: Arc<AtomicU64>,
}

impl RequestBody {
    pub(crate) fn new(inner: Incoming, bytes: Arc<AtomicU64>) -> Self {
        RequestBody {
            prefix: None,
            trailers: None,
            inner: Some(inner),
            bytes,
        }
    }

    /// No body (a websocket handshake).
    pub(crate) fn empty() -> Self {
        RequestBody {
            prefix: None,
            trailers: None,
            inner: None,
            bytes: Arc::default(),
        }
    }

    /// Reads the body ahead, whole, if it ends within `cap` bytes: `Some(body)`, and nothing is
    /// left to stream; else `None`, and what was read goes first when the body streams on.
    pub(crate) async fn read_ahead(&mut self, cap: usize) -> Result<Option<Bytes>, ProxyError> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(Some(self.prefix.take().unwrap_or_default()));
        };
        let expected = inner.size_hint().lower();
        if inner.size_hint().exact().is_some_and(|n| n > cap as u64) {
            return Ok(None);
        }
        // A body that arrives in one frame (most do: a JSON call is sent in one write, and read
        // with its head) is kept as that frame, not copied.
        let mut first: Option<Bytes> = None;
        let mut read = bytes::BytesMut::new();
        while let Some(frame) = inner.frame().await {
            let frame = frame.map_err(|_| ProxyError::ClientBodyFailed)?;
            match frame.into_data() {
                Ok(data) if first.is_none() && read.is_empty() && data.len() <= cap => {
                    first = Some(data);
                }
                Ok(data) => {
                    if let Some(first) = first.take() {
                        let room = usize::try_from(expected).unwrap_or(cap).min(cap + 1);
                        read.reserve(room.max(first.len() + data.len()));
                        read.extend_from_slice(&first);
                    }
                    read.extend_from_slice(&data);
                    if read.len() > cap {
                        self.prefix = Some(read.freeze());
                        return Ok(None);
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.trailers = Some(trailers);
                    }
                }
            }
        }
        self.inner = None;
        Ok(Some(first.unwrap_or_else(|| read.freeze())))
    }

    /// A body Airlock wrote whole (a router's request to a backend).
    pub(crate) fn full(body: Bytes) -> Self {
        RequestBody {
            prefix: Some(body),
            trailers: None,
            inner: None,
            bytes: Arc::default(),
        }
    }

    /// Sends `body` (read ahead whole) instead of the client's.
    pub(crate) fn replace(&mut self, body: Bytes) {
        self.prefix = Some(body);
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(prefix) = this.prefix.take() {
            this.bytes.fetch_add(prefix.len() as u64, Ordering::Relaxed);
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && self.trailers.is_none()
            && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let inner = self
            .inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + prefix);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

pub(crate) enum Kind {
    /// The upstream's body; its trailers are scrubbed of the route's secrets like its headers.
    Upstream(Incoming, Route),
    Full(Option<Bytes>),
    /// A router's answer from one of its backends (`router`), translated as it streams.
    Routed(Box<crate::router::RoutedBody>),
}

/// The body the client receives.
pub(crate) struct ResponseBody {
    kind: Kind,
    /// The request's context; taken when the response ends. Its stages watch every DATA frame.
    record: Option<Box<Recorder>>,
    /// The connection's in-flight guard, also told when a frame waits for the client (the
    /// send timeout, `server`).
    in_flight: Option<InFlight>,
    /// The request's slot of its upstream origin's concurrency cap, given back when the body
    /// ends or is dropped (or a drain of it ends).
    permit: Option<GatePermit>,
    /// Where the rest of the response is read when the client leaves and a stage still needs
    /// it; `None` for a gateway without stages.
    drains: Option<Arc<Drains>>,
}

impl ResponseBody {
    pub(crate) fn new(
        kind: Kind,
        record: Option<Box<Recorder>>,
        in_flight: Option<InFlight>,
    ) -> Self {
        let mut body = ResponseBody {
            kind,
            record,
            in_flight,
            permit: None,
            drains: None,
        };
        // A body that is empty from the start is done as soon as it exists: hyper may never
        // poll it. Any other waits for the client from now on, until hyper polls it.
        if body.is_end_stream() {
            if let Some(record) = body.record.take() {
                record.complete();
            }
        } else if let Some(in_flight) = &body.in_flight {
            in_flight.handed();
        }
        body
    }
}

impl ResponseBody {
    pub(crate) fn holding(mut self, permit: Option<GatePermit>) -> Self {
        self.permit = permit;
        self
    }

    /// Lets the rest of the response be drained there if the client leaves early.
    pub(crate) fn draining_to(mut self, drains: &Arc<Drains>) -> Self {
        self.drains = Some(drains.clone());
        self
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // The client left before the end (a body that ended took its record). If a stage still
        // needs what the rest of the response holds (a stream's usage), read it without the
        // client; otherwise the record's own drop writes the event.
        let (Some(drains), Some(record)) = (&self.drains, self.record.take()) else {
            return;
        };
        if !record.wants_drain() {
            return;
        }
        match std::mem::replace(&mut self.kind, Kind::Full(None)) {
            Kind::Upstream(incoming, route) => {
                drains.start(incoming, route, record, self.permit.take());
            }
            // A routed stream: the backend's stages (its meter) read the rest of the backend's
            // own bytes; nothing is translated, nobody is left to read it.
            Kind::Routed(routed) => {
                if let Some((incoming, route, permit)) = routed.into_drain() {
                    drains.start(incoming, route, record, permit.or(self.permit.take()));
                }
            }
            Kind::Full(_) => {}
        }
    }
}

/// Responses read on after their client left, so that a stage can still see what their ends
/// hold (an LLM stream's usage): at most `max` at once, each for at most `timeout`. Beyond that
/// the request is recorded with what was seen (a stage estimates).
pub(crate) struct Drains {
    tracker: TaskTracker,
    slots: Arc<Semaphore>,
    timeout: std::time::Duration,
}

impl Drains {
    pub(crate) fn new(max: usize, timeout: std::time::Duration) -> Arc<Drains> {
        Arc::new(Drains {
            tracker: TaskTracker::new(),
            slots: Arc::new(Semaphore::new(max)),
            timeout,
        })
    }

    fn start(
        &self,
        mut incoming: Incoming,
        route: Route,
        mut record: Box<Recorder>,
        permit: Option<GatePermit>,
    ) {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            tracing::debug!("no drain slot free; the request is recorded with what was seen");
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let timeout = self.timeout;
        self.tracker.spawn(async move {
            let _slot = slot;
            // The upstream connection is still in use: the origin's slot is held to the end.
            let _permit = permit;
            let _route = route;
            let _ = tokio::time::timeout(timeout, async {
                while let Some(Ok(frame)) = incoming.frame().await {
                    if let Ok(mut data) = frame.into_data() {
                        record.runs().frame(&mut data);
                        if !record.wants_drain() {
                            break;
                        }
                    }
                }
            })
            .await;
            record.drained();
        });
    }

    /// Waits for the drains running now (a shutdown).
    pub(crate) async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(in_flight) = &this.in_flight {
            in_flight.taken();
        }
        let mut polled = match &mut this.kind {
            Kind::Upstream(incoming, _) => Pin::new(incoming).poll_frame(cx),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Routed(routed) => routed.poll_frame(cx, this.record.as_mut()),
        };
        if let (Some(record), Kind::Upstream(..)) = (this.record.as_mut(), &this.kind) {
            match &mut polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_mut() {
                        // The stages' frame watchers (the upstream's frames only; nothing for
                        // a gateway without stages).
                        record.runs().frame(data);
                    }
                }
                // What a stage held back goes last.
                Poll::Ready(None) => {
                    if let Some(last) = record.runs().end() {
                        polled = Poll::Ready(Some(Ok(Frame::data(last))));
                    }
                }
                _ => {}
            }
        }
        if let (Poll::Ready(Some(Ok(frame))), Kind::Upstream(_, route)) = (&mut polled, &this.kind)
        {
            if let Some(trailers) = frame.trailers_mut() {
                rewrite::scrub(trailers, route);
            }
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(record)) = (frame.data_ref(), this.record.as_mut()) {
                    record.add_bytes_out(data.len());
                }
                // Also the last frame: hyper may hold it until the client's window opens, and
                // the body lives until it is sent.
                if let Some(in_flight) = &this.in_flight {
                    in_flight.handed();
                }
                if this.is_end_stream() {
                    if let Some(record) = this.record.take() {
                        record.complete();
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(record) = this.record.take() {
                    record.complete();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(record) = this.record.take() {
                    record.broken("upstream_failed");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(incoming, _) => {
                incoming.is_end_stream() && !self.record.as_ref().is_some_and(|r| r.holds())
            }
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Routed(routed) => routed.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(incoming, _) => incoming.size_hint(),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Routed(_) => SizeHint::default(),
        }
    }
}
