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
use hyper::body::Incoming;

use crate::audit::Recorder;
use crate::limits::GatePermit;
use crate::rewrite::{self, Route};
use crate::server::InFlight;

/// The client's request body, streamed upstream as it arrives.
pub(crate) struct RequestBody {
    inner: Option<Incoming>,
    bytes: Arc<AtomicU64>,
}

impl RequestBody {
    pub(crate) fn new(inner: Incoming, bytes: Arc<AtomicU64>) -> Self {
        RequestBody {
            inner: Some(inner),
            bytes,
        }
    }

    /// No body (a websocket handshake).
    pub(crate) fn empty() -> Self {
        RequestBody {
            inner: None,
            bytes: Arc::default(),
        }
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
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
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
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

pub(crate) enum Kind {
    /// The upstream's body; its trailers are scrubbed of the route's secrets like its headers.
    Upstream(Incoming, Route),
    Full(Option<Bytes>),
}

/// The body the client receives.
pub(crate) struct ResponseBody {
    kind: Kind,
    record: Option<Box<Recorder>>,
    /// The connection's in-flight guard, also told when a frame waits for the client (the
    /// send timeout, `server`).
    in_flight: Option<InFlight>,
    /// The request's slot of its upstream origin's concurrency cap, given back when the body
    /// ends or is dropped.
    _permit: Option<GatePermit>,
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
            _permit: None,
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
        self._permit = permit;
        self
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
        };
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
            Kind::Upstream(incoming, _) => incoming.is_end_stream(),
            Kind::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(incoming, _) => incoming.size_hint(),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
