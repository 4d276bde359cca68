//! Fuzz target `envelope`: see `airlock_fuzz::envelope` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlock_fuzz::run("envelope", data));
