//! A router's recent decisions (`GET /v1/gateway-configs/{id}/routing-log`): a bounded ring
//! per router, in memory on each data plane. Its lock is the router's own and is held for one
//! push; nothing else waits on it.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Decisions kept per router.
pub(crate) const LOG_CAPACITY: usize = 256;

/// One attempt of a routed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// The backend's gateway config name.
    pub(crate) backend: String,
    pub(crate) model: String,
    /// `ok`, or why the attempt failed: `connect_failed`, `timeout`, `rate_limited`,
    /// `upstream_5xx`, `error_event`, `unsupported`, `unavailable`.
    pub(crate) outcome: &'static str,
    pub(crate) status: Option<u16>,
    pub(crate) elapsed_ms: u64,
}

/// How one request was routed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) request_id: String,
    pub(crate) time_ms: i64,
    pub(crate) model_requested: String,
    /// The backend that served it (its gateway config's name), if one did.
    pub(crate) provider: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) attempts: Vec<Attempt>,
    /// Why: the rule that ordered the candidates, and what was left out.
    pub(crate) reason: String,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    pub(crate) elapsed_ms: u64,
}

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

    /// The latest `limit` decisions, newest first.
    pub(crate) fn latest(&self, limit: usize) -> Vec<Decision> {
        let log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().rev().take(limit).cloned().collect()
    }
}
