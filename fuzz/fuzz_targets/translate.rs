//! Fuzz target `translate`: see `airlock_llm::fuzz_translate` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlock_fuzz::run("translate", data));
