//! What a router knows of each backend's health, kept in atomics so that the request path
//! never takes a lock: a cooldown after a 429 (from the provider's own headers), a breaker
//! after a run of failures, a peak-EWMA of the time to the response head, requests and errors
//! in the current minute, and the provider's rate-limit `remaining` where it reports one.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName};

/// Failures in a row that open the breaker.
pub(crate) const BREAKER_FAILURES: u32 = 3;
/// How long an open breaker keeps a backend out.
pub(crate) const BREAKER_OPEN: Duration = Duration::from_secs(30);
/// A 429 without any header saying how long to wait cools its backend down this long.
pub(crate) const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5);
/// The longest cooldown a provider's header can ask for (a bogus header cannot bench a
/// backend for a day).
pub(crate) const MAX_COOLDOWN: Duration = Duration::from_secs(600);
/// The decay time of the latency average.
const EWMA_TAU_MS: f64 = 10_000.0;

/// One backend's health. Shared by every router entry that uses the same gateway and secret.
#[derive(Debug, Default)]
pub(crate) struct Health {
    cooldown_until_ms: AtomicI64,
    breaker_until_ms: AtomicI64,
    failures_in_row: AtomicU32,
    /// Peak-EWMA of the time to the response head, in microseconds (as f64 bits; 0: unknown).
    ewma_us: AtomicU64,
    ewma_at_ms: AtomicI64,
    in_flight: AtomicU64,
    /// The minute (Unix ms / 60 000) the two counters below count.
    minute: AtomicI64,
    requests: AtomicU64,
    errors: AtomicU64,
    /// The provider's last reported remaining requests (-1: never reported) and when its
    /// window resets.
    remaining: AtomicI64,
    resets_at_ms: AtomicI64,
}

/// A snapshot of [`Health`] for the status endpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct HealthView {
    pub(crate) healthy: bool,
    pub(crate) cooldown_until_ms: Option<i64>,
    pub(crate) latency_ewma_ms: Option<f64>,
    pub(crate) requests_last_minute: u64,
    pub(crate) errors_last_minute: u64,
    pub(crate) remaining: Option<i64>,
    pub(crate) resets_in_ms: Option<i64>,
}

impl Health {
    /// The time until which this backend is out (cooldown or open breaker), if it is.
    pub(crate) fn out_until(&self, now_ms: i64) -> Option<i64> {
        let until = self
            .cooldown_until_ms
            .load(Ordering::Relaxed)
            .max(self.breaker_until_ms.load(Ordering::Relaxed));
        (until > now_ms).then_some(until)
    }

    /// Whether the time out is a cooldown (a 429) rather than the breaker.
    pub(crate) fn in_cooldown(&self, now_ms: i64) -> bool {
        self.cooldown_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// The latency score for the latency strategy: the peak-EWMA weighted by the requests in
    /// flight (as Finagle's and tower's peak-EWMA balancers do). Unknown latency scores 0, so a
    /// new backend is tried.
    pub(crate) fn load_score(&self, now_ms: i64) -> f64 {
        let ewma = self.decayed_ewma(now_ms);
        ewma * (self.in_flight.load(Ordering::Relaxed) as f64 + 1.0)
    }

    fn decayed_ewma(&self, now_ms: i64) -> f64 {
        let ewma = f64::from_bits(self.ewma_us.load(Ordering::Relaxed));
        let at = self.ewma_at_ms.load(Ordering::Relaxed);
        let elapsed = (now_ms - at).max(0) as f64;
        ewma * (-elapsed / EWMA_TAU_MS).exp()
    }

    /// An attempt starts.
    pub(crate) fn begin(&self, now_ms: i64) -> InFlightGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.count(now_ms, false);
        InFlightGuard(self)
    }

