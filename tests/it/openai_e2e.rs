//! OpenAI-format awareness end to end with the official Python SDK: streaming text and
//! tool calls, tool-call validation, usage exactly when asked, normalized provider errors,
//! cut streams raising in the SDK, gzip upstreams counted, and the metrics that result.

use std::process::Command;

use crate::common::*;

#[test]
fn openai_features_through_the_proxy() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let extra = "\n[[provider]]\nname = \"mockai\"\nbase_url = \"https://api.mock.test/v1\"\npricing = { input_per_mtok = 1000000.0, output_per_mtok = 2000000.0 }\n\n[[route]]\nname = \"labels\"\nmatch = { model = [\"gpt-4o-mini\"], header = \"never\" }\ntargets = [{ provider = \"mockai\" }]\n\n[tool_calls]\nvalidate = true\non_invalid = \"reject\"\n";
    let policy = mock_policy(&pki, mock.addr, "") + extra;
    let policy = policy.replace("[[route]]", "[[provider]]\nname = \"keyed\"\nbase_url = \"https://api.mock.test/v1/keyed\"\napi_key = { env = \"LLM_EGRESS_TEST_KEY\" }\n\n[[route]]").replace("targets = [{ provider = \"mockai\" }]", "targets = [{ provider = \"keyed\", model = \"gpt-4o-mini\" }]");
    let proxy = Proxy::start_with_env(&policy, &[("LLM_EGRESS_TEST_KEY", "sk-route-key")]);
    let v = run_sdk(&proxy, "openai_features.py", &[]);
    let s = &v["stream_text"];
    assert!(
        s["error"].is_null()
            && s["text"]
                .as_str()
                .unwrap_or_default()
                .contains("tell me about streams"),
        "{s}"
    );
    // Usage: the proxy asked upstream for it, but the client sees it only when it asked.
    assert_eq!(
        v["usage_not_asked"]["usage_chunks"], 0,
        "{}",
        v["usage_not_asked"]
    );
    assert_eq!(v["usage_asked"]["usage_chunks"], 1, "{}", v["usage_asked"]);
    // Tool calls: a valid one arrives intact; invalid ones raise in the SDK.
    let tv = &v["tool_valid"];
    assert!(tv["error"].is_null(), "{tv}");
    assert_eq!(tv["tool_names"]["0"], "get_weather");
    let args: serde_json::Value =
        serde_json::from_str(tv["tool_args"]["0"].as_str().unwrap_or_default()).expect("args json");
    assert_eq!(args, serde_json::json!({"city": "Paris", "days": 2}));
    for case in ["tool_unknown", "tool_missing", "tool_wrong_type"] {
        let e = v[case]["error"].as_str().unwrap_or_default();
        assert!(e.contains("tool call rejected"), "{case}: {}", v[case]);
        assert!(
            v[case]["tool_args"]
                .as_object()
                .is_none_or(|m| m.is_empty()),
            "no invalid tool arguments reached the client: {}",
            v[case]
        );
    }
    assert!(
        v["tool_json_valid"]
            .as_str()
            .unwrap_or_default()
            .contains("Oslo"),
        "{}",
        v["tool_json_valid"]
    );
    assert_eq!(v["tool_json_invalid"]["status"], 502);
    assert_eq!(v["tool_json_invalid"]["code"], "tool_call_invalid");
    // Anthropic's 529 overloaded error surfaces as an OpenAI-style error with a code.
    let a = &v["anthropic_529"];
    assert_eq!(a["status"], 529, "{a}");
    assert_eq!(a["code"], "overloaded_error", "{a}");
    // A cut stream raises; a stream that ends early raises too (never a clean short answer).
    for case in ["cut", "ended_early"] {
        let e = v[case]["error"].as_str().unwrap_or_default();
        assert!(
            e.contains("upstream") || e.contains("stream"),
            "{case}: {}",
            v[case]
        );
    }
    assert!(v["gzip"]
        .as_str()
        .unwrap_or_default()
        .contains("gzip me please"));
    // Invalid JSON on a known route is refused before it leaves.
    let r = Command::new("curl")
        .args([
            "-sS",
            "-x",
            &proxy.url(),
            "--cacert",
            proxy.ca().to_str().expect("utf8"),
            "-H",
            "content-type: application/json",
            "-d",
            "{\"model\": ",
            "https://api.mock.test/v1/chat/completions",
        ])
        .output()
        .expect("curl");
    let body: serde_json::Value = serde_json::from_slice(&r.stdout).expect("json");
    assert_eq!(body["error"]["code"], "invalid_request_json", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("line 1"),
        "{body}"
    );
    // Metrics: tokens and cost by provider and model.
    let (_, m) = proxy.admin_get("/metrics");
    let tokens = m
        .lines()
        .find(|l| {
            l.starts_with("llm_egress_tokens_total{")
                && l.contains("provider=\"mockai\"")
                && l.contains("model=\"gpt-4o-mini\"")
                && l.contains("kind=\"prompt\"")
        })
        .unwrap_or_else(|| panic!("{m}"));
    let n: f64 = tokens
        .rsplit(' ')
        .next()
        .and_then(|x| x.parse().ok())
        .expect("count");
    assert!(n > 0.0, "{tokens}");
    let cost = m
        .lines()
        .find(|l| l.starts_with("llm_egress_cost_total{") && l.contains("provider=\"mockai\""))
        .unwrap_or_else(|| panic!("{m}"));
    let c: f64 = cost
        .rsplit(' ')
        .next()
        .and_then(|x| x.parse().ok())
        .expect("cost");
    assert!(
        c >= n,
        "cost at 1.0 per prompt token is at least the prompt tokens: {cost}"
    );
    let invalid = proxy.audit_lines(4, |v| v["event"] == "tool_call_invalid");
    assert!(invalid.len() >= 4, "{invalid:?}");
    let audit = std::fs::read_to_string(&proxy.audit).expect("audit");
    assert!(
        !audit.contains("two") && !audit.contains("Paris"),
        "no arguments in audit lines"
    );
}

