//! Airlock's knowledge of LLM APIs, without IO: which providers exist and how they are reached,
//! the dialects they speak, and token usage in Airlock's convention.

pub mod api;
pub mod error;
pub mod providers;
pub mod usage;

pub use api::Api;
pub use error::InvalidInput;
pub use providers::{preset, presets, Preset, PresetAuth};
pub use usage::{Metered, Usage};
