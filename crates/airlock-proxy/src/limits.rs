//! Protection for upstreams and for the data plane itself: a cap on requests in flight to one
//! upstream origin, a request rate limit per devbox, and a cap on connections per source
//! address.
//!
//! All three keep their per-key state in a [`LazyMap`] (`shardmap`): shards of immutable hash
//! maps behind `ArcSwap`, so a request reads its entry with one atomic load and no lock; only the
//! first request for a new key takes its shard's writer mutex (which readers never touch) to copy
//! the shard with the entry added. The state itself is atomics: a counter per origin, and for
//! each devbox one "theoretical arrival time" updated with compare-and-swap (GCRA, the token
//! bucket written as a single number).
//!
//! The cap never queues: a request over it is answered 503 `upstream_busy` at once, so a slow
//! upstream cannot pile up waiting requests (and their sockets) inside Airlock.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};

use airlock_core::DevboxId;

use crate::error::ProxyError;
use crate::shardmap::LazyMap;

/// An upstream origin: scheme and authority (host and port as the gateway config spells them).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
}

/// Requests in flight to one origin.
pub(crate) struct Gate {
    in_flight: AtomicUsize,
}

/// Held while a request to an origin is in flight (its response body included).
pub(crate) struct GatePermit(Arc<Gate>);

impl Drop for GatePermit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `AIRLOCK_UPSTREAM_MAX_CONCURRENCY`: at most `cap` requests in flight per origin.
pub(crate) struct OriginGates {
    cap: usize,
    gates: LazyMap<Origin, Gate>,
}

/// What a request over the cap is told to wait before retrying.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

impl OriginGates {
    /// `cap` 0: unlimited (no state is kept at all).
    pub(crate) fn new(cap: usize) -> Self {
        OriginGates {
            cap,
            gates: LazyMap::new(),
        }
    }

    /// A permit for one request to `origin`, or `upstream_busy` at once when the cap is reached.
    pub(crate) fn enter(
        &self,
        scheme: &Scheme,
        authority: &Authority,
    ) -> Result<Option<GatePermit>, ProxyError> {
        if self.cap == 0 {
            return Ok(None);
        }
        let key = Origin {
            scheme: scheme.clone(),
            authority: authority.clone(),
        };
        let gate = self.gates.get_or_insert(&key, || {
            (
                key.clone(),
                Gate {
                    in_flight: AtomicUsize::new(0),
                },
            )
        });
        let before = gate.in_flight.fetch_add(1, Ordering::AcqRel);
        // The permit exists from here on, so that an early return gives the slot back.
        let permit = GatePermit(gate);
        if before >= self.cap {
            return Err(ProxyError::UpstreamBusy(BUSY_RETRY_AFTER));
        }
        Ok(Some(permit))
    }
}

/// `AIRLOCK_DEVBOX_RATE_LIMIT`: `requests` per `per`, with a burst of `requests`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

impl RateLimit {
    /// Parses `N/s` or `N/m` (N ≥ 1). The error says what is expected, without the setting's name.
    pub fn parse(text: &str) -> Result<RateLimit, String> {
        let (n, unit) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a rate like 100/s or 600/m"))?;
        let requests: u32 = n.trim().parse().ok().filter(|&n| n >= 1).ok_or_else(|| {
            format!("{text:?}: the number of requests must be a whole number ≥ 1")
        })?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            _ => {
                return Err(format!(
                    "{text:?}: the unit must be s or m, as in 100/s or 600/m"
                ))
            }
        };
        Ok(RateLimit { requests, per })
    }
}

/// A devbox's bucket: the time (ns after [`DevboxLimiter::epoch`]) at which it is full again.
struct Bucket {
    full_at: AtomicU64,
}

/// Per-devbox token buckets (GCRA): lock-free, one atomic per devbox.
pub(crate) struct DevboxLimiter {
    /// The time one request "costs", in ns.
    interval: u64,
    /// How far ahead of now `full_at` may be and still admit a request: the burst.
    tolerance: u64,
    epoch: Instant,
    buckets: LazyMap<DevboxId, Bucket>,
}

