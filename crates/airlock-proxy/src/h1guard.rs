//! Strict HTTP/1 framing, checked on the connection's bytes before hyper parses them
//! (SECURITY #8).
//!
//! hyper's parser is lenient where RFC 9112 allows a recipient to be: it accepts a bare LF as a
//! line end, and for a request with both `Content-Length` and `Transfer-Encoding` it lets the
//! latter win and closes the connection afterwards. Another parser on the way (a load balancer
//! in front of Airlock) may read the same bytes differently, which is what request smuggling
//! lives on. So every byte an HTTP/1 connection delivers goes through [`Scanner`] first, which
//! follows the message framing exactly as hyper will (request line, header lines, then a
//! `Content-Length` body or a chunked body with its trailers, then the next request) and refuses
//! what hyper would read in a way another parser might not:
//!
//! - a bare LF or a bare CR anywhere in a head, a chunk-size line or a trailer;
//! - obs-fold (a header line starting with a space or a tab);
//! - whitespace between a header name and its colon, or a header line without a colon;
//! - `Content-Length` together with `Transfer-Encoding`;
//! - two `Content-Length`s that differ, or one that is not plain digits;
//! - a `Transfer-Encoding` other than exactly one `chunked` (and any in HTTP/1.0);
//! - a chunk-size line with anything but hex digits and an extension of visible characters.
//!
//! A refused head is answered by hyper itself: the bytes of the head up to the offending byte
//! are passed on, followed by a NUL, which no part of a request head may contain, so hyper
//! answers 400 and closes the connection. Nothing after it is ever given to hyper, so a request
//! hidden behind the ambiguity cannot reach the pipeline. A violation inside a chunked body ends
//! the body with an error (the response may already be under way, so there is no 400 to give).
//!
//! Requests that ask to switch protocols (an `Upgrade` header, or `CONNECT`) are special: if the
//! upgrade happens, what follows is no longer HTTP. The guard passes such a request through
//! and then holds back whatever comes after it until the pipeline has answered: an upgrade
//! ([`Signal::upgraded`]) turns the guard off for the rest of the connection, and any other
//! answer ([`Signal::request_done`] for that request) resumes checking with the held bytes.
//! A client may not send anything before the answer to its upgrade request anyway (RFC 6455
//! §4.1), so holding costs nothing.
//!
//! HTTP/2 is recognised by its full 24-byte connection preface and not checked here: h2 frames
//! carry their own lengths, and hyper's h2 refuses malformed streams itself.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Appended to a refused head: NUL is invalid in every part of a request head, so hyper's parser
/// fails on it and hyper answers 400.
const POISON: &[u8] = b"\0\r\n\r\n";

/// Longest header name the scanner needs to recognise (`transfer-encoding`).
const NAME_CAP: usize = 24;
/// Longest `Content-Length` or `Transfer-Encoding` value accepted, whitespace included.
const VALUE_CAP: usize = 64;
/// Longest chunk extension accepted.
const CHUNK_EXT_CAP: usize = 4096;

/// Why a connection's bytes were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    BareLf,
    BareCr,
    ObsFold,
    SpaceBeforeColon,
    NoColon,
    ContentLengthAndTransferEncoding,
    ConflictingContentLengths,
    BadContentLength,
    BadTransferEncoding,
    BadChunk,
}

impl Violation {
    /// A fixed text for the debug log.
    pub fn reason(self) -> &'static str {
        match self {
            Violation::BareLf => "a line ends in a bare LF",
            Violation::BareCr => "a CR is not followed by LF",
            Violation::ObsFold => "a header line is folded (obs-fold)",
            Violation::SpaceBeforeColon => "whitespace between a header name and its colon",
            Violation::NoColon => "a header line has no colon",
            Violation::ContentLengthAndTransferEncoding => {
                "both Content-Length and Transfer-Encoding"
            }
            Violation::ConflictingContentLengths => "two different Content-Lengths",
            Violation::BadContentLength => "a Content-Length that is not a plain number",
            Violation::BadTransferEncoding => "a Transfer-Encoding other than one chunked",
            Violation::BadChunk => "a malformed chunk-size line or chunk end",
        }
    }

    /// Whether the violation was found inside a chunked body (no 400 can be given any more).
    fn in_body(self, state: &State) -> bool {
        matches!(
            state,
            State::ChunkStart
                | State::ChunkSize
                | State::ChunkExt(_)
                | State::ChunkSizeLf
                | State::ChunkData(_)
                | State::ChunkDataCr
                | State::ChunkDataLf
                | State::TrailerStart
                | State::TrailerName
                | State::TrailerValue
                | State::TrailerLf
                | State::TrailerEndLf
        )
    }
}

