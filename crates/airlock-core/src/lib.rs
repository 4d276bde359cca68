//! Airlock's domain, without IO.
//!
//! Everything that crosses a trust boundary is parsed here into a type that can only hold a valid
//! value ("parse, don't validate"): ids with their prefixes, environment-variable names,
//! upstream endpoints, auth mechanisms, custom headers, source addresses, the `gws_` token, and
//! the LLM dialects, model lists, usage and money of `llm`.
//! The wire format (JSON) lives in `airlock-api`; SQL lives in `airlock-store`.

pub mod auth;
pub mod binding;
pub mod endpoint;
pub mod error;
pub mod ids;
pub mod limits;
pub mod llm;
pub mod names;
pub mod router;
pub mod source;
pub mod state;
pub mod time;
pub mod token;
pub mod trace_context;

pub use auth::{AuthMechanism, CustomHeader, HeaderSource, MAX_CUSTOM_HEADERS};
pub use endpoint::{Endpoint, Scheme, UpstreamPolicy};
pub use error::InvalidInput;
pub use ids::{AccountId, ApiKeyId, AuditId, DevboxId, GatewayConfigId, SecretId, TokenId};
pub use limits::{CounterKey, LimitHit, LimitKind, LimitScope, Limits, LimitsRecord};
pub use llm::{Api, Metered, ModelSpec, Price, Usage};
pub use names::{EnvName, Label};
pub use source::SourceAddresses;
pub use token::{BearerSecret, SecretKind, TokenDigest, TokenScope};
