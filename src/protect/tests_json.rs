//! The JSON walkers by example: which request fields are protected, which response
//! fields are restored, and that tool-call arguments stay valid JSON both ways.

use serde_json::json;

use super::tests::protector;
use super::*;

#[test]
fn protect_request_covers_every_text_field() {
    let p = protector();
    let mut body = json!({
        "model": "gpt-4o-mini",
        "user": "jane@example.com",
        "messages": [
            {"role": "system", "content": "Customer CUST-12345678"},
            {"role": "user", "content": [
                {"type": "text", "text": "my card 4111 1111 1111 1111"},
                {"type": "image_url", "image_url": {"url": "https://x/a@b.com"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "lookup", "arguments": "{\"email\":\"jane@example.com\",\"card\":4111111111111111,\"n\":3}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "found +44 20 7946 0958"}
        ],
        "input": ["a@b.example", {"role": "user", "content": [{"type": "input_text", "text": "DE89370400440532013000"}]},
                  {"type": "function_call_output", "call_id": "c", "output": "x@y.example"}],
        "prompt": "key sk-proj-4f9Qm2XbT7yLw8ZcN1vR5sKdE3hJ6aPq",
        "instructions": "reply to ops@example.org"
    });
    let before = body.clone();
    let stats = p.protect_request(&mut body).unwrap();
    let text = body.to_string();
    for plain in [
        "jane@example.com",
        "CUST-12345678",
        "4111",
        "7946",
        "a@b.example",
        "DE89",
        "x@y.example",
        "sk-proj",
        "ops@example.org",
    ] {
        assert!(!text.contains(plain), "{plain} leaked: {text}");
    }
    assert!(text.contains("https://x/a@b.com"), "image url untouched");
    assert_eq!(body["model"], "gpt-4o-mini");
    let args: serde_json::Value = serde_json::from_str(
        body["messages"][2]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(args["email"].as_str().unwrap().starts_with("PII.k1.email."));
    assert!(args["card"]
        .as_str()
        .unwrap()
        .starts_with("PII.k1.credit_card."));
    assert_eq!(args["n"], 3);
    assert_eq!(stats.total(), 11);
    assert_eq!(stats.by_detector["email"], 5);
    assert_eq!(stats.by_detector["secret"], 1);
    // The same body restored as if the model had echoed it: every text comes back.
    let mut echoed = json!({"choices": [{"message": {
        "content": body["messages"][0]["content"],
        "tool_calls": body["messages"][2]["tool_calls"]}}]});
    let rs = p.restore_response(&mut echoed);
    assert_eq!(
        rs,
        RestoreStats {
            restored: 3,
            failed: 0
        }
    );
    assert_eq!(
        echoed["choices"][0]["message"]["content"],
        before["messages"][0]["content"]
    );
    let args = echoed["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    let args: serde_json::Value = serde_json::from_str(args).unwrap();
    assert_eq!(
        args,
        json!({"email": "jane@example.com", "card": "4111111111111111", "n": 3})
    );
}

#[test]
fn restore_response_covers_completions_and_responses_api() {
    let p = protector();
    let mut st = ProtectStats::default();
    let tok = p.protect_text("<<say \"hi\"\\n>>", &mut st).unwrap();
    let mut body = json!({
        "choices": [{"text": format!("A {tok}")}],
        "output": [
            {"type": "message", "content": [{"type": "output_text", "text": format!("{tok}.")}]},
            {"type": "function_call", "arguments": format!("{{\"q\":\"{tok}\"}}")},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": tok}]}
        ]
    });
    let rs = p.restore_response(&mut body);
    assert_eq!(rs.restored, 4);
    assert_eq!(body["choices"][0]["text"], "A <<say \"hi\"\\n>>");
    assert_eq!(
        body["output"][0]["content"][0]["text"],
        "<<say \"hi\"\\n>>."
    );
    let args: serde_json::Value =
        serde_json::from_str(body["output"][1]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["q"], "<<say \"hi\"\\n>>");
}
