//! Fuzz target: request parsing and upstream error normalization (invariants in
//! `fuzz/checks.rs`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_request_parse(data));
