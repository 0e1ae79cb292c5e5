use proptest::prelude::*;
use serde_json::json;

use super::*;

fn parse(route: ApiRoute, json: &str) -> ParsedRequest {
    parse_request(route, json.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn routes_match_with_or_without_prefixes() {
    use ApiRoute::*;
    let cases = [
        ("/chat/completions", Some(ChatCompletions)),
        ("/v1/chat/completions", Some(ChatCompletions)),
        ("/openai/v1/chat/completions?x=1", Some(ChatCompletions)),
        (
            "/openai/deployments/gpt4/chat/completions",
            Some(ChatCompletions),
        ),
        ("/v1/completions/", Some(Completions)),
        ("/completions", Some(Completions)),
        ("/v1/embeddings", Some(Embeddings)),
        ("/responses", Some(Responses)),
        ("/v1/models", Some(Models)),
        ("/models", Some(Models)),
        ("/v1/models/embeddings", None),
        ("/v1/models/gpt-4o", None),
        ("/v1/responses/resp_1", None),
        ("/v1/files", None),
        ("", None),
        ("/", None),
        ("/v1/Chat/Completions", None),
    ];
    for (path, expected) in cases {
        assert_eq!(ApiRoute::from_path(path), expected, "{path}");
    }
    assert_eq!(ChatCompletions.path(), "/chat/completions");
}

#[test]
fn extracts_chat_fields() {
    let req = parse(
        ApiRoute::ChatCompletions,
        r#"{"model":"gpt-4o-mini","stream":true,"max_tokens":50,"max_completion_tokens":100,
            "stream_options":{"include_usage":false},
            "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}},
                     {"type":"function","function":{"name":"no_params"}},
                     {"type":"function","function":{"parameters":{}}}],
            "functions":[{"name":"legacy","parameters":{"type":"object","properties":{}}}],
            "messages":[]}"#,
    );
    assert_eq!(req.model(), Some("gpt-4o-mini"));
    assert!(req.stream());
    assert_eq!(req.stream_options_include_usage(), Some(false));
    assert_eq!(req.max_output_tokens(), Some(100));
    let names: Vec<_> = req.tools().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["get_weather", "no_params", "legacy"]);
    assert_eq!(req.tools()[0].parameters, Some(json!({"type": "object"})));
    assert_eq!(req.tools()[1].parameters, None);
    assert!(!req.is_modified());
}

#[test]
fn extracts_responses_fields() {
    let req = parse(
        ApiRoute::Responses,
        r#"{"model":"gpt-4.1","max_output_tokens":256,"input":"hi",
            "tools":[{"type":"web_search"},{"type":"function","name":"lookup","parameters":{"type":"object"}}]}"#,
    );
    assert_eq!(req.max_output_tokens(), Some(256));
    assert!(!req.stream());
    assert_eq!(req.tools().len(), 1);
    assert_eq!(req.tools()[0].name, "lookup");
}

#[test]
fn odd_field_types_are_ignored() {
    let req = parse(
        ApiRoute::ChatCompletions,
        r#"{"model":7,"stream":"yes","max_tokens":-1,"tools":{"a":1}}"#,
    );
    assert_eq!(req.model(), None);
    assert!(!req.stream());
    assert_eq!(req.max_output_tokens(), None);
    assert!(req.tools().is_empty());
}

#[test]
fn invalid_json_reports_line_and_column() {
    let err = parse_request(ApiRoute::ChatCompletions, b"{\n  \"model\": }").unwrap_err();
    assert_eq!((err.line, err.column), (2, 12));
    assert_eq!(err.message, "expected value");
    assert_eq!(
        err.to_string(),
        "invalid JSON at line 2 column 12: expected value"
    );
    let err = parse_request(ApiRoute::Embeddings, b"").unwrap_err();
    assert_eq!(err.line, 1);
}

#[test]
fn non_object_bodies_are_errors() {
    let err = parse_request(ApiRoute::ChatCompletions, b"\n  [1, 2]").unwrap_err();
    assert_eq!((err.line, err.column), (2, 3));
    assert_eq!(
        err.message,
        "expected an object at the top level, found an array"
    );
    assert!(parse_request(ApiRoute::Models, b"null").is_err());
}

#[test]
fn models_may_have_no_body() {
    let req = parse_request(ApiRoute::Models, b"").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(req.body(), None);
    assert_eq!(req.to_bytes(), Bytes::new());
    assert!(parse_request(ApiRoute::Models, b" \r\n").is_ok());
}

