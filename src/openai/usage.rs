//! Usage, cost and stream completion: what a response consumed and whether it finished.
//!
//! - [`extract_usage`] reads the `usage` of a chat, completions, embeddings or responses
//!   body, of the final usage chunk of a stream, or of a `response.completed` event.
//! - [`cost`] turns token and character counts into money under a [`Price`].
//! - [`StreamTracker`] watches a stream's data payloads for its terminal event, so a
//!   stream that ends without one is reported as cut.

mod price;
mod stream;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::sparse::{is_object, sparse_struct, Field};

pub use price::{cost, Price, Tier};
pub use stream::StreamTracker;

/// Token counts of one response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub prompt_tokens: u64,
    /// Completion (output) tokens; 0 for embeddings.
    pub completion_tokens: u64,
    /// As reported, else prompt + completion.
    pub total_tokens: u64,
    /// Prompt tokens served from the provider's cache, when reported.
    pub cached_tokens: Option<u64>,
    /// Completion tokens spent on reasoning, when reported.
    pub reasoning_tokens: Option<u64>,
}

/// Extracts the usage of a response body, a stream chunk or a responses-API event.
///
/// Looks at `usage` (chat, completions, embeddings, responses bodies and the final usage
/// chunk of a stream), then `response.usage` (`response.completed`, `response.incomplete`
/// and `response.failed` events), then Groq's `x_groq.usage`. Understands both the chat
/// names (`prompt_tokens`, `completion_tokens`, `prompt_tokens_details.cached_tokens`,
/// `completion_tokens_details.reasoning_tokens`) and the responses-API names
/// (`input_tokens`, `output_tokens`, `input_tokens_details`, `output_tokens_details`).
/// `None` when there is no usage object with a prompt or input count (`"usage": null` on
/// ordinary stream chunks included).
pub fn extract_usage(json: &Value) -> Option<Usage> {
    let usage = [
        &json["usage"],
        &json["response"]["usage"],
        &json["x_groq"]["usage"],
    ]
    .into_iter()
    .find(|u| u.is_object())?;
    usage_object(usage)
}

/// [`extract_usage`] straight from a JSON body, without building the document: the
/// envelope and the usage object are read as borrowed slices of `body`, every other field
/// is skipped as it is read, and nothing is allocated for a well-formed answer. Bodies the
/// skimming pass cannot take (a repeated key it reads, bytes that are not JSON) are parsed
/// whole, so the answer is always the same as [`extract_usage`]'s.
pub fn extract_usage_from_slice(body: &[u8]) -> Option<Usage> {
    sparse_struct!(Nested { usage });
    sparse_struct!(
        /// Where providers put usage: `usage`, `response.usage`, `x_groq.usage`.
        Envelope { usage, response, x_groq }
    );
    let whole = || {
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| extract_usage(&v))
    };
    let Ok(e) = serde_json::from_slice::<Envelope<'_>>(body) else {
        return whole();
    };
    /// `response.usage`, `x_groq.usage`: nothing when the holder is not an object;
    /// `None` when a repeated key sends the body to the whole parse.
    fn nested(holder: Field<'_>) -> Option<Field<'_>> {
        match holder.filter(|h| is_object(h)) {
            None => Some(None),
            Some(h) => serde_json::from_str::<Nested<'_>>(h.get())
                .ok()
                .map(|n| n.usage),
        }
    }
    let (Some(response), Some(x_groq)) = (nested(e.response), nested(e.x_groq)) else {
        return whole();
    };
    let usage = [e.usage, response, x_groq]
        .into_iter()
        .flatten()
        .find(|u| is_object(u))?;
    usage_fields(usage).unwrap_or_else(|| {
        serde_json::from_str::<Value>(usage.get())
            .ok()
            .and_then(|u| usage_object(&u))
    })
}

/// [`usage_object`] over the raw text of a usage object, reading only the fields it
/// needs. `None` when this pass cannot take the object (a repeated key), so the caller
/// parses it whole.
fn usage_fields(usage: &RawValue) -> Option<Option<Usage>> {
    sparse_struct!(Fields {
        prompt_tokens,
        input_tokens,
        completion_tokens,
        output_tokens,
        total_tokens,
        prompt_tokens_details,
        input_tokens_details,
        completion_tokens_details,
        output_tokens_details,
    });
    sparse_struct!(Details {
        cached_tokens,
        reasoning_tokens
    });
    let f: Fields<'_> = serde_json::from_str(usage.get()).ok()?;
    // `usage[key][field]` for the first of two keys that holds a count; a details value
    // that is not an object holds none.
    let detail =
        |holder: Option<&RawValue>, pick: fn(Details<'_>) -> Option<&RawValue>| match holder
            .filter(|h| is_object(h))
        {
            None => Some(None),
            Some(h) => serde_json::from_str(h.get())
                .ok()
                .map(|d| pick(d).and_then(count_raw)),
        };
    let cached = detail(f.prompt_tokens_details, |d| d.cached_tokens)?
        .or(detail(f.input_tokens_details, |d| d.cached_tokens)?);
    let reasoning = detail(f.completion_tokens_details, |d| d.reasoning_tokens)?
        .or(detail(f.output_tokens_details, |d| d.reasoning_tokens)?);
    let first =
        |a: Field<'_>, b: Field<'_>| a.and_then(count_raw).or_else(|| b.and_then(count_raw));
    let Some(prompt_tokens) = first(f.prompt_tokens, f.input_tokens) else {
        return Some(None);
    };
    let completion_tokens = first(f.completion_tokens, f.output_tokens).unwrap_or(0);
    Some(Some(Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: f
            .total_tokens
            .and_then(count_raw)
            .unwrap_or_else(|| prompt_tokens.saturating_add(completion_tokens)),
        cached_tokens: cached,
        reasoning_tokens: reasoning,
    }))
}

