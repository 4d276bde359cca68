//! Raw HTTP/2 frames, for requests a client library would refuse to send.
//!
//! [`frame`] writes a frame header and payload as given; [`frame_claiming`] writes a length field
//! that lies about the payload. [`hpack`] encodes header fields as HPACK literals without
//! indexing or Huffman coding, byte for byte as given (upper-case names, connection headers,
//! pseudo-headers in any order). [`exchange`] sends the client preface and the frames, then reads
//! the server's frames until it closes or a deadline passes, and [`H2Answer`] says what came back
//! on which stream.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;

/// A frame as given.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    frame_claiming(payload.len() as u32, kind, flags, stream, payload)
}

/// A frame whose length field says `length`, whatever the payload's real length.
pub fn frame_claiming(length: u32, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An empty SETTINGS frame and an ACK of the server's.
pub fn settings() -> Vec<u8> {
    let mut out = frame(SETTINGS, 0, 0, &[]);
    out.extend(frame(SETTINGS, ACK, 0, &[]));
    out
}

fn integer(out: &mut Vec<u8>, prefix_bits: u8, first: u8, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literal fields (without indexing, new name, no Huffman).
pub fn hpack(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        integer(&mut out, 7, 0, name.len());
        out.extend_from_slice(name);
        integer(&mut out, 7, 0, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// A request's header block: the usual pseudo-headers for `path`, then `extra`.
pub fn request_block(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", method.as_bytes()),
        (b":scheme", b"http"),
        (b":authority", b"localhost"),
        (b":path", path.as_bytes()),
    ];
    fields.extend(extra.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    hpack(&fields)
}

/// One frame read back.
#[derive(Clone, Debug)]
pub struct RawFrame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// What the server sent back.
#[derive(Clone, Debug, Default)]
pub struct H2Answer {
    pub frames: Vec<RawFrame>,
    /// Whether the server closed the connection before the deadline.
    pub closed: bool,
}

impl H2Answer {
    /// The error code of a GOAWAY, if one came.
    pub fn goaway(&self) -> Option<u32> {
        self.frames
            .iter()
            .find(|f| f.kind == GOAWAY && f.payload.len() >= 8)
            .map(|f| u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]))
    }

    /// The error code of an RST_STREAM for `stream`, if one came.
    pub fn reset(&self, stream: u32) -> Option<u32> {
        self.frames
            .iter()
            .find(|f| f.kind == RST_STREAM && f.stream == stream && f.payload.len() >= 4)
            .map(|f| u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]))
    }

    /// Whether response headers came for `stream`.
    pub fn responded(&self, stream: u32) -> bool {
        self.frames
            .iter()
            .any(|f| f.kind == HEADERS && f.stream == stream)
    }

    /// The response status on `stream`, when the server encoded it as an indexed static field
    /// (200, 204, 206, 304, 400, 404, 500) or as a plain literal with an indexed name; None
    /// otherwise (a Huffman-coded literal).
    pub fn status(&self, stream: u32) -> Option<u16> {
        let block = &self
            .frames
            .iter()
            .find(|f| f.kind == HEADERS && f.stream == stream)?
            .payload;
        let first = *block.first()?;
        let indexed = [
            (0x88, 200),
            (0x89, 204),
            (0x8a, 206),
            (0x8b, 304),
            (0x8c, 400),
            (0x8d, 404),
            (0x8e, 500),
        ];
        if let Some((_, s)) = indexed.iter().find(|(b, _)| *b == first) {
            return Some(*s);
        }
        // Literal with the name :status (static index 8), value not Huffman-coded.
        let name_index = match first {
            0x48 => 8,
            b if b & 0xf0 == 0x00 || b & 0xf0 == 0x10 => b & 0x0f,
            _ => return None,
        };
        let len = *block.get(1)?;
        if name_index != 8 || len & 0x80 != 0 {
            return None;
        }
        std::str::from_utf8(block.get(2..2 + len as usize)?)
            .ok()?
            .parse()
            .ok()
    }
}

/// Connects, sends the preface and `frames`, and reads frames until the server closes the
/// connection, sends GOAWAY or RST_STREAM, ends a response stream, or `wait` passes.
pub async fn exchange(addr: SocketAddr, frames: &[u8], wait: Duration) -> H2Answer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut out = PREFACE.to_vec();
    out.extend_from_slice(frames);
    // The server may close before reading everything; that is an answer too.
    let _ = stream.write_all(&out).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let deadline = tokio::time::Instant::now() + wait;
    let mut answer = H2Answer::default();
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                answer.closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        answer.frames = parse(&buf);
        let done = answer.frames.iter().any(|f| {
            f.kind == GOAWAY
                || f.kind == RST_STREAM
                || (f.stream != 0
                    && f.flags & END_STREAM != 0
                    && (f.kind == DATA || f.kind == HEADERS))
        });
        if done {
            break;
        }
    }
    answer.frames = parse(&buf);
    answer
}

/// The complete frames in `buf`.
fn parse(buf: &[u8]) -> Vec<RawFrame> {
    let mut frames = Vec::new();
    let mut at = 0;
    while buf.len() >= at + 9 {
        let len = u32::from_be_bytes([0, buf[at], buf[at + 1], buf[at + 2]]) as usize;
        if buf.len() < at + 9 + len {
            break;
        }
        frames.push(RawFrame {
            kind: buf[at + 3],
            flags: buf[at + 4],
            stream: u32::from_be_bytes([buf[at + 5], buf[at + 6], buf[at + 7], buf[at + 8]])
                & 0x7fff_ffff,
            payload: buf[at + 9..at + 9 + len].to_vec(),
        });
        at += 9 + len;
    }
    frames
}
