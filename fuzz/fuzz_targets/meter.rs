//! Fuzz target `meter`: see `airlock_llm::fuzz_meter` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlock_fuzz::run("meter", data));
