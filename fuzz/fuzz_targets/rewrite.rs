//! Fuzz target `rewrite`: see `airlock_proxy::fuzzing::check_rewrite` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlock_fuzz::run("rewrite", data));
