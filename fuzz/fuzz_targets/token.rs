//! Fuzz target `token`: see `airlock_fuzz::token` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlock_fuzz::run("token", data));
