//! Every integration test, in one test binary.
//!
//! Each file here used to be its own `tests/*.rs` crate, and each of those linked the whole
//! library and its dependencies again: fourteen links of ~200 MB apiece, which cost minutes
//! on a 2-core machine and filled the disk of a fresh CI machine. As modules of one crate
//! they share one link. Run one group with a filter, e.g.
//! `cargo test --test it proxy_basic::` or `cargo test --test it fuzz_corpus::`.
//!
//! The benchmark's smoke run stays a binary of its own (`tests/bench_smoke.rs`): it loads
//! both cores for seconds, and cargo runs test binaries one after the other, so it never
//! overlaps the timing-sensitive tests here (`fastest` routing, reload deadlines).

mod common;

mod cli_e2e;
mod demo;
mod fuzz_corpus;
mod kubernetes;
mod openai_e2e;
mod policy_reload;
mod protect_e2e;
mod proxy_basic;
mod proxy_tls;
mod python_sdk;
mod routing_e2e;
mod routing_sdk;
mod systemd;
