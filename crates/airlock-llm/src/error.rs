//! The crate's one validation error: the domain's [`airlock_core::InvalidInput`] (which field,
//! and what is wrong with it, never the value).

pub use airlock_core::InvalidInput;
