//! The body of a routed stream once its content has started: what the peek held back first,
//! then the backend's frames as they arrive, seen by the backend's stages (the meter reads the
//! backend's own dialect) and translated into the client's dialect when the two differ.
//!
//! A backend that breaks off now cannot be replaced (content already reached the client): the
//! stream ends with an error event in the client's dialect instead of a cut connection.

use std::pin::Pin;
use std::task::{Context, Poll};

use airlock_llm::translate::{error_body, Dialect, StreamTranslator};
use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;

use crate::audit::Recorder;
use crate::limits::GatePermit;
use crate::rewrite::Route;

pub(crate) struct RoutedBody {
    held: Option<Bytes>,
    upstream: Incoming,
    translator: Option<StreamTranslator>,
    client: Dialect,
    ended: bool,
    /// The backend's route (its secret stays loaded while its response streams) and its slot
    /// of the origin's concurrency cap.
    _route: Route,
    _permit: Option<GatePermit>,
}

impl RoutedBody {
    pub(crate) fn new(
        held: Bytes,
        upstream: Incoming,
        translator: Option<StreamTranslator>,
        client: Dialect,
        route: Route,
        permit: Option<GatePermit>,
    ) -> RoutedBody {
        RoutedBody {
            held: (!held.is_empty()).then_some(held),
            upstream,
            translator,
            client,
            ended: false,
            _route: route,
            _permit: permit,
        }
    }

    /// The backend's body already ended while the router peeked: only what was held is left.
    pub(crate) fn mark_ended(&mut self) {
        self.ended = true;
    }

    /// What is left to read of the backend's body after the client left: its body, its route
    /// and its origin slot, for a drain (`body::Drains`); `None` when it already ended.
    pub(crate) fn into_drain(self) -> Option<(Incoming, Route, Option<GatePermit>)> {
        (!self.ended).then_some((self.upstream, self._route, self._permit))
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.ended && self.held.is_none()
    }

    /// The next frame for the client; `record` is the request's (its runs are the backend's
    /// stages).
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
        mut record: Option<&mut Box<Recorder>>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        loop {
            if let Some(held) = self.held.take() {
                return Poll::Ready(Some(Ok(Frame::data(held))));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.upstream).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(mut data) = frame.into_data() else {
                        // Trailers are not sent on: the client's stream is Airlock's.
                        continue;
                    };
                    if let Some(record) = record.as_deref_mut() {
                        record.runs().frame(&mut data);
                    }
                    if let Some(out) = self.pass(&data) {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    self.ended = true;
                    if let Some(record) = record.as_deref_mut() {
                        record.stream_error("upstream_failed");
                    }
                    let mut out = Vec::new();
                    match &mut self.translator {
                        Some(t) => t.finish(&mut out),
                        None => out = error_event(self.client, "the backend broke off the stream"),
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    let mut last = Vec::new();
                    if let Some(record) = record.as_deref_mut() {
                        if let Some(held) = record.runs().end() {
                            if let Some(out) = self.pass(&held) {
                                last.extend_from_slice(&out);
                            }
                        }
                    }
                    if let Some(t) = &mut self.translator {
                        t.finish(&mut last);
                        if t.upstream_error().is_some() {
                            if let Some(record) = record.as_deref_mut() {
                                record.stream_error("upstream_failed");
                            }
                        }
                    }
                    if last.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(last.into()))));
                }
            }
        }
    }

    /// The client's bytes for a piece of the backend's body; `None` when there are none yet.
    fn pass(&mut self, data: &Bytes) -> Option<Bytes> {
        match &mut self.translator {
            None => (!data.is_empty()).then(|| data.clone()),
            Some(t) => {
                let mut out = Vec::new();
                t.feed(data, &mut out);
                (!out.is_empty()).then(|| out.into())
            }
        }
    }
}

/// An error event of Airlock's own in `dialect`'s stream framing.
pub(crate) fn error_event(dialect: Dialect, message: &str) -> Vec<u8> {
    let body = error_body(dialect, 502, message);
    let mut out = Vec::with_capacity(body.len() + 32);
    if dialect == Dialect::AnthropicMessages {
        out.extend_from_slice(b"event: error\n");
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\n\n");
    out
}

impl std::fmt::Debug for RoutedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutedBody")
            .field("ended", &self.ended)
            .finish()
    }
}
