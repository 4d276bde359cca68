//! The attack suite: one module per attack class, each a table of raw inputs and the outcome
//! each must have, sent over raw TCP (or as raw HTTP/2 frames) where a client library would
//! normalise the input away. The recording upstream and a silent "attacker" listener
//! (`airlock_testkit::Sinkhole`) count what really arrived.
//!
//! | module | SECURITY rows |
//! |---|---|
//! | `smuggling` | #8: ambiguous lengths, hidden requests, upgrade tricks |
//! | `line_endings` | #8: bare LF and CR, obs-fold, whitespace before the colon |
//! | `routing` | #1: absolute-form, `Host`, `:authority`, `CONNECT` |
//! | `carriers` | #5, #6, #7, #20: casing, duplicates, hop-by-hop tricks, misplaced tokens, the token as the method, `TRACE` |
//! | `traversal` | #10: dot segments in every spelling (`..;`, `%252e`, `%u002e`, overlong UTF-8, full-width dots), encoded slashes, doubled slashes |
//! | `limits` | #11: oversized heads, too many headers, long targets, slow heads |
//! | `h2` | #9: HTTP/2 frames that lie about lengths, malformed header blocks |
//! | `exhaustion` | #11, #15: silent connections, HTTP/2 peers that never close, stalled responses, one address filling the connection cap |
//!
//! The modules are also run by `tests/leaks.rs`, which searches everything they produced for
//! the sentinel secret and tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.
#![allow(unreachable_pub)] // The modules are shared with tests/leaks.rs.

#[path = "../support/mod.rs"]
mod support;

#[path = "."]
mod attacks {
    pub mod carriers;
    pub mod common;
    pub mod exhaustion;
    pub mod h2;
    pub mod limits;
    pub mod line_endings;
    pub mod routing;
    pub mod smuggling;
    pub mod traversal;
}

use std::time::Duration;

use attacks::common::Seen;
use support::{Harness, Options};

async fn harness() -> Harness {
    Harness::start(
        support::sqlite().await,
        Options {
            configure: Box::new(|c| c.header_read_timeout = Duration::from_millis(500)),
            ..Options::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling() {
    attacks::smuggling::run(&harness().await, &mut Seen::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_endings() {
    attacks::line_endings::run(&harness().await, &mut Seen::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing() {
    attacks::routing::run(&harness().await, &mut Seen::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carriers() {
    attacks::carriers::run(&harness().await, &mut Seen::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal() {
    attacks::traversal::run(&harness().await, &mut Seen::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits() {
    attacks::limits::run(&harness().await, &mut Seen::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2() {
    attacks::h2::run(&harness().await, &mut Seen::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion() {
    attacks::exhaustion::run(&mut Seen::default()).await;
}
