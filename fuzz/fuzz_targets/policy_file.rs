//! Fuzz target: one policy file, parsed and validated as TOML and as JSON (invariants in
//! `fuzz/checks.rs`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_policy_file(data));