/// [`count`] of raw JSON text.
fn count_raw(raw: &RawValue) -> Option<u64> {
    serde_json::from_str::<Value>(raw.get())
        .ok()
        .and_then(|v| count(&v))
}

fn usage_object(usage: &Value) -> Option<Usage> {
    let first = |keys: [&str; 2]| keys.into_iter().find_map(|key| count(&usage[key]));
    let prompt_tokens = first(["prompt_tokens", "input_tokens"])?;
    let completion_tokens = first(["completion_tokens", "output_tokens"]).unwrap_or(0);
    let detail =
        |keys: [&str; 2], field: &str| keys.into_iter().find_map(|key| count(&usage[key][field]));
    Some(Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: count(&usage["total_tokens"])
            .unwrap_or_else(|| prompt_tokens.saturating_add(completion_tokens)),
        cached_tokens: detail(
            ["prompt_tokens_details", "input_tokens_details"],
            "cached_tokens",
        ),
        reasoning_tokens: detail(
            ["completion_tokens_details", "output_tokens_details"],
            "reasoning_tokens",
        ),
    })
}

/// Whether a stream chunk is the usage-only chunk that `include_usage` adds: `choices`
/// is an empty array and `usage` is an object. The proxy drops it when it asked for usage
/// on the client's behalf.
pub fn is_usage_only_chunk(json: &Value) -> bool {
    json["choices"].as_array().is_some_and(Vec::is_empty) && json["usage"].is_object()
}

