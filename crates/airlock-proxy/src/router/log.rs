//! A router's recent decisions (`GET /v1/gateway-configs/{id}/routing-log`): a bounded ring
//! per router, in memory on each data plane. Its lock is the router's own and is held for one
//! push; nothing else waits on it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use airlock_core::state::RequestAuditEvent;

use crate::stage::{End, StageRun};

/// Decisions kept per router.
pub(crate) const LOG_CAPACITY: usize = 256;

pub(crate) use airlock_core::router::{RoutingAttempt as Attempt, RoutingDecision as Decision};

/// The latest decisions of one router, newest last.
#[derive(Debug, Default)]
pub(crate) struct RoutingLog(Mutex<VecDeque<Decision>>);

impl RoutingLog {
    pub(crate) fn push(&self, decision: Decision) {
        let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(decision);
    }

    /// Sets the token counts of a decision whose answer streamed (known only at its end).
    pub(crate) fn set_tokens(&self, request_id: &str, input: u64, output: u64) {
        let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = log.iter_mut().rev().find(|d| d.request_id == request_id) {
            d.input_tokens = Some(input);
            d.output_tokens = Some(output);
        }
    }

    /// The latest `limit` decisions, newest first.
    pub(crate) fn latest(&self, limit: usize) -> Vec<Decision> {
        let log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().rev().take(limit).cloned().collect()
    }
}

/// A run after a streamed answer's meter: when the request ends, the metered usage goes into
/// the routing log's decision (the decision is logged when the stream starts).
pub(crate) struct StreamTokens {
    pub(crate) log: Arc<RoutingLog>,
    pub(crate) request_id: String,
}

impl StageRun for StreamTokens {
    fn finish(&mut self, _end: End, event: &mut RequestAuditEvent) {
        if let Some(llm) = &event.llm {
            let usage = &llm.usage;
            self.log
                .set_tokens(&self.request_id, usage.input_tokens, usage.output_tokens);
        }
    }
}