/// A shard holding this many buckets drops the full ones before growing further.
const SWEEP_AT: usize = 1024;

impl DevboxLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        let per = u64::try_from(limit.per.as_nanos()).unwrap_or(u64::MAX);
        let interval = (per / u64::from(limit.requests)).max(1);
        DevboxLimiter {
            interval,
            tolerance: interval.saturating_mul(u64::from(limit.requests) - 1),
            epoch: Instant::now(),
            buckets: LazyMap::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes one request from the devbox's bucket, or says how long to wait (`rate_limited`).
    pub(crate) fn check(&self, devbox: &DevboxId) -> Result<(), ProxyError> {
        let now = self.now();
        let bucket = match self.buckets.get(devbox) {
            Some(bucket) => bucket,
            None => {
                if self.buckets.shard_len(devbox) >= SWEEP_AT {
                    // A full bucket is the same as no bucket: forget devboxes that have been
                    // quiet, before the shard grows.
                    self.buckets
                        .retain_shard_of(devbox, |b| b.full_at.load(Ordering::Acquire) > now);
                }
                self.buckets.get_or_insert(devbox, || {
                    let bucket = Bucket {
                        full_at: AtomicU64::new(0),
                    };
                    (devbox.clone(), bucket)
                })
            }
        };
        let mut full_at = bucket.full_at.load(Ordering::Acquire);
        loop {
            let start = full_at.max(now);
            if start - now > self.tolerance {
                let wait = start - now - self.tolerance;
                return Err(ProxyError::RateLimited(Duration::from_nanos(wait)));
            }
            match bucket.full_at.compare_exchange_weak(
                full_at,
                start + self.interval,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => full_at = seen,
            }
        }
    }
}

/// Connections open per source (`AIRLOCK_MAX_CONNECTIONS_PER_SOURCE`), so that one address
/// cannot take the whole of `AIRLOCK_MAX_CONNECTIONS` and lock every sandbox out.
///
/// A source is an IPv4 address or an IPv6 /64 (one host usually holds a whole /64, so counting
/// single IPv6 addresses would be no cap at all). The count is taken once per connection, not
/// per request: one atomic increment on the source's counter, found without a lock.
pub(crate) struct SourceCaps {
    cap: usize,
    counts: LazyMap<IpAddr, AtomicUsize>,
}

/// A connection's place in its source's count, given back when dropped.
pub(crate) struct SourceSlot(Arc<AtomicUsize>);

impl Drop for SourceSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SourceCaps {
    pub(crate) fn new(cap: usize) -> Self {
        SourceCaps {
            cap,
            counts: LazyMap::new(),
        }
    }