#[tokio::test]
async fn on_invalid_log_passes_the_call_and_audits_it() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let proxy = Proxy::start(
        &(mock_policy(&pki, mock.addr, "")
            + "\n[tool_calls]\nvalidate = true\non_invalid = \"log\"\n"),
    );
    let tools = serde_json::json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "required": ["city"]}}}]);
    for stream in [false, true] {
        let r = proxy
            .client()
            .post("https://api.mock.test/v1/chat/completions")
            .json(&serde_json::json!({"model": "gpt-4o-mini", "stream": stream, "tools": tools, "messages": [{"role": "user", "content": "call get_weather {\"days\": 1}"}]}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        let text = r.text().await.expect("body");
        assert!(
            text.contains("get_weather") && !text.contains("tool_call_invalid"),
            "{text}"
        );
    }
    let lines = proxy.audit_lines(2, |v| v["event"] == "tool_call_invalid");
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["detail"]["action"] == "logged"));
}

#[tokio::test]
async fn log_allowed_lines_carry_usage_and_cost_but_no_content() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let extra = "\n[[provider]]\nname = \"mockai\"\nbase_url = \"https://api.mock.test/v1\"\npricing = { input_per_mtok = 2.0, output_per_mtok = 4.0 }\n\n[audit]\nlog_allowed = true\n";
    let proxy = Proxy::start(&(mock_policy(&pki, mock.addr, "") + extra));
    for stream in [false, true] {
        let r = proxy
            .client()
            .post("https://api.mock.test/v1/chat/completions")
            .json(&chat_body("very private words here", stream))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        let _ = r.text().await;
    }
    let lines = proxy.audit_lines(2, |v| v["event"] == "allowed");
    assert_eq!(lines.len(), 2, "{lines:?}\n{}", proxy.proc.output());
    for l in &lines {
        assert!(
            l["detail"]["prompt_tokens"].as_u64().unwrap_or(0) > 0,
            "{l}"
        );
        assert!(l["detail"]["cost"].as_f64().unwrap_or(0.0) > 0.0, "{l}");
        assert_eq!(l["detail"]["provider"], "mockai");
    }
    let audit = std::fs::read_to_string(&proxy.audit).expect("audit");
    assert!(!audit.contains("private words"));
}