/// What [`Scanner::scan`] found in a slice of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// Every byte is fine.
    Clean,
    /// The bytes before `at` are fine; the byte at `at` breaks a rule.
    Violation {
        at: usize,
        violation: Violation,
        in_body: bool,
    },
    /// The bytes before `at` end a request that asks to switch protocols; the rest is not
    /// judged until that request has been answered.
    Upgrade { at: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Header {
    ContentLength,
    TransferEncoding,
    Upgrade,
    Other,
}

impl Header {
    /// Whether the header's value frames the message, and so is read byte by byte; any other
    /// value is looked at only for its end.
    fn frames(self) -> bool {
        matches!(self, Header::ContentLength | Header::TransferEncoding)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before a request line; empty lines (CRLF) are skipped, as hyper does.
    Start,
    StartLf,
    RequestLine,
    RequestLineLf,
    LineStart,
    Name,
    Value,
    ValueLf,
    HeadEndLf,
    Body(u64),
    ChunkStart,
    ChunkSize,
    ChunkExt(usize),
    ChunkSizeLf,
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    TrailerEndLf,
    /// The HTTP/2 preface was seen: nothing more is checked.
    Off,
}

/// The framing state of one HTTP/1 connection, fed its bytes in order.
#[derive(Clone, Debug)]
pub struct Scanner {
    state: State,
    /// Bytes of the HTTP/2 preface matched so far; `None` once the connection is known to be
    /// HTTP/1.
    preface: Option<usize>,
    /// Requests whose head and body have been seen completely.
    messages: u64,
    /// Request heads seen completely.
    heads: u64,
    // The current head.
    method_connect: Option<bool>,
    method_len: usize,
    line_tail: [u8; 8],
    http10: bool,
    name: [u8; NAME_CAP],
    name_len: usize,
    header: Header,
    value: [u8; VALUE_CAP],
    value_len: usize,
    content_length: Option<u64>,
    chunked: bool,
    upgrade: bool,
    chunk_size: u64,
    chunk_digits: u8,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::new()
    }
}

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner {
            state: State::Start,
            preface: Some(0),
            messages: 0,
            heads: 0,
            method_connect: None,
            method_len: 0,
            line_tail: [0; 8],
            http10: false,
            name: [0; NAME_CAP],
            name_len: 0,
            header: Header::Other,
            value: [0; VALUE_CAP],
            value_len: 0,
            content_length: None,
            chunked: false,
            upgrade: false,
            chunk_size: 0,
            chunk_digits: 0,
        }
    }

    /// Requests seen completely (head and body).
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Request heads seen completely.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Whether the connection turned out to be HTTP/2 (nothing is checked any more).
    pub fn is_off(&self) -> bool {
        self.state == State::Off
    }

    /// Checks the next bytes of the connection. After a violation the scanner must not be fed
    /// again; after an upgrade it continues with the next request when fed the rest.
    pub fn scan(&mut self, input: &[u8]) -> Scan {
        if self.state == State::Off {
            return Scan::Clean;
        }
        if let Some(matched) = self.preface {
            let take = (H2_PREFACE.len() - matched).min(input.len());
            if input[..take] == H2_PREFACE[matched..matched + take] {
                if matched + take == H2_PREFACE.len() {
                    // What the HTTP/1 rules made of the preface's first bytes does not count.
                    *self = Scanner::new();
                    self.state = State::Off;
                    return Scan::Clean;
                }
                self.preface = Some(matched + take);
            } else {
                self.preface = None;
            }
        }
        let mut i = 0;
        while i < input.len() {
            // Bodies are skipped in bulk; everything else goes byte by byte.
            match self.state {
                State::Body(left) | State::ChunkData(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    i += take;
                    let left = left - take as u64;
                    if left > 0 {
                        self.state = match self.state {
                            State::Body(_) => State::Body(left),
                            _ => State::ChunkData(left),
                        };
                    } else if matches!(self.state, State::Body(_)) {
                        if let Some(at) = self.message_done(i) {
                            return at;
                        }
                    } else {
                        self.state = State::ChunkDataCr;
                    }
                    continue;
                }
                _ => {}
            }
            // The value of a header other than Content-Length and Transfer-Encoding is only
            // looked at for its end: skip to the next CR or LF at once (most of a head's bytes).
            if self.state == State::Value && !self.header.frames() {
                match input[i..].iter().position(|&b| b == b'\r' || b == b'\n') {
                    Some(at) => i += at,
                    None => break,
                }
            }
            let b = input[i];
            match self.step(b) {
                Ok(false) => {}
                Ok(true) => {
                    if let Some(at) = self.message_done(i + 1) {
                        return at;
                    }
                }
                Err(violation) => {
                    return Scan::Violation {
                        at: i,
                        violation,
                        in_body: violation.in_body(&self.state),
                    }
                }
            }
            i += 1;
        }
        Scan::Clean
    }

    /// A request ended just before `at`: start the next one.
    fn message_done(&mut self, at: usize) -> Option<Scan> {
        self.messages += 1;
        self.state = State::Start;
        let upgrade = self.upgrade || self.method_connect == Some(true);
        self.reset_head();
        upgrade.then_some(Scan::Upgrade { at })
    }

    fn reset_head(&mut self) {
        self.method_connect = None;
        self.method_len = 0;
        self.line_tail = [0; 8];
        self.http10 = false;
        self.name_len = 0;
        self.value_len = 0;
        self.content_length = None;
        self.chunked = false;
        self.upgrade = false;
    }

    /// One byte outside a body. `Ok(true)`: this byte ended a request.
    fn step(&mut self, b: u8) -> Result<bool, Violation> {
        use State::*;
        match self.state {
            Start => match b {
                b'\r' => self.state = StartLf,
                b'\n' => return Err(Violation::BareLf),
                _ => {
                    self.state = RequestLine;
                    self.request_line_byte(b);
                }
            },
            StartLf => match b {
                b'\n' => self.state = Start,
                _ => return Err(Violation::BareCr),
            },
            RequestLine => match b {
                b'\r' => self.state = RequestLineLf,
                b'\n' => return Err(Violation::BareLf),
                _ => self.request_line_byte(b),
            },
            RequestLineLf => match b {
                b'\n' => {
                    self.http10 = &self.line_tail == b"HTTP/1.0";
                    self.state = LineStart;
                }
                _ => return Err(Violation::BareCr),
            },
            LineStart => match b {
                b'\r' => self.state = HeadEndLf,
                b'\n' => return Err(Violation::BareLf),
                b' ' | b'\t' => return Err(Violation::ObsFold),
                b':' => return Err(Violation::NoColon),
                _ => {
                    self.name_len = 0;
                    self.push_name(b);
                    self.state = Name;
                }
            },
            Name => match b {
                b':' => {
                    self.header = self.classify();
                    self.value_len = 0;
                    self.state = Value;
                }
                b' ' | b'\t' => return Err(Violation::SpaceBeforeColon),
                b'\r' | b'\n' => return Err(Violation::NoColon),
                _ => self.push_name(b),
            },
            Value => match b {
                b'\r' => self.state = ValueLf,
                b'\n' => return Err(Violation::BareLf),
                _ => {
                    if self.header.frames() {
                        if self.value_len == VALUE_CAP {
                            return Err(if self.header == Header::ContentLength {
                                Violation::BadContentLength
                            } else {
                                Violation::BadTransferEncoding
                            });
                        }
                        self.value[self.value_len] = b;
                        self.value_len += 1;
                    }
                }
            },
            ValueLf => match b {
                b'\n' => {
                    self.header_done()?;
                    self.state = LineStart;
                }
                _ => return Err(Violation::BareCr),
            },
            HeadEndLf => match b {
                b'\n' => {
                    self.heads += 1;
                    if self.chunked {
                        self.state = ChunkStart;
                    } else {
                        match self.content_length {
                            Some(n) if n > 0 => self.state = Body(n),
                            _ => return Ok(true),
                        }
                    }
                }
                _ => return Err(Violation::BareCr),
            },
            ChunkStart => {
                self.chunk_size = hex(b).ok_or(Violation::BadChunk)?;
                self.chunk_digits = 1;
                self.state = ChunkSize;
            }
            ChunkSize => match b {
                b';' => self.state = ChunkExt(0),
                b'\r' => self.state = ChunkSizeLf,
                b'\n' => return Err(Violation::BareLf),
                _ => {
                    let digit = hex(b).ok_or(Violation::BadChunk)?;
                    self.chunk_digits += 1;
                    if self.chunk_digits > 15 {
                        return Err(Violation::BadChunk);
                    }
                    self.chunk_size = self.chunk_size * 16 + digit;
                }
            },
            ChunkExt(len) => match b {
                b'\r' => self.state = ChunkSizeLf,
                b'\n' => return Err(Violation::BareLf),
                b'\t' | b' '..=b'~' if len < CHUNK_EXT_CAP => self.state = ChunkExt(len + 1),
                _ => return Err(Violation::BadChunk),
            },
            ChunkSizeLf => match b {
                b'\n' => {
                    self.state = if self.chunk_size == 0 {
                        TrailerStart
                    } else {
                        ChunkData(self.chunk_size)
                    }
                }
                _ => return Err(Violation::BareCr),
            },
            ChunkDataCr => match b {
                b'\r' => self.state = ChunkDataLf,
                _ => return Err(Violation::BadChunk),
            },
            ChunkDataLf => match b {
                b'\n' => self.state = ChunkStart,
                _ => return Err(Violation::BareCr),
            },
            TrailerStart => match b {
                b'\r' => self.state = TrailerEndLf,
                b'\n' => return Err(Violation::BareLf),
                b' ' | b'\t' => return Err(Violation::ObsFold),
                b':' => return Err(Violation::NoColon),
                _ => self.state = TrailerName,
            },
            TrailerName => match b {
                b':' => self.state = TrailerValue,
                b' ' | b'\t' => return Err(Violation::SpaceBeforeColon),
                b'\r' | b'\n' => return Err(Violation::NoColon),
                _ => {}
            },
            TrailerValue => match b {
                b'\r' => self.state = TrailerLf,
                b'\n' => return Err(Violation::BareLf),
                _ => {}
            },
            TrailerLf => match b {
                b'\n' => self.state = TrailerStart,
                _ => return Err(Violation::BareCr),
            },
            TrailerEndLf => match b {
                b'\n' => return Ok(true),
                _ => return Err(Violation::BareCr),
            },
            Body(_) | ChunkData(_) | Off => {}
        }
        Ok(false)
    }

    fn request_line_byte(&mut self, b: u8) {
        if self.method_connect.is_none() {
            if b == b' ' {
                self.method_connect = Some(self.method_len == 7);
            } else {
                // Counts the bytes of the method that match "CONNECT" so far; anything else
                // pushes the count past 7, so that neither "CONNEC" nor "CONNECTX" is CONNECT.
                let matches = self.method_len < 7 && b"CONNECT"[self.method_len] == b;
                self.method_len = if matches { self.method_len + 1 } else { 8 };
            }
        }
        self.line_tail.copy_within(1.., 0);
        self.line_tail[7] = b;
    }

    fn push_name(&mut self, b: u8) {
        if self.name_len < NAME_CAP {
            self.name[self.name_len] = b.to_ascii_lowercase();
        }
        self.name_len = self.name_len.saturating_add(1);
    }

    fn classify(&self) -> Header {
        match self.name.get(..self.name_len) {
            Some(b"content-length") => Header::ContentLength,
            Some(b"transfer-encoding") => Header::TransferEncoding,
            Some(b"upgrade") => Header::Upgrade,
            _ => Header::Other,
        }
    }

    /// A header line ended: check what it means for the framing.
    fn header_done(&mut self) -> Result<(), Violation> {
        let value = trim(&self.value[..self.value_len]);
        match self.header {
            Header::ContentLength => {
                if self.chunked {
                    return Err(Violation::ContentLengthAndTransferEncoding);
                }
                if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                    return Err(Violation::BadContentLength);
                }
                let n = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
                match self.content_length {
                    Some(previous) if previous != n => {
                        return Err(Violation::ConflictingContentLengths)
                    }
                    _ => self.content_length = Some(n),
                }
            }
            Header::TransferEncoding => {
                if self.content_length.is_some() {
                    return Err(Violation::ContentLengthAndTransferEncoding);
                }
                if self.chunked || self.http10 || !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(Violation::BadTransferEncoding);
                }
                self.chunked = true;
            }
            Header::Upgrade => self.upgrade = true,
            Header::Other => {}
        }
        Ok(())
    }
}

