//! The raw-bytes passes do what the `Value` walkers do: for any body, protecting (or
//! restoring) the bytes and parsing the result gives the tree the walkers give, with the
//! same counts; what no walker touches goes out byte for byte; a repeated key the walkers
//! read falls back.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::tests::protector;
use super::tests_prop::text;
use super::*;

/// Bytes of `v`, compact or pretty.
fn bytes(v: &Value, pretty: bool) -> Vec<u8> {
    if pretty {
        serde_json::to_vec_pretty(v).unwrap()
    } else {
        serde_json::to_vec(v).unwrap()
    }
}

/// The raw pass result as a tree (the input when unchanged).
fn tree<S: std::fmt::Debug>(pass: RawPass<S>, input: &[u8]) -> (Value, S) {
    match pass {
        RawPass::Unchanged(s) => (serde_json::from_slice(input).unwrap(), s),
        RawPass::Rewritten(b, s) => (serde_json::from_slice(&b).expect("valid JSON out"), s),
        RawPass::Fallback => panic!("no repeated key here, yet the raw pass fell back"),
    }
}

fn assert_request_agrees(p: &Protector, v: &Value, pretty: bool) {
    let raw = bytes(v, pretty);
    let mut want = v.clone();
    let want_stats = p.protect_request(&mut want);
    match (p.protect_request_raw(&raw), want_stats) {
        (Ok(pass), Ok(want_stats)) => {
            let (got, stats) = tree(pass, &raw);
            assert_eq!(got, want, "raw and Value protection differ for {v}");
            assert_eq!(stats, want_stats);
        }
        (Err(_), Err(_)) => {}
        (got, want) => panic!("raw {got:?} but Value {want:?} for {v}"),
    }
}

fn assert_response_agrees(p: &Protector, v: &Value, pretty: bool) {
    let raw = bytes(v, pretty);
    let mut want = v.clone();
    let want_stats = p.restore_response(&mut want);
    let (got, stats) = tree(p.restore_response_raw(&raw), &raw);
    assert_eq!(got, want, "raw and Value restore differ for {v}");
    assert_eq!(stats, want_stats);
}

#[test]
fn the_example_request_protects_alike_compact_and_pretty() {
    let p = protector();
    let body = json!({
        "model": "gpt-4o-mini",
        "user": "jane@example.com",
        "messages": [
            {"role": "system", "content": "Customer CUST-12345678 \"quoted\"\n"},
            {"role": "user", "content": [
                {"type": "text", "text": "my card 4111 1111 1111 1111"},
                "bare part ops@example.org",
                {"type": "image_url", "image_url": {"url": "https://x/a@b.com"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "lookup", "arguments": "{\"email\":\"jane@example.com\",\"card\":4111111111111111,\"n\":3}"}}]},
            {"role": "assistant", "function_call": {"name": "f", "arguments": "not json: bob@example.com"}},
            {"role": "tool", "tool_call_id": "c1", "content": "found +44 20 7946 0958"}
        ],
        "input": ["a@b.example", {"role": "user", "content": [{"type": "input_text", "text": "DE89370400440532013000"}]},
                  {"type": "function_call_output", "call_id": "c", "output": "x@y.example"}],
        "prompt": ["key sk-proj-4f9Qm2XbT7yLw8ZcN1vR5sKdE3hJ6aPq", null, 7],
        "instructions": "reply to ops@example.org"
    });
    for pretty in [false, true] {
        assert_request_agrees(&p, &body, pretty);
    }
}

#[test]
fn untouched_bytes_go_out_as_they_came() {
    let p = protector();
    let raw = br#"{ "model" : "m", "n": 1.50e3, "x": "\u00e9",
        "messages": [ {"role":"user", "content" : "mail jane@example.com"} ], "z": [1,2 ,3] }"#;
    let RawPass::Rewritten(out, stats) = p.protect_request_raw(raw).unwrap() else {
        panic!("the email must be protected");
    };
    assert_eq!(stats.total(), 1);
    let out = String::from_utf8(out).unwrap();
    assert!(!out.contains("jane@example.com"), "{out}");
    // Everything but the content string is the input's own bytes.
    let raw = std::str::from_utf8(raw).unwrap();
    let (head, tail) = raw.split_once(r#""mail jane@example.com""#).unwrap();
    assert!(out.starts_with(head) && out.ends_with(tail), "{out}");
    // Nothing to protect: unchanged, no copy.
    let clean = br#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#;
    assert_eq!(
        p.protect_request_raw(clean).unwrap(),
        RawPass::Unchanged(ProtectStats::default())
    );
}

#[test]
fn a_repeated_key_or_a_body_that_is_no_object_falls_back() {
    let p = protector();
    let twice = br#"{"messages":[{"role":"user","content":"a@b.com","content":"c@d.com"}]}"#;
    assert_eq!(p.protect_request_raw(twice).unwrap(), RawPass::Fallback);
    let top = br#"{"user":"a@b.com","user":"c@d.com"}"#;
    assert_eq!(p.protect_request_raw(top).unwrap(), RawPass::Fallback);
    let answer = br#"{"choices":[{"message":{"content":"x","content":"y"}}]}"#;
    assert_eq!(p.restore_response_raw(answer), RawPass::Fallback);
    // A body that is not an object is not read field by position.
    let tokens = p
        .protect_text("a@b.com", &mut ProtectStats::default())
        .unwrap();
    let array =
        serde_json::to_vec(&json!([[{"message": {"content": tokens}}], null, null])).unwrap();
    assert_eq!(p.restore_response_raw(&array), RawPass::Fallback);
    assert_eq!(
        p.protect_request_raw(b" [\"a@b.com\"]").unwrap(),
        RawPass::Fallback
    );
    // A key no walker reads may repeat: the bytes go out as they came.
    let other = br#"{"model":"a","model":"b","messages":[]}"#;
    assert_eq!(
        p.protect_request_raw(other).unwrap(),
        RawPass::Unchanged(ProtectStats::default())
    );
}

