//! Budgets and rate limits: the seven limits a devbox, a gateway config or the account may set,
//! their windows, and the keys of the counters that hold them (`docs/limits.md`).
//!
//! Amounts are integers: requests, tokens, and money in nano-dollars (the API spells cost limits
//! as decimal strings of dollars with at most 9 decimals, [`crate::llm::parse_usd`]).

use crate::error::InvalidInput;
use crate::ids::{AccountId, DevboxId, GatewayConfigId, TokenId};

/// One of the seven limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitKind {
    RequestsPerMinute,
    RequestsPerDay,
    TokensPerMinute,
    TokensPerDay,
    CostUsdPerDay,
    CostUsdPerMonth,
    CostUsdTotal,
    /// A scoped token's `max_requests` (never set through a `limits` object).
    MaxRequests,
}

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    Requests,
    /// Input plus output tokens.
    Tokens,
    /// Nano-dollars.
    CostNanos,
}

/// The period a limit's counter covers; all windows are UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Minute,
    Day,
    /// A calendar month.
    Month,
    /// Never resets.
    Total,
}

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

impl Window {
    /// The start of the window that holds `now_ms`.
    pub fn start(self, now_ms: i64) -> i64 {
        match self {
            Window::Minute => now_ms - now_ms.rem_euclid(MINUTE_MS),
            Window::Day => now_ms - now_ms.rem_euclid(DAY_MS),
            Window::Month => {
                let (y, m, _) = civil_from_days(now_ms.div_euclid(DAY_MS));
                days_from_civil(y, m, 1) * DAY_MS
            }
            Window::Total => 0,
        }
    }

    /// When the window that holds `now_ms` ends (`None`: never).
    pub fn end(self, now_ms: i64) -> Option<i64> {
        match self {
            Window::Minute => Some(self.start(now_ms) + MINUTE_MS),
            Window::Day => Some(self.start(now_ms) + DAY_MS),
            Window::Month => {
                let (y, m, _) = civil_from_days(now_ms.div_euclid(DAY_MS));
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                Some(days_from_civil(y, m, 1) * DAY_MS)
            }
            Window::Total => None,
        }
    }
}

// Howard Hinnant's civil-date algorithms (days since 1970-01-01 <-> proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl LimitKind {
    /// The seven limits of a `limits` object, in the API's order.
    pub const ALL: [LimitKind; 7] = [
        LimitKind::RequestsPerMinute,
        LimitKind::RequestsPerDay,
        LimitKind::TokensPerMinute,
        LimitKind::TokensPerDay,
        LimitKind::CostUsdPerDay,
        LimitKind::CostUsdPerMonth,
        LimitKind::CostUsdTotal,
    ];

    /// The field name, as the API and the refusal message spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            LimitKind::RequestsPerMinute => "requests_per_minute",
            LimitKind::RequestsPerDay => "requests_per_day",
            LimitKind::TokensPerMinute => "tokens_per_minute",
            LimitKind::TokensPerDay => "tokens_per_day",
            LimitKind::CostUsdPerDay => "cost_usd_per_day",
            LimitKind::CostUsdPerMonth => "cost_usd_per_month",
            LimitKind::CostUsdTotal => "cost_usd_total",
            LimitKind::MaxRequests => "max_requests",
        }
    }

    /// The name in `x-ratelimit-*` headers: `requests-per-minute`.
    pub const fn header_name(self) -> &'static str {
        match self {
            LimitKind::RequestsPerMinute => "requests-per-minute",
            LimitKind::RequestsPerDay => "requests-per-day",
            LimitKind::TokensPerMinute => "tokens-per-minute",
            LimitKind::TokensPerDay => "tokens-per-day",
            LimitKind::CostUsdPerDay => "cost-usd-per-day",
            LimitKind::CostUsdPerMonth => "cost-usd-per-month",
            LimitKind::CostUsdTotal => "cost-usd-total",
            LimitKind::MaxRequests => "max-requests",
        }
    }

    pub fn parse(text: &str) -> Option<LimitKind> {
        LimitKind::ALL
            .into_iter()
            .chain([LimitKind::MaxRequests])
            .find(|k| k.as_str() == text)
    }

    pub const fn measure(self) -> Measure {
        match self {
            LimitKind::RequestsPerMinute | LimitKind::RequestsPerDay | LimitKind::MaxRequests => {
                Measure::Requests
            }
            LimitKind::TokensPerMinute | LimitKind::TokensPerDay => Measure::Tokens,
            LimitKind::CostUsdPerDay | LimitKind::CostUsdPerMonth | LimitKind::CostUsdTotal => {
                Measure::CostNanos
            }
        }
    }

    pub const fn window(self) -> Window {
        match self {
            LimitKind::RequestsPerMinute | LimitKind::TokensPerMinute => Window::Minute,
            LimitKind::RequestsPerDay | LimitKind::TokensPerDay | LimitKind::CostUsdPerDay => {
                Window::Day
            }
            LimitKind::CostUsdPerMonth => Window::Month,
            LimitKind::CostUsdTotal | LimitKind::MaxRequests => Window::Total,
        }
    }
}

