//! Fuzz target: prompt-protection token restore in answer text, answer JSON and streams
//! cut anywhere, and protect-then-restore (invariants in `fuzz/checks.rs`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_token_restore(data));