#[test]
fn include_usage_merges_and_keeps_order() {
    let body = r#"{"z_first":1,"model":"m","stream":true,"stream_options":{"foo":"bar"},"messages":[],"unknown":{"b":1,"a":2}}"#;
    let mut req = parse(ApiRoute::ChatCompletions, body);
    assert!(!req.client_requested_usage());
    assert!(req.set_include_usage());
    assert!(req.is_modified());
    assert_eq!(req.stream_options_include_usage(), Some(true));
    assert!(!req.client_requested_usage());
    assert_eq!(
        std::str::from_utf8(&req.to_bytes()).unwrap_or_default(),
        r#"{"z_first":1,"model":"m","stream":true,"stream_options":{"foo":"bar","include_usage":true},"messages":[],"unknown":{"b":1,"a":2}}"#
    );
}

#[test]
fn include_usage_adds_or_replaces_null_options() {
    let mut req = parse(
        ApiRoute::Completions,
        r#"{"stream":true,"stream_options":null}"#,
    );
    assert!(req.set_include_usage());
    assert_eq!(
        req.to_bytes(),
        &br#"{"stream":true,"stream_options":{"include_usage":true}}"#[..]
    );
    let mut req = parse(ApiRoute::ChatCompletions, r#"{"stream":true}"#);
    assert!(req.set_include_usage());
    assert_eq!(
        req.to_bytes(),
        &br#"{"stream":true,"stream_options":{"include_usage":true}}"#[..]
    );
}

#[test]
fn include_usage_leaves_other_requests_alone() {
    let asked = r#"{"stream":true,"stream_options":{"include_usage":true}}"#;
    let mut req = parse(ApiRoute::ChatCompletions, asked);
    assert!(req.client_requested_usage());
    assert!(req.set_include_usage());
    assert!(!req.is_modified());
    for (route, body) in [
        (ApiRoute::ChatCompletions, r#"{"stream":false}"#),
        (ApiRoute::Responses, r#"{"stream":true}"#),
        (
            ApiRoute::ChatCompletions,
            r#"{"stream":true,"stream_options":"odd"}"#,
        ),
    ] {
        let mut req = parse(route, body);
        assert!(!req.set_include_usage(), "{body}");
        assert_eq!(req.to_bytes(), body.as_bytes(), "{body}");
    }
}

#[test]
fn set_model_keeps_position() {
    let mut req = parse(ApiRoute::ChatCompletions, r#"{"a":1,"model":"x","b":2}"#);
    req.set_model("gpt-4o");
    assert_eq!(req.model(), Some("gpt-4o"));
    assert_eq!(req.to_bytes(), &br#"{"a":1,"model":"gpt-4o","b":2}"#[..]);
}

#[test]
fn the_model_is_read_in_place_or_decoded_and_survives_a_raw_rewrite() {
    // A string without escapes is read where it lies; one with escapes is decoded; the
    // last of repeated keys counts; a non-string is no model.
    for (body, model) in [
        (r#"{"model":"gpt-4o-mini","x":1}"#, Some("gpt-4o-mini")),
        (r#"{"model":"a\"b\u00e9","x":1}"#, Some("a\"bé")),
        (r#"{"model":"é ü","x":1}"#, Some("é ü")),
        (r#"{"model":"","x":1}"#, Some("")),
        (r#"{"model":"first","model":"second"}"#, Some("second")),
        (r#"{"model":"first","model":["x"]}"#, None),
        (r#"{"model":7}"#, None),
    ] {
        assert_eq!(
            parse(ApiRoute::ChatCompletions, body).model(),
            model,
            "{body}"
        );
    }
    // A rewrite that moves the model's bytes (as protection's may) keeps its text.
    let mut req = parse(ApiRoute::ChatCompletions, r#"{"a":"xx","model":"m-1"}"#);
    assert!(req.replace_raw(Bytes::from_static(
        br#"{"a":"a much longer text","model":"m-1"}"#
    )));
    assert_eq!(req.model(), Some("m-1"));
    let mut req = parse(
        ApiRoute::ChatCompletions,
        r#"{"a":"a much longer text","model":"m-2"}"#,
    );
    assert!(req.replace_raw(Bytes::from_static(br#"{"a":"","model":"m-2"}"#)));
    assert_eq!(req.model(), Some("m-2"));
}

/// Arbitrary JSON values with short, collision-prone keys.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z é\"\\\\]{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,14}", inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn reserialization_keeps_every_key_in_order(
        fields in prop::collection::vec(("[a-z_]{1,14}", json_value()), 0..8),
        stream in any::<bool>(),
    ) {
        let mut map: Map<String, Value> = fields.into_iter().collect();
        map.insert("stream".into(), Value::Bool(stream));
        let original = serde_json::to_vec(&map).unwrap_or_default();
        let mut req = parse_request(ApiRoute::ChatCompletions, &original)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(req.to_bytes(), &original[..]);
        let changed = req.set_include_usage();
        let again: Value = serde_json::from_slice(&req.to_bytes())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Value::Object(again) = again else {
            return Err(TestCaseError::fail("not an object"));
        };
        let keys: Vec<_> = map.keys().collect();
        prop_assert_eq!(again.keys().take(keys.len()).collect::<Vec<_>>(), keys);
        for (key, value) in &map {
            if key != "stream_options" {
                prop_assert_eq!(again.get(key), Some(value));
            }
        }
        if changed {
            prop_assert_eq!(&again["stream_options"]["include_usage"], &Value::Bool(true));
            if let Some(Value::Object(before)) = map.get("stream_options") {
                for (key, value) in before.iter().filter(|(k, _)| *k != "include_usage") {
                    prop_assert_eq!(again["stream_options"].get(key), Some(value));
                }
            }
        }
    }

    #[test]
    fn any_bytes_parse_or_error_without_panicking(body in prop::collection::vec(any::<u8>(), 0..64)) {
        for route in [ApiRoute::ChatCompletions, ApiRoute::Models] {
            if let Ok(req) = parse_request(route, &body) {
                prop_assert!(parse_request(route, &req.to_bytes()).is_ok());
            }
        }
    }
}

/// model, stream, include_usage, output cap, number of declared tools.
type Fields = (Option<String>, bool, Option<bool>, Option<u64>, usize);

fn fields(req: &ParsedRequest) -> Fields {
    (
        req.model().map(str::to_owned),
        req.stream(),
        req.stream_options_include_usage(),
        req.max_output_tokens(),
        req.tools().len(),
    )
}

/// The fields as a full `Value` parse gives them (what the skim must agree with).
fn fields_of_full_parse(body: &[u8]) -> Option<Fields> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let mut req = ParsedRequest::new(ApiRoute::ChatCompletions, Bytes::new(), None);
    req.fill_from_map(map);
    Some(fields(&req))
}

/// A top-level key: mostly the ones the skim keeps, so that they repeat.
fn top_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("model".to_owned()),
        Just("stream".to_owned()),
        Just("stream_options".to_owned()),
        Just("max_tokens".to_owned()),
        Just("max_completion_tokens".to_owned()),
        Just("max_output_tokens".to_owned()),
        Just("tools".to_owned()),
        Just("functions".to_owned()),
        Just("mod\\u0065l".to_owned()),
        "[a-z_]{1,8}",
    ]
}

/// A value for a top-level key: the types the fields expect, and anything else.
fn top_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z0-9-]{0,8}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        (0u64..5000).prop_map(Value::from),
        Just(json!(-3)),
        Just(json!(2.5)),
        Just(json!({"include_usage": true})),
        Just(json!({"include_usage": false, "x": [1]})),
        Just(json!([{"type": "function", "function": {"name": "f"}}, {"name": "g"}])),
        json_value(),
    ]
}

proptest! {
    /// The one-pass skim reads the same fields as a full parse, with repeated keys (the
    /// last wins), escaped keys and values of every type; both accept the same bodies;
    /// and the map built later is the full parse's.
    #[test]
    fn the_skim_reads_what_the_full_parse_reads(
        entries in prop::collection::vec((top_key(), top_value()), 0..10),
    ) {
        let text = format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| {
                    // `k` may hold a JSON escape already (`mod\u0065l`): write it raw.
                    format!("\"{k}\":{v}")
                })
                .collect::<Vec<_>>()
                .join(",")
        );
        let full = fields_of_full_parse(text.as_bytes());
        let req = parse_request(ApiRoute::ChatCompletions, text.as_bytes());
        prop_assert_eq!(req.is_ok(), full.is_some(), "{}", text);
        // Every body a `Value` takes goes through the skim (not the fallback).
        prop_assert_eq!(skim::Skim::of(text.as_bytes()).is_some(), full.is_some(), "{}", text);
        if let (Ok(req), Some(full)) = (req, full) {
            prop_assert_eq!(fields(&req), full, "{}", text);
            let map: Value = serde_json::from_str(&text).unwrap_or_default();
            prop_assert_eq!(req.body().cloned().map(Value::Object), Some(map));
            prop_assert_eq!(req.to_bytes(), text.as_bytes());
        }
    }
}

#[test]
fn nesting_too_deep_for_a_value_is_refused_by_the_skim_too() {
    let deep = format!("{{\"messages\":{}{}}}", "[".repeat(200), "]".repeat(200));
    assert!(serde_json::from_str::<Value>(&deep).is_err());
    let err = parse_request(ApiRoute::ChatCompletions, deep.as_bytes()).unwrap_err();
    assert!(err.message.contains("recursion limit"), "{err}");
    let fine = format!("{{\"messages\":{}{}}}", "[".repeat(100), "]".repeat(100));
    assert!(parse_request(ApiRoute::ChatCompletions, fine.as_bytes()).is_ok());
}

#[test]
fn errors_name_the_position_as_the_full_parse_does() {
    for (body, expected) in [
        (
            &b"{\"model\": \"a\",}"[..],
            serde_json::from_slice::<Value>(b"{\"model\": \"a\",}"),
        ),
        (
            &b"{\"a\":1} x"[..],
            serde_json::from_slice::<Value>(b"{\"a\":1} x"),
        ),
        (
            &b"{\"a\":1e999}"[..],
            serde_json::from_slice::<Value>(b"{\"a\":1e999}"),
        ),
    ] {
        let err = parse_request(ApiRoute::ChatCompletions, body).unwrap_err();
        assert_eq!(err, RequestJsonError::from(expected.unwrap_err()));
    }
}

proptest! {
    /// A model rewrite on the bytes as read gives the body the map rewrite gives, and
    /// leaves every byte outside the model's value as it was; twice (failover) as well.
    #[test]
    fn a_spliced_model_is_the_map_rewrite(
        entries in prop::collection::vec((top_key(), top_value()), 0..10),
        spaced in any::<bool>(),
        first in "[a-z0-9\"\\\\-]{0,8}",
        second in "[a-zé0-9-]{0,8}",
    ) {
        let sep = if spaced { " ,\n " } else { "," };
        let text = format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("\"{k}\":{}{v}", if spaced { " " } else { "" }))
                .collect::<Vec<_>>()
                .join(sep)
        );
        let Ok(mut raw) = parse_request(ApiRoute::ChatCompletions, text.as_bytes()) else {
            return Ok(());
        };
        let mut tree = parse_request(ApiRoute::ChatCompletions, text.as_bytes()).unwrap();
        tree.body();
        for m in [first.as_str(), second.as_str()] {
            raw.set_model(m);
            tree.set_model(m);
            let raw_v: Value = serde_json::from_slice(&raw.to_bytes()).unwrap();
            let tree_v: Value = serde_json::from_slice(&tree.to_bytes()).unwrap();
            prop_assert_eq!(&raw_v, &tree_v, "{}", text);
            prop_assert_eq!(raw.model(), Some(m));
            prop_assert_eq!(tree.body().cloned().map(Value::Object), Some(tree_v));
        }
        // The map built from the spliced bytes is the rewritten one.
        let spliced = serde_json::from_slice::<Value>(&raw.to_bytes()).unwrap();
        prop_assert_eq!(raw.body().cloned().map(Value::Object), Some(spliced));
        if let Some((start, _)) = skim::Skim::of(text.as_bytes()).and_then(|s| s.model_span) {
            prop_assert!(!raw.is_modified(), "spliced, not rewritten through the map");
            let out = raw.to_bytes();
            let quoted = serde_json::to_string(&second).unwrap();
            prop_assert_eq!(&out[..start], &text.as_bytes()[..start]);
            prop_assert_eq!(&out[start..start + quoted.len()], quoted.as_bytes());
            let old_end = text.len() - (out.len() - start - quoted.len());
            prop_assert_eq!(&out[start + quoted.len()..], &text.as_bytes()[old_end..]);
        }
    }
}

#[test]
fn a_model_is_spliced_only_where_the_bytes_say_it_once() {
    let body =
        br#"{ "model" : "gpt-4o",  "messages":[{"role":"user","content":"hi"}], "n": 1.50 }"#;
    let mut req = parse_request(ApiRoute::ChatCompletions, body).unwrap();
    req.set_model("bench-routed");
    assert_eq!(
        req.to_bytes(),
        &br#"{ "model" : "bench-routed",  "messages":[{"role":"user","content":"hi"}], "n": 1.50 }"#[..]
    );
    assert!(!req.is_modified(), "no map was built or changed");
    // A repeated key goes through the map (the last value wins there).
    let twice = br#"{"model":"a","model":"b","messages":[]}"#;
    let mut req = parse_request(ApiRoute::ChatCompletions, twice).unwrap();
    assert_eq!(req.model(), Some("b"));
    req.set_model("c");
    assert!(req.is_modified());
    assert_eq!(req.to_bytes(), &br#"{"model":"c","messages":[]}"#[..]);
    // No model key: added through the map.
    let mut req = parse_request(ApiRoute::ChatCompletions, br#"{"messages":[]}"#).unwrap();
    req.set_model("m");
    assert_eq!(req.model(), Some("m"));
    assert_eq!(req.body().unwrap()["model"], "m");
}