/// A `limits` object: each limit optional. Cost limits are in nano-dollars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    values: [Option<u64>; 7],
}

/// The largest count limit accepted (fits an `i64` column with room for overshoot).
pub const MAX_LIMIT: u64 = 1 << 53;

impl Limits {
    pub fn get(&self, kind: LimitKind) -> Option<u64> {
        LimitKind::ALL
            .iter()
            .position(|k| *k == kind)
            .and_then(|i| self.values[i])
    }

    pub fn set(&mut self, kind: LimitKind, value: Option<u64>) {
        if let Some(i) = LimitKind::ALL.iter().position(|k| *k == kind) {
            self.values[i] = value;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }

    /// The limits that are set, with their values.
    pub fn iter(&self) -> impl Iterator<Item = (LimitKind, u64)> + '_ {
        LimitKind::ALL
            .into_iter()
            .zip(self.values)
            .filter_map(|(k, v)| Some((k, v?)))
    }

    /// Parses one limit given as text (a count, or for a cost limit a decimal amount of dollars),
    /// reporting errors under `field`.
    pub fn parse_value(kind: LimitKind, field: &str, text: &str) -> Result<u64, InvalidInput> {
        let value = match kind.measure() {
            Measure::CostNanos => crate::llm::parse_usd(field, text)?,
            Measure::Requests | Measure::Tokens => {
                if text.starts_with('-') {
                    return Err(InvalidInput::new(field, "must not be negative"));
                }
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(InvalidInput::new(field, "must be a whole number"));
                }
                text.parse::<u64>()
                    .map_err(|_| InvalidInput::new(field, "is too large"))?
            }
        };
        if value > MAX_LIMIT && kind.measure() != Measure::CostNanos {
            return Err(InvalidInput::new(field, "is too large"));
        }
        Ok(value)
    }

    /// A limit as the API shows it: a count, or a decimal string of dollars.
    pub fn format_value(kind: LimitKind, value: u64) -> String {
        match kind.measure() {
            Measure::CostNanos => crate::llm::format_usd(value),
            Measure::Requests | Measure::Tokens => value.to_string(),
        }
    }
}

/// What a limit belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LimitScope {
    Account(AccountId),
    Devbox(DevboxId),
    GatewayConfig(GatewayConfigId),
    /// A scoped token's `max_requests`.
    Token(TokenId),
    /// A router backend's provider quota (`backends[i].limits`): `<router id>#<index>`.
    RouterBackend(String),
}

impl LimitScope {
    /// The scope's kind as the ledger stores it.
    pub fn kind(&self) -> &'static str {
        match self {
            LimitScope::Account(_) => "account",
            LimitScope::Devbox(_) => "devbox",
            LimitScope::GatewayConfig(_) => "gateway",
            LimitScope::Token(_) => "token",
            LimitScope::RouterBackend(_) => "router_backend",
        }
    }

    /// The provider quota of the backend at `index` of the router `router`.
    pub fn router_backend(router: &GatewayConfigId, index: usize) -> LimitScope {
        LimitScope::RouterBackend(format!("{}#{index}", router.as_str()))
    }

    pub fn id(&self) -> &str {
        match self {
            LimitScope::Account(id) => id.as_str(),
            LimitScope::Devbox(id) => id.as_str(),
            LimitScope::GatewayConfig(id) => id.as_str(),
            LimitScope::Token(id) => id.as_str(),
            LimitScope::RouterBackend(id) => id,
        }
    }

    /// The scope from the ledger's columns; `None` for an unknown kind.
    pub fn from_parts(kind: &str, id: &str) -> Option<LimitScope> {
        let id = id.to_owned();
        Some(match kind {
            "account" => LimitScope::Account(AccountId::from_trusted(id)),
            "devbox" => LimitScope::Devbox(DevboxId::from_trusted(id)),
            "gateway" => LimitScope::GatewayConfig(GatewayConfigId::from_trusted(id)),
            "token" => LimitScope::Token(TokenId::from_trusted(id)),
            "router_backend" => LimitScope::RouterBackend(id),
            _ => return None,
        })
    }
}

