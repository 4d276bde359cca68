//! What the attack modules share: the sentinel secret, and [`Seen`], which keeps every answer an
//! attack got so that the leak test can search them.

use std::time::Duration;

use airlock_core::AuthMechanism;

use crate::support::{raw_exchange, Harness, RawAnswer, Simple};

/// The real upstream key in every attack: recognisable, so that the leak test can look for it.
pub const SECRET: &str = "sk-SENTINEL-attack-suite-9f3b2c71e0d4a8";

/// How long a raw exchange waits for the server to answer and close.
pub const WAIT: Duration = Duration::from_secs(3);

pub fn header_key() -> AuthMechanism {
    AuthMechanism::Header {
        key: "x-api-key".into(),
    }
}

/// Every answer the attacks got, as text (status lines, headers and bodies).
#[derive(Default)]
pub struct Seen {
    pub answers: Vec<String>,
}

impl Seen {
    pub fn push(&mut self, answer: impl Into<String>) {
        self.answers.push(answer.into());
    }
}

/// A gateway to the recording upstream at `/v1` with the header mechanism and [`SECRET`].
pub async fn target(h: &Harness) -> Simple {
    h.simple(header_key(), SECRET).await
}

/// Sends raw bytes and keeps the answer.
pub async fn exchange(h: &Harness, seen: &mut Seen, request: &[u8]) -> RawAnswer {
    let answer = raw_exchange(h.proxy, request, WAIT).await;
    seen.push(answer.text.clone());
    answer
}

/// The paths the upstream received, in order.
pub fn upstream_paths(h: &Harness) -> Vec<String> {
    h.upstream
        .requests()
        .iter()
        .map(|r| r.path_and_query())
        .collect()
}
