//! Fuzz target: request path normalization, allowlist prefix matching, host
//! normalization and CONNECT targets (invariants in `fuzz/checks.rs`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_url(data));
