//! Airlock's knowledge of LLM APIs: which providers exist, what their requests and responses
//! say about models and tokens, and what that costs. The LLM gateway features (usage and cost
//! in request events, budgets, routers) are built on it; it has no IO of its own.
//!
//! # Bird's-eye view
//!
//! A gateway config names a `provider` preset and an `api` dialect. When a request passes, the
//! data plane reads the request body with [`request`] (model, output cap, streaming; for Chat
//! Completions it turns on `stream_options.include_usage` so the stream reports usage), feeds
//! every response frame to a [`Meter`] as it passes (never holding it back), and at the end
//! takes a [`Reading`] from it, prices it with [`price`] and records the cost as a
//! decimal string of dollars.
//!
//! | module | what it does |
//! |---|---|
//! | [`api`] | the dialects: `openai-completions`, `openai-responses`, `anthropic-messages`, `gemini`, `none` |
//! | [`providers`] | the 24 built-in presets: endpoint (the base URL the provider's SDK uses), auth, dialect, required headers, a few model ids |
//! | [`usage`] | [`Usage`] in Airlock's convention (input counts every input token, cached ones included) and a meter's [`Reading`] |
//! | [`meter`] | the streaming meter: SSE framing over a bounded JSON path scanner, one table of paths per dialect, estimates when usage is missing |
//! | [`request`] | what a request body says; `include_usage` injection; the usage-only chunk test; Gemini's model from the URL path |
//! | [`translate`] | router gateways: requests, responses, errors and streams from Chat Completions to Messages and back, no IO |
//! | [`price`] | nano-dollar prices and costs, `"0.004215"` strings, a gateway's own model list ([`ModelSpec`]) and the bundled genai-prices table |
//! | [`error`] | [`InvalidInput`] `{ field, message }`, the shape of `airlock_core`'s |
//!
//! # Invariants
//!
//! - **No IO, no async, no clock reads except "now" for a price lookup.** Inputs are bytes and
//!   strings, so every part can be tested and fuzzed alone ([`fuzz_meter`]).
//! - **The meter's state is bounded and fixed**: about 1.5 KiB, all inline, nothing on the heap,
//!   whatever the upstream sends (a 100 MB line, a 100 MB string, 10^6 levels of nesting). It
//!   never allocates while fed, needs no byte twice and cutting a body anywhere changes nothing.
//! - **Counts are never negative and never above 2^40**; `exact` is true only when the upstream
//!   reported the final usage in full and it added up. Everything estimated says so.
//! - **Money is integers.** Nano-dollars in `u64`, prices per million tokens; floats appear only
//!   where genai-prices hands them over or an operator's JSON number is read, and are made exact
//!   (or refused) right there.
//! - **A cost is never guessed**: a model neither the gateway's list nor the bundled table knows
//!   has no price.

pub mod api;
pub mod error;
#[doc(hidden)] // For the fuzz target and the property tests; not an API.
pub mod fuzzing;
pub mod json;
pub mod meter;
pub mod price;
pub mod providers;
pub mod request;
pub mod translate;
pub mod usage;

pub use api::Api;
pub use error::InvalidInput;
pub use fuzzing::fuzz_meter;
pub use meter::Meter;
pub use price::{
    cost_nanos, format_usd, listed_price, parse_usd, price_for, resolve_price, ModelSpec, Price,
};
pub use providers::{preset, presets, Preset, PresetAuth};
pub use request::{
    gemini_path_streams, is_usage_only_chunk, model_from_gemini_path, parse_request,
    with_include_usage, RequestInfo,
};
pub use translate::{
    fuzzing::fuzz_translate, Dialect, RequestOptions, StreamOptions, StreamTranslator,
    TranslateError,
};
pub use usage::{Reading, Usage};