/// One counter of the ledger: a limit of a scope in one window.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CounterKey {
    pub scope: LimitScope,
    pub kind: LimitKind,
    pub window_start_ms: i64,
}

/// A scope's limits as the store holds them, with when they last changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsRecord {
    pub scope: LimitScope,
    pub limits: Limits,
    pub update_time_ms: i64,
}

/// A limit refused a request for the first time in its window, on one replica: what the
/// control-plane audit trail records (`limit.exceeded`). Ids only, never a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitHit {
    pub time_ms: i64,
    pub account_id: AccountId,
    pub scope: LimitScope,
    pub kind: LimitKind,
    pub limit: u64,
    pub window_start_ms: i64,
    /// When the window ends (`None`: never).
    pub resets_at_ms: Option<i64>,
    /// The devbox and gateway config of the request that was refused.
    pub devbox_id: DevboxId,
    pub gateway_config_id: GatewayConfigId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_start_and_end_in_utc() {
        // 2026-12-05T07:03:04.005Z
        let now = 1_796_454_184_005;
        assert_eq!(Window::Minute.start(now), 1_796_454_180_000);
        assert_eq!(Window::Day.start(now), 1_796_428_800_000);
        // 2026-12-01T00:00Z and 2027-01-01T00:00Z
        assert_eq!(Window::Month.start(now), 1_796_083_200_000);
        assert_eq!(Window::Month.end(now), Some(1_798_761_600_000));
        assert_eq!(Window::Total.start(now), 0);
        assert_eq!(Window::Total.end(now), None);
        // A leap February: 2028-02-29T12:00Z is in the month that starts 2028-02-01.
        assert_eq!(Window::Month.start(1_835_438_400_000), 1_832_976_000_000);
        assert_eq!(
            Window::Month.end(1_835_438_400_000),
            Some(1_835_481_600_000)
        );
    }

    #[test]
    fn values_parse_with_field_named_errors() {
        let cases: &[(LimitKind, &str, Result<u64, &str>)] = &[
            (LimitKind::RequestsPerMinute, "10", Ok(10)),
            (
                LimitKind::RequestsPerMinute,
                "-1",
                Err("must not be negative"),
            ),
            (
                LimitKind::TokensPerDay,
                "ten",
                Err("must be a whole number"),
            ),
            (
                LimitKind::TokensPerDay,
                "1.5",
                Err("must be a whole number"),
            ),
            (LimitKind::CostUsdPerDay, "1.5", Ok(1_500_000_000)),
            (LimitKind::CostUsdPerDay, "0.000000001", Ok(1)),
            (
                LimitKind::CostUsdPerDay,
                "0.0000000001",
                Err("must have at most 9 decimals"),
            ),
            (LimitKind::CostUsdTotal, "-3", Err("must not be negative")),
        ];
        for (kind, text, want) in cases {
            let got = Limits::parse_value(*kind, kind.as_str(), text);
            match (got, want) {
                (Ok(v), Ok(w)) => assert_eq!(v, *w, "{text}"),
                (Err(e), Err(w)) => {
                    assert_eq!(e.field, kind.as_str());
                    assert_eq!(e.message, *w, "{text}");
                }
                (got, want) => panic!("{text}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn limits_set_and_iterate() {
        let mut l = Limits::default();
        assert!(l.is_empty());
        l.set(LimitKind::CostUsdTotal, Some(5));
        l.set(LimitKind::RequestsPerMinute, Some(10));
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            [
                (LimitKind::RequestsPerMinute, 10),
                (LimitKind::CostUsdTotal, 5)
            ]
        );
        for k in LimitKind::ALL {
            assert_eq!(LimitKind::parse(k.as_str()), Some(k));
        }
    }
}
