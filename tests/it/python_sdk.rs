//! The official `openai` Python SDK through `HTTPS_PROXY` (installed into .venv by
//! `scripts/setup-test-env`; `scripts/test` exports LLM_EGRESS_TEST_PYTHON).

use crate::common::*;

#[test]
fn openai_sdk_chat_and_stream_through_https_proxy() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let proxy = Proxy::start(&mock_policy(&pki, mock.addr, ""));
    let v = run_sdk(
        &proxy,
        "basic_sdk.py",
        &[("BLOCKED_BASE_URL", "https://api.mock.test/v2")],
    );
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
