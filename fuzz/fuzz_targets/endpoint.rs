//! Fuzz target `endpoint`: see `airlock_fuzz::endpoint` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlock_fuzz::run("endpoint", data));
