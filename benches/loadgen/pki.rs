//! The benchmark's test PKI: root → intermediate → one leaf for `*.bench.test` (and
//! `api.bench.test`), written to a temp dir ([`llm_egress::mock_provider::MockPki`]). The
//! mock provider serves the leaf; the proxy trusts the root through `[upstream]
//! extra_roots` and pins the intermediate.

use anyhow::{Context, Result};

pub use llm_egress::mock_provider::MockPki as Pki;

/// The domain every benchmark host name lives under.
pub const DOMAIN: &str = "bench.test";

/// Creates the benchmark PKI in `dir`.
pub fn create(dir: &std::path::Path) -> Result<Pki> {
    let names = vec![format!("api.{DOMAIN}"), format!("*.{DOMAIN}")];
    Pki::create(dir, "llm-egress bench", &names).context("creating the benchmark PKI")
}
