//! The dialect an upstream speaks, named as gateway configs name it (`api`): the domain's
//! [`airlock_core::Api`], re-exported so that this crate's users need one import.

pub use airlock_core::Api;