#[test]
fn the_example_answer_restores_alike() {
    let p = protector();
    let mut st = ProtectStats::default();
    let mut tok = |s: &str| p.protect_text(s, &mut st).unwrap();
    let args = tok(r#"{"to":"jane@example.com"}"#);
    let answer = json!({
        "id": "x",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": tok("write to jane@example.com"),
                "refusal": tok("no, bob@example.com"),
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": args}}],
                "function_call": {"arguments": tok("call +44 20 7946 0958")}}},
            {"index": 1, "text": tok("legacy jane@example.com")},
            {"index": 2, "message": {"content": [{"type": "text", "text": tok("part a@b.example")}]}}
        ],
        "output": [
            {"type": "message", "content": [{"type": "output_text", "text": tok("out x@y.example"), "refusal": tok("r x@y.example")}]},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": tok("thought z@w.example")}]},
            {"type": "function_call", "arguments": tok(r#"{"q":"q@r.example"}"#)}
        ],
        "output_text": tok("all o@p.example"),
        "usage": {"prompt_tokens": 3}
    });
    for pretty in [false, true] {
        assert_response_agrees(&p, &answer, pretty);
    }
    let raw = serde_json::to_vec(&answer).unwrap();
    let RawPass::Rewritten(out, stats) = p.restore_response_raw(&raw) else {
        panic!("tokens must be restored");
    };
    assert_eq!(stats.failed, 0);
    let out = String::from_utf8(out).unwrap();
    assert!(!out.contains("PII."), "{out}");
    assert!(out.contains("write to jane@example.com"), "{out}");
}

/// Any JSON value, leaves drawn from protectable text.
fn junk() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        text().prop_map(|(t, _)| Value::String(t)),
        any::<i64>().prop_map(Value::from),
        Just(json!(4111111111111111u64)),
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{1,3}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A string, or now and then anything else where a string is expected.
fn s() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => text().prop_map(|(t, _)| Value::String(t)),
        1 => junk(),
    ]
    .boxed()
}

/// Tool-call arguments: JSON text with text, numbers and keys inside, or plain text.
fn args() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => (junk(), text()).prop_map(|(v, (t, _))| {
            Value::String(json!({ "v": v, t: 4111111111111111u64 }).to_string())
        }),
        1 => s(),
    ]
    .boxed()
}

/// An object with each of `fields` present or not, plus a field no walker reads.
fn obj(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let picked: Vec<_> = fields
        .into_iter()
        .map(|(k, st)| prop::option::of(st).prop_map(move |v| v.map(|v| (k, v))))
        .collect();
    (picked, prop::option::of(junk()))
        .prop_map(|(kv, extra)| {
            let mut m: Map<String, Value> = kv
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            if let Some(extra) = extra {
                m.insert("extra".into(), extra);
            }
            Value::Object(m)
        })
        .boxed()
}

fn list(item: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![4 => prop::collection::vec(item, 0..4).prop_map(Value::Array), 1 => junk()].boxed()
}

fn content() -> BoxedStrategy<Value> {
    let part = prop_oneof![
        obj(vec![("text", s()), ("refusal", s()), ("type", s())]),
        s(),
    ]
    .boxed();
    prop_oneof![s(), list(part)].boxed()
}

/// A chat message / responses item, request or response side.
fn item() -> BoxedStrategy<Value> {
    let function = obj(vec![("arguments", args()), ("name", s())]);
    obj(vec![
        ("content", content()),
        ("output", content()),
        ("text", s()),
        ("refusal", s()),
        ("reasoning_content", s()),
        ("arguments", args()),
        ("function_call", obj(vec![("arguments", args())])),
        ("tool_calls", list(obj(vec![("function", function)]))),
        ("summary", list(obj(vec![("text", s())]))),
    ])
}

fn request() -> BoxedStrategy<Value> {
    obj(vec![
        ("messages", list(item())),
        (
            "input",
            prop_oneof![s(), list(prop_oneof![item(), s()].boxed())].boxed(),
        ),
        ("instructions", s()),
        ("user", s()),
        ("prompt", prop_oneof![s(), list(s())].boxed()),
    ])
}

fn response() -> BoxedStrategy<Value> {
    obj(vec![
        (
            "choices",
            list(obj(vec![("message", item()), ("text", s())])),
        ),
        ("output", list(item())),
        ("output_text", s()),
    ])
}

/// Protects every string inside `v` (arguments' JSON text included, as text), so an
/// answer carries tokens wherever a provider could echo them.
fn tokenize_all(p: &Protector, v: &mut Value) {
    match v {
        Value::String(s) => *s = p.protect_text(s, &mut ProtectStats::default()).unwrap(),
        Value::Array(items) => items.iter_mut().for_each(|i| tokenize_all(p, i)),
        Value::Object(m) => m.values_mut().for_each(|i| tokenize_all(p, i)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Protecting the bytes gives the tree and the counts the `Value` walker gives.
    #[test]
    fn raw_protection_agrees_with_the_value_walker(body in request(), pretty in any::<bool>()) {
        assert_request_agrees(&protector(), &body, pretty);
    }

    /// Restoring the bytes gives the tree and the counts the `Value` walker gives.
    #[test]
    fn raw_restore_agrees_with_the_value_walker(mut body in response(), pretty in any::<bool>()) {
        let p = protector();
        tokenize_all(&p, &mut body);
        assert_response_agrees(&p, &body, pretty);
    }
}
