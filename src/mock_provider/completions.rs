//! The legacy `POST /v1/completions` (`text_completion`), JSON and streamed: the answer is
//! `echo: <prompt>`, the prompt being a string or an array of strings joined with `\n`.

use std::ops::Range;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chat::include_usage;
use super::handlers::{bad_json, Reply, State};
use super::sse::{data_event, Source, DONE};
use super::wire::{echo, split_words, unix_micros, words, Meta, StreamOptions, Text, Usage};

/// A streamed legacy completion: text deltas, finish chunk, usage chunk if asked, `[DONE]`.
#[derive(Debug)]
pub(crate) struct TextStream {
    meta: Meta,
    text: String,
    pieces: Vec<Range<usize>>,
    usage: Option<Usage>,
}

/// Answers a legacy completion request (`prompt`: a string or an array of strings).
pub(crate) fn completion(state: &State, body: &[u8]) -> Reply {
    let request: CompletionRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return bad_json(&err),
    };
    let prompt = match &request.prompt {
        Some(Value::String(prompt)) => prompt.clone(),
        Some(Value::Array(prompts)) => {
            let texts: Vec<&str> = prompts.iter().filter_map(Value::as_str).collect();
            texts.join("\n")
        }
        _ => String::new(),
    };
    let text = echo(&prompt);
    let usage = Usage::new(words(&prompt), words(&text));
    let model = request.model.as_ref().map_or("mock-model", |m| &m.0);
    let meta = state.meta("cmpl-mock", model);
    if request.stream == Some(true) {
        let usage = include_usage(request.stream_options.as_ref()).then_some(usage);
        let pieces = split_words(&text);
        return Reply::Stream(Source::Text(TextStream {
            meta,
            text,
            pieces,
            usage,
        }));
    }
    let choices = [TextChoice {
        text: &text,
        index: 0,
        logprobs: None,
        finish_reason: Some("stop"),
    }];
    Reply::json(&TextChunk::new(&meta, &choices, Some(Some(usage)), None))
}

// === impl TextStream ===

impl TextStream {
    /// Content events: the ones `cut_after` and `end_early_after` count.
    pub(crate) fn content(&self) -> usize {
        self.pieces.len()
    }

    /// Events in the complete stream.
    pub(crate) fn len(&self) -> usize {
        self.content() + 2 + usize::from(self.usage.is_some())
    }

    /// Writes event `index`, stamped with the current `mock_ts_us`.
    pub(crate) fn event(&self, index: usize) -> Result<Bytes, serde_json::Error> {
        let content = self.content();
        let usage_field = self.usage.map(|_| None);
        let (text, finish_reason) = match index {
            i if i < content => (&self.text[self.pieces[i].clone()], None),
            i if i == content => ("", Some("stop")),
            i => {
                return match self.usage {
                    Some(usage) if i == content + 1 => {
                        data_event(&TextChunk::new(&self.meta, &[], Some(Some(usage)), ts()))
                    }
                    _ => Ok(DONE),
                };
            }
        };
        let choices = [TextChoice {
            text,
            index: 0,
            logprobs: None,
            finish_reason,
        }];
        data_event(&TextChunk::new(&self.meta, &choices, usage_field, ts()))
    }
}

fn ts() -> Option<u64> {
    Some(unix_micros())
}

// === wire types ===

#[derive(Deserialize)]
struct CompletionRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Text<'a>>,
    #[serde(default)]
    prompt: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct TextChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'a str,
    choices: &'a [TextChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mock_ts_us: Option<u64>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

impl<'a> TextChunk<'a> {
    fn new(
        meta: &'a Meta,
        choices: &'a [TextChoice<'a>],
        usage: Option<Option<Usage>>,
        mock_ts_us: Option<u64>,
    ) -> Self {
        Self {
            id: &meta.id,
            object: "text_completion",
            created: meta.created,
            model: &meta.model,
            system_fingerprint: &meta.fingerprint,
            choices,
            usage,
            mock_ts_us,
        }
    }
}