    /// The source an address counts under.
    fn source(ip: IpAddr) -> IpAddr {
        match airlock_core::endpoint::normalize_ip(ip) {
            IpAddr::V6(v6) => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(seg))
            }
            v4 => v4,
        }
    }

    /// Takes a place for a connection from `ip`, or `None` when its source is at the cap.
    pub(crate) fn enter(&self, ip: IpAddr) -> Option<SourceSlot> {
        let source = Self::source(ip);
        let count = match self.counts.get(&source) {
            Some(count) => count,
            None => {
                if self.counts.shard_len(&source) >= SWEEP_AT {
                    // Sources without an open connection are the same as no entry. (A
                    // connection racing with the sweep may count on an entry just dropped: the
                    // cap can then be passed by the few connections of that race.)
                    self.counts
                        .retain_shard_of(&source, |c| c.load(Ordering::Acquire) > 0);
                }
                self.counts
                    .get_or_insert(&source, || (source, AtomicUsize::new(0)))
            }
        };
        if count.fetch_add(1, Ordering::AcqRel) >= self.cap {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(SourceSlot(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shardmap::LAZY_SHARDS as SHARDS;

    #[test]
    fn rate_limit_parses() {
        for (text, expected) in [
            ("100/s", Some((100, 1))),
            (" 600 / m ", Some((600, 60))),
            ("1/s", Some((1, 1))),
            ("0/s", None),
            ("-1/s", None),
            ("10/h", None),
            ("10", None),
            ("ten/s", None),
            ("", None),
        ] {
            let parsed = RateLimit::parse(text)
                .ok()
                .map(|r| (r.requests, r.per.as_secs()));
            assert_eq!(parsed, expected, "{text:?}");
        }
    }

    #[test]
    fn a_burst_passes_and_the_next_request_waits_one_interval() {
        let limiter = DevboxLimiter::new(RateLimit {
            requests: 5,
            per: Duration::from_secs(60),
        });
        let a = DevboxId::generate();
        let b = DevboxId::generate();
        for _ in 0..5 {
            limiter.check(&a).unwrap();
        }
        match limiter.check(&a) {
            Err(ProxyError::RateLimited(wait)) => {
                // One request's worth: 12 s, less the little time the test took.
                assert!(wait <= Duration::from_secs(12) && wait > Duration::from_secs(11));
            }
            other => panic!("expected rate_limited, got {other:?}"),
        }
        // Another devbox has its own bucket.
        limiter.check(&b).unwrap();
    }

    #[test]
    fn the_origin_cap_gives_slots_back() {
        let gates = OriginGates::new(2);
        let authority: Authority = "api.example.com".parse().unwrap();
        let one = gates.enter(&Scheme::HTTPS, &authority).unwrap();
        let two = gates.enter(&Scheme::HTTPS, &authority).unwrap();
        assert!(matches!(
            gates.enter(&Scheme::HTTPS, &authority),
            Err(ProxyError::UpstreamBusy(_))
        ));
        // Another origin is not affected.
        let other: Authority = "api.example.com:8443".parse().unwrap();
        assert!(gates.enter(&Scheme::HTTPS, &other).unwrap().is_some());
        drop(one);
        let three = gates.enter(&Scheme::HTTPS, &authority).unwrap();
        assert!(three.is_some());
        drop((two, three));
        assert!(OriginGates::new(0)
            .enter(&Scheme::HTTPS, &authority)
            .unwrap()
            .is_none());
    }

    #[test]
    fn quiet_devboxes_are_forgotten() {
        let limiter = DevboxLimiter::new(RateLimit {
            requests: 1000,
            per: Duration::from_secs(1),
        });
        let inserted = SWEEP_AT * SHARDS + SWEEP_AT * SHARDS / 2;
        for i in 0..inserted {
            if i == SWEEP_AT * SHARDS {
                // Every bucket so far is full again 1 ms after its request.
                std::thread::sleep(Duration::from_millis(5));
            }
            limiter.check(&DevboxId::generate()).unwrap();
        }
        let mut n = 0;
        limiter.buckets.for_each_arc(|_, _| n += 1);
        assert!(n < inserted, "{n} of {inserted} buckets kept");
    }

    #[test]
    fn sources_are_capped_apart_and_an_ipv6_slash_64_is_one_source() {
        let caps = SourceCaps::new(2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a1 = caps.enter(ip("10.0.0.1")).unwrap();
        let a2 = caps.enter(ip("::ffff:10.0.0.1")).unwrap();
        assert!(caps.enter(ip("10.0.0.1")).is_none());
        // Another address has its own count.
        let _b = caps.enter(ip("10.0.0.2")).unwrap();
        drop(a1);
        let a3 = caps.enter(ip("10.0.0.1")).unwrap();
        drop((a2, a3));
        let v6a = caps.enter(ip("2001:db8:1:2::1")).unwrap();
        let v6b = caps.enter(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(caps.enter(ip("2001:db8:1:2::77")).is_none());
        assert!(caps.enter(ip("2001:db8:1:3::1")).is_some());
        drop((v6a, v6b));
    }

    #[test]
    fn closed_sources_are_forgotten() {
        let caps = SourceCaps::new(1);
        let inserted = SWEEP_AT * SHARDS * 2;
        for i in 0..inserted {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32));
            drop(caps.enter(ip).unwrap());
        }
        let mut n = 0;
        caps.counts.for_each_arc(|_, _| n += 1);
        assert!(n < inserted, "{n} of {inserted} sources kept");
    }
}
