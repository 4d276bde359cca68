//! `/v1/usage`: tokens and cost of the metered requests of the caller's account, summed per
//! group of model, provider, devbox, gateway config and UTC day.

use airlock_core::llm::format_usd;
use airlock_core::{DevboxId, GatewayConfigId, InvalidInput, ModelSpec};
use airlock_store::{UsageFilter, UsageKey, UsageRow};
use axum::extract::State;
use axum::{Extension, Json};

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::json::Query;
use crate::wire::{UsageList, UsageQuery, UsageRowView};
use crate::{int_param, AppState};

/// `group_by`: a comma-separated set of keys. A key named twice counts once; an empty list
/// sums everything into one row.
fn parse_group_by(text: Option<&str>) -> Result<Vec<UsageKey>, InvalidInput> {
    let mut keys = Vec::new();
    for part in text.unwrap_or_default().split(',').map(str::trim) {
        let key = match part {
            "" => continue,
            "model" => UsageKey::Model,
            "provider" => UsageKey::Provider,
            "devbox" => UsageKey::Devbox,
            "gateway" => UsageKey::Gateway,
            "day" => UsageKey::Day,
            _ => {
                return Err(InvalidInput::new(
                    "group_by",
                    "must be a comma-separated list of model, provider, devbox, gateway, day",
                ))
            }
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

fn parse_filter(q: &UsageQuery) -> ApiResult<UsageFilter> {
    fn nonempty(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|s| !s.is_empty())
    }
    let start_ms = int_param("start_time_ms", &q.start_time_ms)?;
    let end_ms = int_param("end_time_ms", &q.end_time_ms)?;
    if let (Some(start), Some(end)) = (start_ms, end_ms) {
        if end <= start {
            return Err(
                InvalidInput::new("end_time_ms", "must be greater than start_time_ms").into(),
            );
        }
    }
    let model = nonempty(&q.model)
        .map(|m| ModelSpec::check_id("model", m).map(|()| m.to_owned()))
        .transpose()?;
    Ok(UsageFilter {
        start_ms,
        end_ms,
        devbox_id: nonempty(&q.devbox_id)
            .map(|v| DevboxId::parse("devbox_id", v))
            .transpose()?,
        gateway_config_id: nonempty(&q.gateway_id)
            .map(|v| GatewayConfigId::parse("gateway_id", v))
            .transpose()?,
        model,
    })
}

/// Days since 1970-01-01 as a proleptic Gregorian `YYYY-MM-DD` (Howard Hinnant's
/// `civil_from_days`), so that no date library is needed for one conversion.
pub(crate) fn format_day(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn view(keys: &[UsageKey], r: UsageRow) -> UsageRowView {
    // A key the query grouped by is shown, null when unknown; any other key is left out.
    let shown = |key: UsageKey| keys.contains(&key);
    UsageRowView {
        model: shown(UsageKey::Model).then_some(r.model),
        provider: shown(UsageKey::Provider).then_some(r.provider),
        devbox_id: shown(UsageKey::Devbox).then(|| r.devbox_id.map(|v| v.into_string())),
        gateway_id: shown(UsageKey::Gateway).then(|| r.gateway_config_id.map(|v| v.into_string())),
        day: shown(UsageKey::Day).then(|| r.day.map(format_day)),
        requests: r.requests,
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        cache_read_tokens: r.cache_read_tokens,
        cache_write_tokens: r.cache_write_tokens,
        reasoning_tokens: r.reasoning_tokens,
        cost_usd: r.cost_nanos.map(format_usd),
        unpriced_requests: r.unpriced_requests,
    }
}

/// `GET /v1/usage` (admin).
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Json<UsageList>> {
    caller.require_admin()?;
    let keys = parse_group_by(q.group_by.as_deref())?;
    let filter = parse_filter(&q)?;
    let rows = state
        .store
        .usage(&caller.account.id, &filter, &keys)
        .await?;
    Ok(Json(UsageList {
        usage: rows.into_iter().map(|r| view(&keys, r)).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_calendar_dates() {
        for (days, date) in [
            (0, "1970-01-01"),
            (-1, "1969-12-31"),
            (59, "1970-03-01"),
            (10_957, "2000-01-01"),
            (11_016, "2000-02-29"),
            (19_700, "2023-12-09"),
            (20_513, "2026-03-01"),
            (2_932_896, "9999-12-31"),
        ] {
            assert_eq!(format_day(days), date, "{days}");
        }
    }

    #[test]
    fn group_by_is_a_set_of_known_keys() {
        assert_eq!(parse_group_by(None).unwrap(), vec![]);
        assert_eq!(parse_group_by(Some("")).unwrap(), vec![]);
        assert_eq!(
            parse_group_by(Some("day, model,day")).unwrap(),
            vec![UsageKey::Day, UsageKey::Model]
        );
        for bad in ["models", "Model", "day;model", "gateway_id"] {
            assert_eq!(
                parse_group_by(Some(bad)).unwrap_err().field,
                "group_by",
                "{bad}"
            );
        }
    }
}
