//! `/v1/providers`: the built-in provider presets, and what a gateway config takes from one.
//!
//! The presets themselves (endpoints, auth, dialects, required headers) are `airlock-llm`'s;
//! this module turns them into the API's views and into the defaults of a gateway config.

use airlock_core::{AuthMechanism, CustomHeader, HeaderSource, InvalidInput};
use airlock_llm::{Preset, PresetAuth};
use axum::Json;
use serde_json::{json, Value};

use crate::wire::{ProviderList, ProviderView};

/// The preset a gateway config names in `provider`.
pub(crate) fn find(field: &str, id: &str) -> Result<&'static Preset, InvalidInput> {
    airlock_llm::preset(id).ok_or_else(|| {
        InvalidInput::new(
            field,
            "is not a known provider; GET /v1/providers lists them",
        )
    })
}

/// How the preset's credential is presented.
pub(crate) fn auth(preset: &Preset) -> Result<AuthMechanism, InvalidInput> {
    AuthMechanism::parse("auth_mechanism", preset.auth.kind(), preset.auth.key())
}

/// Adds the headers the preset's provider requires (Anthropic's `anthropic-version`) as literal
/// custom headers, unless the list already sets that header: the caller's value wins.
pub(crate) fn add_required_headers(preset: &Preset, headers: &mut Vec<CustomHeader>) {
    for (name, value) in preset.headers {
        if !headers.iter().any(|h| h.name == *name) {
            headers.push(CustomHeader {
                name: (*name).to_owned(),
                source: HeaderSource::Literal((*value).to_owned()),
            });
        }
    }
}

fn auth_view(auth: PresetAuth) -> Value {
    match auth.key() {
        Some(key) => json!({"type": auth.kind(), "key": key}),
        None => json!({"type": auth.kind()}),
    }
}

/// `GET /v1/providers` (any key): the presets a gateway config may name.
pub(crate) async fn list() -> Json<ProviderList> {
    let providers = airlock_llm::presets()
        .iter()
        .map(|p| ProviderView {
            id: p.id,
            name: p.name,
            endpoint: p.endpoint,
            endpoint_required: p.endpoint_required,
            auth_mechanism: auth_view(p.auth),
            api: p.api.as_str(),
            custom_headers: p
                .headers
                .iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect(),
            models: (!p.models.is_empty()).then(|| p.models.to_vec()),
        })
        .collect();
    Json(ProviderList { providers })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every preset makes a valid gateway config: its auth parses, its dialect is metered, and
    /// its required headers are valid custom headers next to its auth.
    #[test]
    fn every_preset_makes_a_valid_config() {
        for p in airlock_llm::presets() {
            let auth = auth(p).unwrap();
            assert!(p.api.is_metered(), "{}", p.id);
            let mut headers = vec![];
            add_required_headers(p, &mut headers);
            for h in &headers {
                airlock_core::auth::parse_header_name("h", &h.name).unwrap();
            }
            airlock_core::auth::check_custom_headers("custom_headers", &auth, &headers).unwrap();
            airlock_core::Endpoint::parse("endpoint", p.endpoint).unwrap();
        }
        assert!(find("provider", "anthropic").is_ok());
        assert_eq!(find("provider", "nope").unwrap_err().field, "provider");
    }
}
