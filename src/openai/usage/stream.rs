//! Terminal-event detection: has a stream really finished, or was it cut?

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use crate::openai::request::ApiRoute;
use crate::openai::sse::DONE;

/// Watches the data payloads of one stream and knows when it is complete.
///
/// Chat and text completions are complete once `[DONE]` arrived or every choice index
/// seen so far has a `finish_reason`; the responses API once a `response.completed`,
/// `response.failed` or `response.incomplete` event arrived. A stream whose body ends
/// before that was cut, and the proxy tells the client so.
#[derive(Clone, Debug)]
pub struct StreamTracker {
    responses_api: bool,
    /// Choice index → whether it has a `finish_reason` (a map, so a hostile stream with
    /// many indexes costs log time per chunk, not linear).
    choices: BTreeMap<u64, bool>,
    unfinished: usize,
    done: bool,
    terminal: bool,
    saw_error: bool,
}

/// The fields of a chunk or event that matter here; everything else is skipped unparsed.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    choices: Option<Vec<ChoiceProbe>>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ChoiceProbe {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

// === impl StreamTracker ===

impl StreamTracker {
    /// A tracker for a stream of `route` (the responses API has its own terminal events;
    /// every other route is treated as completions-shaped).
    pub fn new(route: ApiRoute) -> Self {
        Self {
            responses_api: route == ApiRoute::Responses,
            choices: BTreeMap::new(),
            unfinished: 0,
            done: false,
            terminal: false,
            saw_error: false,
        }
    }

    /// Observes one data payload (the text after `data:`). Payloads that are not JSON are
    /// ignored, apart from `[DONE]`.
    pub fn observe(&mut self, data: &str) {
        if data == DONE {
            self.done = true;
            return;
        }
        let Ok(probe) = serde_json::from_str::<Probe<'_>>(data) else {
            return;
        };
        let choices = probe.choices.unwrap_or_default().into_iter();
        let choices = choices.map(|c| (c.index, c.finish_reason.is_some()));
        self.record(probe.kind.as_deref(), probe.error.is_some(), choices);
    }

    /// Observes a payload already parsed into a `Value` (same rules as
    /// [`StreamTracker::observe`]).
    pub fn observe_value(&mut self, json: &Value) {
        let choices = json["choices"].as_array().into_iter().flatten();
        let choices = choices.map(|c| (c["index"].as_u64(), !c["finish_reason"].is_null()));
        let has_error = !json["error"].is_null();
        self.record(json["type"].as_str(), has_error, choices);
    }

    /// Whether the stream reached its terminal event.
    pub fn is_complete(&self) -> bool {
        if self.responses_api {
            self.terminal
        } else {
            self.done || (!self.choices.is_empty() && self.unfinished == 0)
        }
    }

    /// Whether the upstream sent an error inside the stream (`{"error":…}` or a
    /// responses-API `error` event); the client has then already been told, so an end
    /// without a terminal event needs no second error.
    pub fn saw_error(&self) -> bool {
        self.saw_error
    }

    fn record(
        &mut self,
        kind: Option<&str>,
        has_error: bool,
        choices: impl Iterator<Item = (Option<u64>, bool)>,
    ) {
        self.saw_error |= has_error || kind == Some("error");
        if self.responses_api {
            let terminal = [
                "response.completed",
                "response.failed",
                "response.incomplete",
            ];
            self.terminal |= kind.is_some_and(|k| terminal.contains(&k));
            return;
        }
        for (position, (index, finished)) in choices.enumerate() {
            // A choice without an index is numbered by its position in the chunk.
            let index = index.unwrap_or(position as u64);
            let entry = self.choices.entry(index).or_insert_with(|| {
                self.unfinished += 1;
                false
            });
            if finished && !*entry {
                *entry = true;
                self.unfinished -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn feed(route: ApiRoute, payloads: &[&str]) -> StreamTracker {
        let mut by_text = StreamTracker::new(route);
        let mut by_value = StreamTracker::new(route);
        for payload in payloads {
            by_text.observe(payload);
            match serde_json::from_str::<Value>(payload) {
                Ok(value) => by_value.observe_value(&value),
                Err(_) => by_value.observe(payload),
            }
        }
        assert_eq!(
            by_text.is_complete(),
            by_value.is_complete(),
            "{payloads:?}"
        );
        assert_eq!(by_text.saw_error(), by_value.saw_error(), "{payloads:?}");
        by_text
    }

    const DELTA0: &str =
        r#"{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#;
    const STOP0: &str = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
    const DELTA1: &str =
        r#"{"choices":[{"index":1,"delta":{"content":"yo"},"finish_reason":null}]}"#;
    const STOP1: &str = r#"{"choices":[{"index":1,"delta":{},"finish_reason":"length"}]}"#;

    #[test]
    fn chat_completes_on_finish_reasons() {
        let chat = ApiRoute::ChatCompletions;
        assert!(!feed(chat, &[]).is_complete());
        assert!(!feed(chat, &[DELTA0]).is_complete());
        assert!(feed(chat, &[DELTA0, STOP0]).is_complete());
        assert!(!feed(chat, &[DELTA0, DELTA1, STOP0]).is_complete());
        assert!(feed(chat, &[DELTA0, DELTA1, STOP1, STOP0]).is_complete());
        // The usage-only chunk after the finish changes nothing.
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":1}}"#;
        assert!(feed(chat, &[DELTA0, STOP0, usage]).is_complete());
        assert!(!feed(chat, &[usage]).is_complete());
    }

    #[test]
    fn chat_completes_on_done() {
        assert!(feed(ApiRoute::ChatCompletions, &[DELTA0, DONE]).is_complete());
        assert!(feed(ApiRoute::Completions, &[DONE]).is_complete());
        assert!(!feed(ApiRoute::ChatCompletions, &["not json", "{}"]).is_complete());
    }

    #[test]
    fn responses_complete_on_terminal_events() {
        let route = ApiRoute::Responses;
        let created = r#"{"type":"response.created","response":{}}"#;
        let delta = r#"{"type":"response.output_text.delta","delta":"x"}"#;
        assert!(!feed(route, &[created, delta]).is_complete());
        assert!(!feed(route, &[created, DONE]).is_complete());
        for terminal in [
            "response.completed",
            "response.failed",
            "response.incomplete",
        ] {
            let event = json!({"type": terminal, "response": {"usage": null}}).to_string();
            assert!(feed(route, &[created, &event]).is_complete(), "{terminal}");
        }
    }

    #[test]
    fn upstream_errors_are_noticed() {
        let chat_error = r#"{"error":{"message":"overloaded","type":"overloaded_error"}}"#;
        let tracker = feed(ApiRoute::ChatCompletions, &[DELTA0, chat_error]);
        assert!(tracker.saw_error());
        assert!(!tracker.is_complete());
        let responses_error = r#"{"type":"error","code":"server_error","message":"x"}"#;
        assert!(feed(ApiRoute::Responses, &[responses_error]).saw_error());
        assert!(!feed(ApiRoute::ChatCompletions, &[DELTA0, STOP0]).saw_error());
    }
}
