//! Fuzz target `h1guard`: see `airlock_fuzz::h1guard` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlock_fuzz::run("h1guard", data));
