//! Test support for Airlock: the real things a test needs, started on demand and torn down
//! when the test is done.
//!
//! - [`pg`]: a throwaway PostgreSQL cluster started from the local installation (one per test
//!   process, shared), with a fresh database per test; or a private cluster a test can stop and
//!   start to simulate an outage.
//! - [`tls`]: a test certificate authority, server certificates for `localhost` and IPs, and
//!   rustls configs built on the `ring` provider.
//! - [`upstream`]: an HTTP/1.1 + HTTP/2 server, plain or TLS, that records every request it
//!   received byte for byte and answers with a configurable reply (full, streamed SSE, hang,
//!   close), including ready-made OpenAI, Anthropic and Gemini imitations that report
//!   predictable token usage.
//! - [`process`]: spawns the real `airlock` binary in a temporary working directory and waits
//!   for it to become healthy.
//! - [`sinkhole`]: a silent listener that stands in for an attacker's host and records what
//!   reached it; [`h2raw`]: raw HTTP/2 frames for requests a client library would not send.
//! - [`http`]: a small hyper client (HTTP/1.1 and HTTP/2, plain or TLS, from a chosen source
//!   address) that records when each body chunk arrived.
//! - [`python()`] and [`run_python`]: the interpreter of the virtual environment that holds the
//!   official client SDKs.
//!
//! Nothing here skips: a missing PostgreSQL, Python environment or binary fails the test with a
//! message that says how to fix it.

// A test-support crate fails loudly on purpose: when a fixture cannot be built, a panic that
// names the cause is the most useful outcome for the test that asked for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod body;
pub mod h2raw;
pub mod http;
pub mod pg;
pub mod process;
mod python;
pub mod sinkhole;
pub mod tls;
pub mod upstream;

pub use crate::http::{http_get, http_request, HttpResponse, TestRequest};
pub use crate::process::{airlock_binary, free_addr, free_port, AirlockProcess};
pub use crate::python::{check_python_output, python, run_python, run_python_code, workspace_root};
pub use crate::sinkhole::Sinkhole;
pub use crate::upstream::{RecordedRequest, RecordingUpstream, Reply, UpstreamOptions};
