//! A router's recent decisions (`GET /v1/gateway-configs/{id}/routing-log`): a bounded ring
//! per router, in memory on each data plane. Its lock is the router's own and is held for one
//! push; nothing else waits on it.

use std::collections::VecDeque;
use std::sync::Mutex;

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

    /// The latest `limit` decisions, newest first.
    pub(crate) fn latest(&self, limit: usize) -> Vec<Decision> {
        let log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().rev().take(limit).cloned().collect()
    }
}