/// What the pipeline tells the guard of its connection.
#[derive(Default)]
pub(crate) struct Signal {
    /// Requests answered completely on this connection.
    done: AtomicU64,
    /// The connection switched protocols.
    upgraded: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    /// A request's response has been sent (or abandoned).
    pub(crate) fn request_done(&self) {
        self.done.fetch_add(1, Ordering::AcqRel);
        self.waker.wake();
    }

    /// Requests answered completely on this connection so far.
    pub(crate) fn answered(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    /// The pipeline answered an upgrade request with 101: what follows is not HTTP/1.
    pub(crate) fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
        self.waker.wake();
    }
}

enum Mode {
    Checking,
    /// An upgrade request was the `request`-th; bytes after it wait in `held`.
    Awaiting {
        request: u64,
        held: Vec<u8>,
    },
    /// A head was refused: hand out the poison, then nothing.
    RefusedHead,
    /// A chunked body was refused: fail the read.
    RefusedBody,
    /// Upgraded or HTTP/2: bytes pass unchecked.
    Off,
}

/// A connection's reading half, checked by a [`Scanner`] before hyper sees it.
pub(crate) struct Guarded<IO> {
    io: IO,
    scanner: Scanner,
    mode: Mode,
    /// Checked bytes to hand out before reading more.
    ready: Vec<u8>,
    ready_at: usize,
    signal: Arc<Signal>,
}