    fn count(&self, now_ms: i64, error: bool) {
        let minute = now_ms / 60_000;
        if self.minute.swap(minute, Ordering::Relaxed) != minute {
            self.requests.store(0, Ordering::Relaxed);
            self.errors.store(0, Ordering::Relaxed);
        }
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        } else {
            self.requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The backend answered with a head after `elapsed` (a success for the breaker, unless
    /// it is a 5xx or 429, which [`Health::failed`] and [`Health::cool_down`] record).
    pub(crate) fn answered(&self, now_ms: i64, elapsed: Duration, headers: &HeaderMap) {
        let rtt = elapsed.as_micros() as f64;
        // Peak: a slower answer counts at once, a faster one only through the decay.
        let decayed = self.decayed_ewma(now_ms);
        let next = if rtt > decayed {
            rtt
        } else {
            let at = self.ewma_at_ms.load(Ordering::Relaxed);
            let w = (-((now_ms - at).max(0) as f64) / EWMA_TAU_MS).exp();
            decayed * w + rtt * (1.0 - w)
        };
        self.ewma_us.store(next.to_bits(), Ordering::Relaxed);
        self.ewma_at_ms.store(now_ms, Ordering::Relaxed);
        if let Some(remaining) = header_i64(headers, &REMAINING_REQUESTS) {
            self.remaining.store(remaining, Ordering::Relaxed);
            let reset = reset_after(headers).map_or(0, |d| now_ms + d.as_millis() as i64);
            self.resets_at_ms.store(reset, Ordering::Relaxed);
        }
    }

    /// The attempt succeeded: the breaker's count starts over.
    pub(crate) fn succeeded(&self) {
        self.failures_in_row.store(0, Ordering::Relaxed);
    }

    /// A connection failure, a timeout, a 5xx or an error event: counts towards the breaker.
    pub(crate) fn failed(&self, now_ms: i64) {
        self.count(now_ms, true);
        let n = self.failures_in_row.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= BREAKER_FAILURES {
            self.breaker_until_ms
                .store(now_ms + BREAKER_OPEN.as_millis() as i64, Ordering::Relaxed);
            self.failures_in_row.store(0, Ordering::Relaxed);
        }
    }

    /// A 429: out until the provider says (Retry-After, `retry-after-ms`, the reset headers).
    /// Returns the cooldown's end.
    pub(crate) fn cool_down(&self, now_ms: i64, headers: &HeaderMap) -> i64 {
        self.count(now_ms, true);
        let wait = cooldown_for(headers)
            .unwrap_or(DEFAULT_COOLDOWN)
            .min(MAX_COOLDOWN);
        let until = now_ms + wait.as_millis() as i64;
        self.cooldown_until_ms.fetch_max(until, Ordering::Relaxed);
        until
    }

    pub(crate) fn view(&self, now_ms: i64) -> HealthView {
        let minute = now_ms / 60_000;
        let current = self.minute.load(Ordering::Relaxed) == minute;
        let ewma = f64::from_bits(self.ewma_us.load(Ordering::Relaxed));
        let remaining = self.remaining.load(Ordering::Relaxed);
        let resets = self.resets_at_ms.load(Ordering::Relaxed);
        let cooldown = self.cooldown_until_ms.load(Ordering::Relaxed);
        HealthView {
            healthy: self.out_until(now_ms).is_none(),
            cooldown_until_ms: (cooldown > now_ms).then_some(cooldown),
            latency_ewma_ms: (ewma > 0.0).then(|| self.decayed_ewma(now_ms) / 1000.0),
            requests_last_minute: if current {
                self.requests.load(Ordering::Relaxed)
            } else {
                0
            },
            errors_last_minute: if current {
                self.errors.load(Ordering::Relaxed)
            } else {
                0
            },
            remaining: (self.ewma_at_ms.load(Ordering::Relaxed) > 0 && remaining >= 0)
                .then_some(remaining),
            resets_in_ms: (resets > now_ms).then(|| resets - now_ms),
        }
    }
}

/// Holds one request in flight on a backend (for the latency score).
pub(crate) struct InFlightGuard<'a>(&'a Health);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn header_i64(headers: &HeaderMap, names: &[HeaderName]) -> Option<i64> {
    names
        .iter()
        .find_map(|n| headers.get(n)?.to_str().ok()?.trim().parse().ok())
}

// The providers' rate-limit headers, named once rather than parsed from text on every answer.
const REMAINING_REQUESTS: [HeaderName; 2] = [
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
];
const RESETS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-reset-requests"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
    HeaderName::from_static("x-ratelimit-reset"),
];

/// How long a 429 asks to wait: `retry-after-ms`, then `retry-after` (seconds), then the
/// longest of the providers' reset headers.
pub(crate) fn cooldown_for(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|t| t.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_millis(ms as u64));
        }
    }
    if let Some(s) = text("retry-after").and_then(|t| t.parse::<f64>().ok()) {
        if s.is_finite() && s >= 0.0 {
            return Some(Duration::from_millis((s * 1000.0) as u64));
        }
    }
    reset_after(headers)
}

/// The longest of OpenAI's `x-ratelimit-reset-requests` / `-tokens` (durations such as `1s`,
/// `6m0s`, `20ms`).
fn reset_after(headers: &HeaderMap) -> Option<Duration> {
    RESETS
        .iter()
        .filter_map(|n| headers.get(n)?.to_str().ok().and_then(parse_go_duration))
        .max()
}

/// A Go-style duration (`1h2m3.5s`, `250ms`) or a bare number of seconds.
pub(crate) fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_millis((secs * 1000.0) as u64));
    }
    let mut total = 0.0_f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            _ => return None,
        };
        total += number * factor;
        rest = &rest[unit_len..];
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_millis(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooldowns_from_provider_headers() {
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Headers<'_>, Option<u64>)] = &[
            (&[("retry-after", "3")], Some(3_000)),
            (
                &[("retry-after-ms", "250"), ("retry-after", "3")],
                Some(250),
            ),
            (&[("x-ratelimit-reset-requests", "1m30s")], Some(90_000)),
            (
                &[
                    ("x-ratelimit-reset-requests", "20ms"),
                    ("x-ratelimit-reset-tokens", "2s"),
                ],
                Some(2_000),
            ),
            (&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], None),
            (&[], None),
        ];
        for (headers, want) in cases {
            let mut map = HeaderMap::new();
            for (k, v) in *headers {
                map.insert(*k, v.parse().unwrap());
            }
            assert_eq!(
                cooldown_for(&map).map(|d| d.as_millis() as u64),
                *want,
                "{headers:?}"
            );
        }
    }

    #[test]
    fn breaker_opens_after_a_run_and_cooldown_caps() {
        let h = Health::default();
        for _ in 0..BREAKER_FAILURES - 1 {
            h.failed(1_000);
        }
        assert!(h.out_until(1_000).is_none());
        h.failed(1_000);
        assert_eq!(
            h.out_until(1_000),
            Some(1_000 + BREAKER_OPEN.as_millis() as i64)
        );
        let h = Health::default();
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "999999".parse().unwrap());
        assert_eq!(h.cool_down(0, &headers), MAX_COOLDOWN.as_millis() as i64);
        assert!(h.in_cooldown(1));
    }
}
