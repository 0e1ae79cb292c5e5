//! The official `openai` Python SDK through `HTTPS_PROXY` (installed into .venv by
//! `scripts/setup-test-env`; `scripts/test` exports LLM_EGRESS_TEST_PYTHON).

mod common;

use std::process::Command;

use common::*;

/// The venv's python; a missing venv is a failure with instructions, never a skip.
pub fn python() -> String {
    if let Ok(p) = std::env::var("LLM_EGRESS_TEST_PYTHON") {
        return p;
    }
    let local = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    assert!(
        std::path::Path::new(local).exists(),
        "the openai SDK venv is missing: run ./scripts/setup-test-env (./scripts/test does)"
    );
    local.to_owned()
}

#[test]
fn openai_sdk_chat_and_stream_through_https_proxy() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let proxy = Proxy::start(&mock_policy(&pki, mock.addr, ""));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/basic_sdk.py");
    let out = Command::new(python())
        .arg(script)
        .env("HTTPS_PROXY", proxy.url())
        .env("SSL_CERT_FILE", proxy.ca())
        .env("OPENAI_BASE_URL", "https://api.mock.test/v1")
        .env("BLOCKED_BASE_URL", "https://api.mock.test/v2")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json line");
    assert!(
        v["content"]
            .as_str()
            .unwrap_or_default()
            .contains("hello from python"),
        "{v}"
    );
    assert!(
        v["stream"]
            .as_str()
            .unwrap_or_default()
            .contains("stream from python please"),
        "{v}"
    );
    assert!(v["chunks"].as_u64().unwrap_or(0) >= 2);
    assert_eq!(v["blocked"], "endpoint_not_allowed");
    assert_eq!(v["blocked_status"], 403);
}
