//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer that passes TCP through
//! writes one header at the start of the connection naming the client it came from.
//!
//! The header is parsed by the `proxy-header` crate; this module reads it off the socket with a
//! size bound, keeps whatever followed it (the client's first bytes), and recognises the start
//! of a header sent by a peer that is not trusted to send one.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use proxy_header::{ParseConfig, Protocol, ProxyHeader};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How a version 1 header starts.
pub const V1_PREFIX: &[u8] = b"PROXY ";

/// The 12-byte signature that starts a version 2 header.
pub const V2_SIGNATURE: &[u8] = b"\r\n\r\n\x00\r\nQUIT\n";

/// The largest header accepted, TLVs included. A version 1 header is at most 107 bytes; a
/// version 2 header from a cloud load balancer carries a few short TLVs.
pub const MAX_HEADER_BYTES: usize = 4096;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("the connection from a trusted proxy did not start with a PROXY header")]
    Missing,
    #[error("malformed PROXY header")]
    Invalid,
    #[error("PROXY header longer than {MAX_HEADER_BYTES} bytes")]
    TooLarge,
    #[error("PROXY header for a protocol other than TCP")]
    NotTcp,
    #[error("the connection closed inside the PROXY header")]
    Closed,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether a connection whose first bytes are `bytes` starts with a PROXY header: `Some(true)`
/// when they hold a whole v1 prefix or v2 signature, `Some(false)` when they cannot be the
/// start of one, `None` while they are too few to tell.
pub fn starts_proxy_header(bytes: &[u8]) -> Option<bool> {
    if bytes.is_empty() {
        return None;
    }
    for signature in [V1_PREFIX, V2_SIGNATURE] {
        let n = signature.len().min(bytes.len());
        if bytes[..n] == signature[..n] {
            return if n == signature.len() {
                Some(true)
            } else {
                None
            };
        }
    }
    Some(false)
}

/// A header read off a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The client the header names; `None` for v2 `LOCAL` (the proxy's own connection, such as a
    /// health check) and v1 `UNKNOWN`, where the socket's peer is the caller.
    pub source: Option<SocketAddr>,
    /// The bytes that followed the header in the reads (the client's first bytes).
    pub rest: Bytes,
}

/// Reads one PROXY header, v1 or v2, from the start of `io`. Reads at most
/// [`MAX_HEADER_BYTES`] plus one read's worth; the caller bounds it in time.
pub async fn read_header<R: AsyncRead + Unpin>(io: &mut R) -> Result<Header, ProxyHeaderError> {
    let mut buf = BytesMut::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        match starts_proxy_header(&buf) {
            Some(false) => return Err(ProxyHeaderError::Missing),
            Some(true) => {
                if let Some(header) = parse(&mut buf)? {
                    return Ok(header);
                }
            }
            None => {}
        }
        if buf.len() >= MAX_HEADER_BYTES {
            return Err(ProxyHeaderError::TooLarge);
        }
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Parses the header at the start of `buf`: `Ok(None)` while it is incomplete.
fn parse(buf: &mut BytesMut) -> Result<Option<Header>, ProxyHeaderError> {
    // A v2 header says its length up front: refuse an oversized one before reading it.
    if buf.starts_with(V2_SIGNATURE) && buf.len() >= 16 {
        let declared = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if 16 + declared > MAX_HEADER_BYTES {
            return Err(ProxyHeaderError::TooLarge);
        }
    }
    let config = ParseConfig {
        include_tlvs: false,
        allow_v1: true,
        allow_v2: true,
    };
    let (source, used) = match ProxyHeader::parse(buf, config) {
        Ok((header, used)) => {
            let source = match header.proxied_address() {
                None => None,
                Some(addr) if addr.protocol == Protocol::Stream => Some(addr.source),
                Some(_) => return Err(ProxyHeaderError::NotTcp),
            };
            (source, used)
        }
        Err(proxy_header::Error::BufferTooShort) => return Ok(None),
        Err(_) => return Err(ProxyHeaderError::Invalid),
    };
    if used > MAX_HEADER_BYTES {
        return Err(ProxyHeaderError::TooLarge);
    }
    let rest = buf.split_off(used).freeze();
    Ok(Some(Header { source, rest }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_start_of_a_header() {
        let cases: &[(&[u8], Option<bool>)] = &[
            (b"", None),
            (b"P", None),
            (b"PROX", None),
            (b"PROXY ", Some(true)),
            (b"PROXY TCP4 1.2.3.4", Some(true)),
            (b"PROXYX", Some(false)),
            (b"PRI * HTTP/2.0", Some(false)),
            (b"POST / HTTP/1.1", Some(false)),
            (b"GET / HTTP/1.1", Some(false)),
            (b"\x16\x03\x01", Some(false)),
            (b"\r\n\r\n", None),
            (b"\r\n\r\n\x00\r\nQUIT\n", Some(true)),
            (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11", Some(true)),
            (b"\r\nGET", Some(false)),
        ];
        for (bytes, expected) in cases {
            assert_eq!(starts_proxy_header(bytes), *expected, "{bytes:?}");
        }
    }
}
