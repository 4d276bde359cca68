//! Airlock's listener plumbing, shared by the data plane and the control plane: what happens to
//! an accepted TCP connection before it speaks HTTP.
//!
//! - [`tls`]: server TLS (rustls with ring, ALPN `h2` and `http/1.1`) whose certificate and key
//!   come from PEM files and can be replaced under a running listener: [`CertResolver`] hands
//!   every new handshake the pair loaded last, [`keep_fresh`] reloads it when the files change;
//! - [`proxy_protocol`]: reading a PROXY protocol v1 or v2 header from a trusted load balancer,
//!   and recognising one from anybody else;
//! - [`Acceptor`]: the steps in order (wait for the first byte, PROXY header, TLS handshake), each
//!   bounded in time, producing an [`Accepted`] connection: a [`NetStream`] (plain TCP or TLS)
//!   and the caller's address.
//!
//! Invariants: nothing here knows HTTP; a PROXY header is believed only from a peer in the
//! trusted list, and from any other peer it closes the connection before a byte is passed on;
//! no key material appears in an error or a log line.

mod accept;
pub mod proxy_protocol;
mod stream;
pub mod tls;

pub use crate::accept::{AcceptError, AcceptOptions, Accepted, Acceptor};
pub use crate::proxy_protocol::ProxyHeaderError;
pub use crate::stream::{NetStream, Prefixed};
pub use crate::tls::{
    keep_fresh, CertFiles, CertResolver, Reload, TlsError, TlsServer, ALPN_H2_HTTP11,
};
