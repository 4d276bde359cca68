//! Hooks for the benchmark tools (feature `bench`, off in the shipped binary): the data plane's
//! state and its full reload, without a server around them, so that `bench-scale` can time a
//! load, watch memory during a reload and count nanoseconds per lookup.

use std::sync::Arc;

use airlock_core::state::{SourceError, StateSource};
use airlock_core::TokenDigest;
use airlock_crypto::Keyring;

use crate::feed;
use crate::metrics::Metrics;
use crate::state::State;

/// The state as the data plane holds it.
pub struct StateBench {
    state: Arc<State>,
    metrics: Metrics,
}

impl StateBench {
    pub fn new(keyring: Arc<Keyring>) -> StateBench {
        StateBench {
            state: Arc::new(State::new(keyring)),
            metrics: Metrics::new(),
        }
    }

    /// One full reload from `source`, exactly as the feed task runs it. Returns the tokens held.
    pub async fn full_reload<S: StateSource>(&self, source: &S) -> Result<usize, SourceError> {
        feed::full_reload(&self.state, &self.metrics, source).await?;
        Ok(self.state.token_count())
    }

    /// The request path's lookup (the entry is taken and dropped, as a request does).
    pub fn lookup(&self, digest: &TokenDigest) -> bool {
        self.state.lookup(digest).is_some()
    }
}
