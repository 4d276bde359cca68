//! Airlock's knowledge of LLM APIs, without IO: which providers exist and how they are reached,
//! the dialects they speak, token usage in Airlock's convention, and a streaming meter that reads
//! usage from upstream responses as they pass.

pub mod api;
pub mod error;
#[doc(hidden)] // For the fuzz target and the property tests; not an API.
pub mod fuzzing;
pub mod meter;
pub mod price;
pub mod providers;
pub mod request;
pub mod usage;

pub use api::Api;
pub use error::InvalidInput;
pub use fuzzing::fuzz_meter;
pub use meter::Meter;
pub use price::{
    cost_nanos, format_usd, parse_models, parse_usd, price_for, resolve_price, ModelDef, ModelInfo,
    Price,
};
pub use providers::{preset, presets, Preset, PresetAuth};
pub use request::{
    gemini_path_streams, is_usage_only_chunk, model_from_gemini_path, parse_request,
    with_include_usage, RequestInfo,
};
pub use usage::{Metered, Usage};