/// A token count: a non-negative integer (an integral float such as `12.0` is accepted).
fn count(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        let float = value.as_f64()?;
        // Exact for every integral float below 2^53, which covers any real token count.
        (float >= 0.0 && float.fract() == 0.0 && float < 9.0e15).then_some(float as u64)
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn chat_completion_usage() {
        let body = json!({"choices": [], "usage": {
            "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 3}}});
        let usage = extract_usage(&body);
        assert_eq!(
            usage,
            Some(Usage {
                prompt_tokens: 19,
                completion_tokens: 10,
                total_tokens: 29,
                cached_tokens: Some(4),
                reasoning_tokens: Some(3),
            })
        );
    }

    #[test]
    fn embeddings_usage_has_no_completion() {
        let body =
            json!({"object": "list", "data": [], "usage": {"prompt_tokens": 8, "total_tokens": 8}});
        let usage = extract_usage(&body).unwrap_or_default();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (8, 0, 8)
        );
        assert_eq!(usage.cached_tokens, None);
    }

    #[test]
    fn responses_api_usage() {
        let usage = json!({"input_tokens": 36, "output_tokens": 87, "total_tokens": 123,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 64}});
        let body = json!({"object": "response", "usage": usage});
        let event = json!({"type": "response.completed", "response": {"usage": usage}});
        for json in [body, event] {
            let got = extract_usage(&json).unwrap_or_default();
            assert_eq!(got.prompt_tokens, 36);
            assert_eq!(got.completion_tokens, 87);
            assert_eq!(got.total_tokens, 123);
            assert_eq!(got.cached_tokens, Some(0));
            assert_eq!(got.reasoning_tokens, Some(64));
        }
    }

    #[test]
    fn missing_or_null_usage() {
        assert_eq!(
            extract_usage(&json!({"choices": [{"delta": {}}], "usage": null})),
            None
        );
        assert_eq!(extract_usage(&json!({"usage": {}})), None);
        assert_eq!(extract_usage(&json!([1])), None);
        let no_total = json!({"usage": {"prompt_tokens": 2.0, "completion_tokens": 3}});
        assert_eq!(extract_usage(&no_total).map(|u| u.total_tokens), Some(5));
        let groq = json!({"choices": [], "x_groq": {"usage": {"prompt_tokens": 1, "completion_tokens": 1}}});
        assert_eq!(extract_usage(&groq).map(|u| u.total_tokens), Some(2));
    }

    /// Every key `usage_object` reads.
    const USAGE_KEYS: [&str; 9] = [
        "prompt_tokens",
        "input_tokens",
        "completion_tokens",
        "output_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "input_tokens_details",
        "completion_tokens_details",
        "output_tokens_details",
    ];

    /// Usage objects in the places providers put them, among arbitrary other fields.
    fn body_with_usage() -> impl Strategy<Value = Value> {
        let count = prop_oneof![
            (0u64..1_000_000).prop_map(Value::from),
            Just(json!(12.0)),
            Just(json!(-1)),
            Just(json!("7")),
            Just(Value::Null),
        ];
        let details = prop_oneof![
            count.clone().prop_map(|c| json!({ "cached_tokens": c })),
            count
                .clone()
                .prop_map(|c| json!({ "reasoning_tokens": c, "audio_tokens": 1 })),
        ];
        let usage = prop::collection::vec(
            (
                prop::sample::select([&USAGE_KEYS[..], &["x"]].concat()),
                prop_oneof![3 => count, 1 => details],
            ),
            0..7,
        )
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
        let slot = prop_oneof![
            usage,
            Just(Value::Null),
            Just(json!("usage")),
            Just(json!([]))
        ];
        (
            prop::sample::select(vec!["usage", "response", "x_groq", "choices", "id"]),
            slot,
            any::<bool>(),
            "[a-z]{0,8}",
        )
            .prop_map(|(place, u, nested, filler)| {
                let inner = if nested && place != "usage" {
                    json!({ "usage": u, "id": filler })
                } else {
                    u
                };
                json!({ "id": filler, "object": "x", place: inner, "choices": [{"message": {"content": "hi"}}] })
            })
    }

    proptest! {
        #[test]
        fn skimming_reads_the_same_usage_as_the_whole_document(body in body_with_usage()) {
            let raw = serde_json::to_vec(&body).unwrap_or_default();
            prop_assert_eq!(extract_usage_from_slice(&raw), extract_usage(&body));
        }
    }

    /// Raw usage text with odd spacing and, for some, a repeated key (which no `Value`
    /// serializes to): each listed key at most once, then maybe one key again.
    fn raw_usage_text() -> impl Strategy<Value = String> {
        let keys = USAGE_KEYS.to_vec();
        let value = prop::sample::select(vec![
            "1",
            "12.0",
            "-1",
            "\"7\"",
            "null",
            "{\"cached_tokens\":3}",
            "{\"cached_tokens\":3,\"cached_tokens\":4}",
            "{ \"reasoning_tokens\" : 2 }",
            "{\"reasoning_tokens\":5,\"cached_tokens\":6}",
        ]);
        let fields = prop::sample::subsequence(keys, 0..=9)
            .prop_shuffle()
            .prop_flat_map(move |ks| {
                let n = ks.len();
                (Just(ks), prop::collection::vec(value.clone(), n..=n))
            });
        (
            fields,
            any::<bool>(),
            any::<prop::sample::Index>(),
            any::<bool>(),
        )
            .prop_map(|((ks, vs), repeat, which, spaced)| {
                let sep = if spaced { " \n " } else { "" };
                let mut kv: Vec<(&str, &str)> = ks.into_iter().zip(vs).collect();
                if repeat && !kv.is_empty() {
                    let (k, v) = kv[which.index(kv.len())];
                    kv.push((k, if v == "1" { "2" } else { "1" }));
                }
                let fields: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{sep}\"{k}\"{sep}:{sep}{v}"))
                    .collect();
                format!("{{\"id\":\"x\",\"usage\":{sep}{{{}}}}}", fields.join(","))
            })
    }

    proptest! {
        #[test]
        fn skimming_agrees_on_repeated_keys_and_spacing(text in raw_usage_text()) {
            let whole: Value = serde_json::from_str(&text).unwrap_or_default();
            prop_assert_eq!(extract_usage_from_slice(text.as_bytes()), extract_usage(&whole), "{}", text);
        }
    }

    #[test]
    fn skimming_odd_bodies() {
        for dup in [
            &br#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}"#[..],
            br#"{"response":{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}}"#,
            br#"{"x_groq":{"usage":null},"x_groq":{"usage":{"prompt_tokens":5}}}"#,
        ] {
            let whole: Value = serde_json::from_slice(dup).unwrap_or_default();
            assert!(extract_usage(&whole).is_some());
            assert_eq!(extract_usage_from_slice(dup), extract_usage(&whole));
        }
        assert_eq!(
            extract_usage_from_slice(br#"{"response":"text","usage":{"prompt_tokens":3}}"#)
                .map(|u| u.prompt_tokens),
            Some(3)
        );
        assert_eq!(extract_usage_from_slice(b"[1,2]"), None);
        assert_eq!(extract_usage_from_slice(b"{\"usage\": {\"prompt"), None);
    }

    #[test]
    fn usage_only_chunks() {
        let chunk = json!({"object": "chat.completion.chunk", "choices": [],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
        assert!(is_usage_only_chunk(&chunk));
        let content = json!({"choices": [{"index": 0, "delta": {"content": "x"}}], "usage": null});
        assert!(!is_usage_only_chunk(&content));
        assert!(!is_usage_only_chunk(&json!({"choices": [], "usage": null})));
    }
}