impl<IO> Guarded<IO> {
    pub(crate) fn new(io: IO, signal: Arc<Signal>) -> Self {
        Guarded {
            io,
            scanner: Scanner::new(),
            mode: Mode::Checking,
            ready: Vec::new(),
            ready_at: 0,
            signal,
        }
    }

    /// The stream underneath.
    pub(crate) fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The stream underneath, to change.
    pub(crate) fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }

    /// Whether bytes were read that are still to be handed out (checked, or held back after an
    /// upgrade request), so that a read would not wait for the stream underneath.
    pub(crate) fn has_buffered(&self) -> bool {
        self.ready_at < self.ready.len()
            || matches!(&self.mode, Mode::Awaiting { held, .. } if !held.is_empty())
            || matches!(self.mode, Mode::RefusedBody)
    }

    fn refuse(&mut self, violation: Violation, in_body: bool) {
        tracing::debug!(
            reason = violation.reason(),
            "refused an HTTP/1 request with ambiguous framing"
        );
        if in_body {
            self.mode = Mode::RefusedBody;
        } else {
            self.ready.extend_from_slice(POISON);
            self.mode = Mode::RefusedHead;
        }
    }

    /// Checks bytes that were held back, queueing what may be handed out.
    fn check_held(&mut self, held: Vec<u8>) {
        match self.scanner.scan(&held) {
            Scan::Clean => self.ready.extend_from_slice(&held),
            Scan::Violation {
                at,
                violation,
                in_body,
            } => {
                self.ready.extend_from_slice(&held[..at]);
                self.refuse(violation, in_body);
            }
            Scan::Upgrade { at } => {
                self.ready.extend_from_slice(&held[..at]);
                self.mode = Mode::Awaiting {
                    request: self.scanner.messages(),
                    held: held[at..].to_vec(),
                };
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ready_at < this.ready.len() {
                let n = (this.ready.len() - this.ready_at).min(buf.remaining());
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    this.ready.clear();
                    this.ready_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match &mut this.mode {
                Mode::Off => return Pin::new(&mut this.io).poll_read(cx, buf),
                // hyper answers the poisoned head with 400 and closes; nothing more is read.
                Mode::RefusedHead => return Poll::Pending,
                Mode::RefusedBody => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed chunked request body",
                    )))
                }
                Mode::Awaiting { request, held } => {
                    let request = *request;
                    this.signal.waker.register(cx.waker());
                    if this.signal.upgraded.load(Ordering::Acquire) {
                        let held = std::mem::take(held);
                        this.ready.extend_from_slice(&held);
                        this.mode = Mode::Off;
                    } else if this.signal.done.load(Ordering::Acquire) >= request {
                        let held = std::mem::take(held);
                        this.mode = Mode::Checking;
                        this.check_held(held);
                    } else {
                        return Poll::Pending;
                    }
                }
                Mode::Checking => {
                    let before = buf.filled().len();
                    let polled = Pin::new(&mut this.io).poll_read(cx, buf);
                    if !matches!(polled, Poll::Ready(Ok(()))) {
                        return polled;
                    }
                    let new = &buf.filled()[before..];
                    if new.is_empty() {
                        return polled;
                    }
                    match this.scanner.scan(new) {
                        Scan::Clean => {
                            if this.scanner.is_off() {
                                this.mode = Mode::Off;
                            }
                            return polled;
                        }
                        Scan::Violation {
                            at,
                            violation,
                            in_body,
                        } => {
                            buf.set_filled(before + at);
                            this.refuse(violation, in_body);
                            if at > 0 {
                                return Poll::Ready(Ok(()));
                            }
                            // Nothing good was read: hand out the poison (or the error) now,
                            // since an empty read would look like the end of the stream.
                        }
                        Scan::Upgrade { at } => {
                            let held = new[at..].to_vec();
                            buf.set_filled(before + at);
                            this.mode = Mode::Awaiting {
                                request: this.scanner.messages(),
                                held,
                            };
                            return Poll::Ready(Ok(()));
                        }
                    }
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `input` in one piece and byte by byte; both must agree.
    fn check(input: &str) -> (Scan, u64) {
        let mut whole = Scanner::new();
        let verdict = whole.scan(input.as_bytes());
        let mut bytewise = Scanner::new();
        let mut split = Scan::Clean;
        for (i, b) in input.bytes().enumerate() {
            match bytewise.scan(&[b]) {
                Scan::Clean => {}
                Scan::Violation {
                    violation, in_body, ..
                } => {
                    split = Scan::Violation {
                        at: i,
                        violation,
                        in_body,
                    };
                    break;
                }
                Scan::Upgrade { .. } => {
                    split = Scan::Upgrade { at: i + 1 };
                    break;
                }
            }
        }
        assert_eq!(verdict, split, "{input:?}");
        (verdict, whole.messages())
    }

    fn refused(input: &str, expected: Violation) {
        match check(input).0 {
            Scan::Violation { violation, .. } => assert_eq!(violation, expected, "{input:?}"),
            other => panic!("{input:?} passed: {other:?}"),
        }
    }

    #[test]
    fn well_framed_streams_pass_and_are_counted() {
        for (input, messages) in [
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1),
            ("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 1),
            ("GET / HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 2),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab\r\ncGET / HTTP/1.1\r\n\r\n",
                2,
            ),
            ("POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n", 1),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
                1,
            ),
            ("POST / HTTP/1.1\r\nContent-Length:  3 \r\n\r\nabc", 1),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
                1,
            ),
            (
                "POST / HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n0\r\nx-t: 1\r\n\r\n\
                 GET / HTTP/1.1\r\n\r\n",
                2,
            ),
            // The body of a chunk may hold anything, line ends included.
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n\n\n\r\0\r\n0\r\n\r\n",
                1,
            ),
            ("GET /x HTTP/1.1\r\nX-Long: a b\tc\r\nX-Empty:\r\n\r\n", 1),
            ("GET / HTTP/1.0\r\nContent-Length: 1\r\n\r\na", 1),
        ] {
            let (verdict, seen) = check(input);
            assert_eq!(verdict, Scan::Clean, "{input:?}");
            assert_eq!(seen, messages, "{input:?}");
        }
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        use Violation::*;
        for (input, expected) in [
            ("GET / HTTP/1.1\nHost: x\r\n\r\n", BareLf),
            ("GET / HTTP/1.1\r\nHost: x\n\r\n", BareLf),
            ("GET / HTTP/1.1\r\nHost: x\r\n\n", BareLf),
            ("\nGET / HTTP/1.1\r\n\r\n", BareLf),
            ("GET / HTTP/1.1\r\n\r\n\n", BareLf),
            ("GET / HTTP/1.1\rHost: x\r\n\r\n", BareCr),
            ("GET / HTTP/1.1\r\nHost: x\rY: 1\r\n\r\n", BareCr),
            ("GET / HTTP/1.1\r\nX-Foo: a\r\n b\r\n\r\n", ObsFold),
            ("GET / HTTP/1.1\r\nX-Foo: a\r\n\tb\r\n\r\n", ObsFold),
            ("GET / HTTP/1.1\r\n Host: x\r\n\r\n", ObsFold),
            ("GET / HTTP/1.1\r\nX-Foo : a\r\n\r\n", SpaceBeforeColon),
            ("GET / HTTP/1.1\r\nContent-Length\t: 1\r\n\r\na", SpaceBeforeColon),
            ("GET / HTTP/1.1\r\nNoColon\r\n\r\n", NoColon),
            ("GET / HTTP/1.1\r\n: empty\r\n\r\n", NoColon),
            (
                "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
                ContentLengthAndTransferEncoding,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
                ContentLengthAndTransferEncoding,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
                ConflictingContentLengths,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: 4, 4\r\n\r\n", BadContentLength),
            ("POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n", BadContentLength),
            ("POST / HTTP/1.1\r\nContent-Length: 0x4\r\n\r\n", BadContentLength),
            ("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", BadContentLength),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                BadContentLength,
            ),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", BadTransferEncoding),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", BadTransferEncoding),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", BadTransferEncoding),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", BadTransferEncoding),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                BadTransferEncoding,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", BadTransferEncoding),
            // Inside chunked bodies.
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", BareLf),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", BadChunk),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nx\r\n", BadChunk),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", BadChunk),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n", BadChunk),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n", BadChunk),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r0\r\n", BareCr),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\0\r\n", BadChunk),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nb\r\n", BareLf),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx: 1\n\r\n", BareLf),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx: 1\r\n y\r\n\r\n", ObsFold),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n", BareLf),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\r\n", BareCr),
            // A hidden second request behind a body is checked like the first.
            ("POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\naGET / HTTP/1.1\nHost: x\r\n\r\n", BareLf),
        ] {
            refused(input, expected);
        }
    }

    #[test]
    fn violations_in_bodies_are_told_apart_from_heads() {
        let body = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello";
        assert!(matches!(
            check(body).0,
            Scan::Violation { in_body: true, .. }
        ));
        let head = "POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\naGET / HTTP/1.1\n";
        assert!(matches!(
            check(head).0,
            Scan::Violation { in_body: false, .. }
        ));
    }

    #[test]
    fn upgrades_stop_the_scan_after_their_request() {
        let ws = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let input = format!("{ws}\x01\x05hello\n\n");
        let mut scanner = Scanner::new();
        assert_eq!(
            scanner.scan(input.as_bytes()),
            Scan::Upgrade { at: ws.len() }
        );
        assert_eq!(scanner.messages(), 1);
        let connect = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
        assert_eq!(check(connect).0, Scan::Upgrade { at: connect.len() });
        for not_connect in ["CONNEC / HTTP/1.1\r\n\r\n", "CONNECTX / HTTP/1.1\r\n\r\n"] {
            assert_eq!(check(not_connect).0, Scan::Clean, "{not_connect}");
        }
        // After the upgrade request was answered without switching, the scan goes on.
        let mut scanner = Scanner::new();
        let _ = scanner.scan(ws.as_bytes());
        assert!(matches!(
            scanner.scan(b"GET / HTTP/1.1\nHost: x\r\n\r\n"),
            Scan::Violation { .. }
        ));
    }

    #[test]
    fn the_http2_preface_turns_the_scan_off() {
        let mut scanner = Scanner::new();
        let mut input = H2_PREFACE.to_vec();
        input.extend_from_slice(b"\0\0\0\x04\0\0\0\0\0\n\n\n");
        assert_eq!(scanner.scan(&input[..10]), Scan::Clean);
        assert_eq!(scanner.scan(&input[10..]), Scan::Clean);
        assert!(scanner.is_off());
        // "PRI" as an HTTP/1 method is still HTTP/1.
        refused("PRI / HTTP/1.1\nHost: x\r\n\r\n", Violation::BareLf);
        refused("PRI * HTTP/2.0\r\n\r\nSM\r\n\n", Violation::BareLf);
    }
}
