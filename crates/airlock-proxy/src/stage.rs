//! The seam where features plug into a request: named phases that a *stage* can hook, in the
//! spirit of pingora's `ProxyHttp`. Metering is a stage; limits, routing and translation are to
//! be stages too.
//!
//! A gateway config's stages are chosen when the snapshot is built (`state::GatewayEntry`), and
//! each request asks each stage for its own state for this request (a [`StageRun`]), or nothing.
//! The phases, in the order a request meets them:
//!
//! 1. [`StageRun::admit`]: after the token, the devbox and the address are checked; may refuse;
//! 2. [`StageRun::body_cap`] / [`StageRun::request_body`]: the request body, read whole up to
//!    the largest cap any run asks for, may be read and rewritten (a body over the cap, or one
//!    without a known end within it, streams unseen, and the runs are told so);
//! 3. [`StageRun::upstream_request`]: the request head as it goes upstream;
//! 4. [`StageRun::response_head`]: the upstream's response head;
//! 5. [`StageRun::frame`]: each DATA frame of the response as it passes (a watcher: it may trim
//!    the frame but never holds it back);
//! 6. [`StageRun::finish`]: the request ended (sent, broken, or the client left); the run adds
//!    what it knows to the audit event.
//!
//! **Invariant: a gateway without stages runs exactly the passthrough path.** Its request has an
//! empty list of runs (no allocation), every phase is a loop over nothing, the request body is
//! never read ahead, and no frame is looked at.

use bytes::Bytes;
use http::Method;

use std::sync::Arc;

use airlock_core::state::{LlmSettings, RequestAuditEvent};

use crate::error::ProxyError;

/// What a stage may see of a request before it starts.
pub(crate) struct RequestHead<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
}

/// A feature that acts on the requests of the gateway configs it is attached to.
pub(crate) trait Stage: Send + Sync + 'static {
    /// This stage's state for one request; `None` when it has nothing to do for it.
    fn start(&self, head: &RequestHead<'_>) -> Option<Box<dyn StageRun>>;
}

/// How a request ended, for [`StageRun::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The response was sent to its end.
    Complete,
    /// The client went away before the end; the response was not read to its end.
    ClientGone,
    /// The client went away, and the rest of the response was read without it (a drain).
    Drained,
    /// The upstream broke off, or no response came.
    Failed,
}

/// One stage's state for one request. Every phase has a default that does nothing.
pub(crate) trait StageRun: Send {
    /// After authorization, before anything is read or sent.
    fn admit(&mut self) -> Result<(), ProxyError> {
        Ok(())
    }

    /// The request body this run wants to read before the request goes upstream, at most this
    /// many bytes.
    fn body_cap(&self) -> Option<usize> {
        None
    }

    /// The whole request body (`Some`), or `None` when it was larger than the cap or its end was
    /// not within it (it streams unseen). The run may replace the body.
    fn request_body(&mut self, _body: Option<&mut Bytes>) -> Result<(), ProxyError> {
        Ok(())
    }

    /// The head going upstream, after the rewrite.
    fn upstream_request(&mut self, _head: &mut http::request::Parts) {}

    /// The upstream's response head, before it is cleaned and sent on.
    fn response_head(&mut self, _head: &mut http::response::Parts) {}

    /// A DATA frame of the response on its way to the client. May trim it; may hold back an
    /// incomplete tail (a partial SSE event) that the next frame completes, never a whole one.
    fn frame(&mut self, _data: &mut Bytes) {}

    /// Whether the run holds bytes back that must still reach the client.
    fn holds(&self) -> bool {
        false
    }

    /// The upstream's body ended: what the run held back, to send last.
    fn end(&mut self) -> Option<Bytes> {
        None
    }

    /// Whether the rest of the response is worth reading after the client left (it holds what
    /// this run needs, such as the usage of a stream).
    fn wants_drain(&self) -> bool {
        false
    }

    /// The input and output tokens of a response read to its end, for a run that meters.
    fn usage(&self) -> Option<(u64, u64)> {
        None
    }

    /// The request ended; the run adds what it learnt to the event.
    fn finish(&mut self, _end: End, _event: &mut RequestAuditEvent) {}
}

/// The stages of a gateway config, from its LLM settings: none for `api: none`.
pub(crate) fn for_gateway(llm: &LlmSettings) -> Box<[Arc<dyn Stage>]> {
    if llm.api.is_metered() {
        Box::new([Arc::new(crate::meter::MeterStage::new(llm)) as Arc<dyn Stage>])
    } else {
        Box::new([])
    }
}

/// The runs of one request, in stage order.
#[derive(Default)]
pub(crate) struct Runs(Vec<Box<dyn StageRun>>);

impl Runs {
    pub(crate) fn start(stages: &[Arc<dyn Stage>], head: &RequestHead<'_>) -> Runs {
        Runs(stages.iter().filter_map(|s| s.start(head)).collect())
    }

    /// Adds a run after the gateway's own (the limits' run, which reads what metering wrote).
    pub(crate) fn push(&mut self, run: Box<dyn StageRun>) {
        self.0.push(run);
    }

    /// Adds other runs after these (a routed request's limits run after its backend's meter).
    pub(crate) fn append(&mut self, other: Runs) {
        self.0.extend(other.0);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn admit(&mut self) -> Result<(), ProxyError> {
        self.0.iter_mut().try_for_each(|r| r.admit())
    }

    /// The largest body cap any run asks for.
    pub(crate) fn body_cap(&self) -> Option<usize> {
        self.0.iter().filter_map(|r| r.body_cap()).max()
    }

    pub(crate) fn request_body(&mut self, mut body: Option<&mut Bytes>) -> Result<(), ProxyError> {
        for run in &mut self.0 {
            if run.body_cap().is_some() {
                run.request_body(body.as_deref_mut())?;
            }
        }
        Ok(())
    }

    pub(crate) fn upstream_request(&mut self, head: &mut http::request::Parts) {
        self.0.iter_mut().for_each(|r| r.upstream_request(head));
    }

    pub(crate) fn response_head(&mut self, head: &mut http::response::Parts) {
        self.0.iter_mut().for_each(|r| r.response_head(head));
    }

    pub(crate) fn frame(&mut self, data: &mut Bytes) {
        self.0.iter_mut().for_each(|r| r.frame(data));
    }

    pub(crate) fn holds(&self) -> bool {
        self.0.iter().any(|r| r.holds())
    }

    /// What the runs held back, in one last frame.
    pub(crate) fn end(&mut self) -> Option<Bytes> {
        let mut last: Option<Bytes> = None;
        for run in &mut self.0 {
            if let Some(held) = run.end() {
                last = Some(match last {
                    None => held,
                    Some(before) => [before, held].concat().into(),
                });
            }
        }
        last
    }

    pub(crate) fn wants_drain(&self) -> bool {
        self.0.iter().any(|r| r.wants_drain())
    }

    /// The first metered usage among the runs ([`StageRun::usage`]).
    pub(crate) fn usage(&self) -> Option<(u64, u64)> {
        self.0.iter().find_map(|r| r.usage())
    }

    pub(crate) fn finish(&mut self, end: End, event: &mut RequestAuditEvent) {
        self.0.iter_mut().for_each(|r| r.finish(end, event));
    }
}
