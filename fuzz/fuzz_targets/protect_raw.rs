//! Fuzz target: prompt protection and token restore on the raw JSON bytes agree with the
//! `Value` walkers (invariants in `fuzz/checks.rs`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_protect_raw(data));
