//! Fuzz target: the SSE decoder and encoders (invariants in `fuzz/checks.rs`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_sse_decode(data));
