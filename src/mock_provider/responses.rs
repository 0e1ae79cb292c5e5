//! A minimal `POST /v1/responses`: a `response` object with one output message whose text is
//! `echo: <last user input>`, or, streamed, the events `response.created`,
//! `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`
//! (one per word), `response.output_text.done`, `response.content_part.done`,
//! `response.output_item.done` and `response.completed`. No `[DONE]`: the Responses API has
//! none.

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::handlers::{bad_json, Reply, State};
use super::sse::{named_event, Source};
use super::wire::{echo, split_words, unix_micros, words, Content, Meta, Text};

/// A streamed response.
#[derive(Debug)]
pub(crate) struct ResponsesStream {
    meta: Meta,
    item_id: String,
    text: String,
    pieces: Vec<Range<usize>>,
    usage: ResponseUsage,
}

/// Answers a Responses API request (`input`: a string or a list of message items).
pub(crate) fn responses(state: &State, body: &[u8]) -> Reply {
    let request: ResponsesRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return bad_json(&err),
    };
    let instructions = request
        .instructions
        .as_ref()
        .map_or(0, |text| words(&text.0));
    let (prompt, input_tokens) = match &request.input {
        None => (Cow::Borrowed(""), instructions),
        Some(Input::Text(text)) => (
            Cow::Borrowed(text.0.as_ref()),
            instructions + words(&text.0),
        ),
        Some(Input::Items(items)) => {
            let tokens: u64 = (items.iter().filter_map(|item| item.content.as_ref()))
                .map(Content::words)
                .sum();
            let last_user = (items.iter())
                .rfind(|item| item.role.as_ref().is_some_and(|role| role.0 == "user"))
                .and_then(|item| item.content.as_ref())
                .map(Content::text)
                .unwrap_or_default();
            (last_user, instructions + tokens)
        }
    };
    let text = echo(&prompt);
    let usage = ResponseUsage {
        input_tokens,
        output_tokens: words(&text),
        total_tokens: input_tokens + words(&text),
    };
    let model = request.model.as_ref().map_or("mock-model", |m| &m.0);
    let meta = state.meta("resp_mock", model);
    let item_id = format!("msg_mock{}", meta.serial);
    let stream = ResponsesStream {
        pieces: split_words(&text),
        meta,
        item_id,
        text,
        usage,
    };
    if request.stream == Some(true) {
        return Reply::Stream(Source::Responses(stream));
    }
    let content = [stream.output_text(&stream.text)];
    let output = [stream.item("completed", &content)];
    Reply::json(&stream.response("completed", &output, Some(usage)))
}

// === impl ResponsesStream ===

/// Events after the deltas: text done, part done, item done, completed.
const TRAILER: usize = 4;

impl ResponsesStream {
    /// Events before the first content event (see `sse::Source::prelude`).
    pub(crate) fn prelude(&self) -> usize {
        3
    }

    /// Content events: the ones `cut_after` and `end_early_after` count.
    pub(crate) fn content(&self) -> usize {
        self.pieces.len()
    }

    /// Events in the complete stream.
    pub(crate) fn len(&self) -> usize {
        self.prelude() + self.content() + TRAILER
    }

    /// Writes event `index`, stamped with the current `mock_ts_us`.
    pub(crate) fn event(&self, index: usize) -> Result<Bytes, serde_json::Error> {
        let deltas_end = self.prelude() + self.content();
        let full = [self.output_text(&self.text)];
        let output = [self.item("completed", &full)];
        let base = |kind: &'static str| Event {
            kind,
            sequence_number: index,
            response: None,
            item_id: None,
            output_index: None,
            content_index: None,
            item: None,
            part: None,
            delta: None,
            text: None,
            mock_ts_us: unix_micros(),
        };
        // Events about the message item carry its index; events about its text also its id.
        let in_item = |kind| Event {
            output_index: Some(0),
            ..base(kind)
        };
        let in_text = |kind| Event {
            item_id: Some(&self.item_id),
            content_index: Some(0),
            ..in_item(kind)
        };
        let event = match index {
            0 => Event {
                response: Some(self.response("in_progress", &[], None)),
                ..base("response.created")
            },
            1 => Event {
                item: Some(self.item("in_progress", &[])),
                ..in_item("response.output_item.added")
            },
            2 => Event {
                part: Some(self.output_text("")),
                ..in_text("response.content_part.added")
            },
            i if i < deltas_end => Event {
                delta: Some(&self.text[self.pieces[i - self.prelude()].clone()]),
                ..in_text("response.output_text.delta")
            },
            i if i == deltas_end => Event {
                text: Some(&self.text),
                ..in_text("response.output_text.done")
            },
            i if i == deltas_end + 1 => Event {
                part: Some(self.output_text(&self.text)),
                ..in_text("response.content_part.done")
            },
            i if i == deltas_end + 2 => Event {
                item: Some(self.item("completed", &full)),
                ..in_item("response.output_item.done")
            },
            _ => Event {
                response: Some(self.response("completed", &output, Some(self.usage))),
                ..base("response.completed")
            },
        };
        named_event(event.kind, &event)
    }

    fn response<'a>(
        &'a self,
        status: &'static str,
        output: &'a [OutputItem<'a>],
        usage: Option<ResponseUsage>,
    ) -> ResponseObject<'a> {
        ResponseObject {
            id: &self.meta.id,
            object: "response",
            created_at: self.meta.created,
            status,
            model: &self.meta.model,
            output,
            usage,
            error: None,
            incomplete_details: None,
        }
    }

    fn item<'a>(&'a self, status: &'static str, content: &'a [OutputText<'a>]) -> OutputItem<'a> {
        OutputItem {
            kind: "message",
            id: &self.item_id,
            status,
            role: "assistant",
            content,
        }
    }

    fn output_text<'a>(&self, text: &'a str) -> OutputText<'a> {
        OutputText {
            kind: "output_text",
            text,
            annotations: [],
        }
    }
}

// === wire types ===

#[derive(Deserialize)]
struct ResponsesRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Text<'a>>,
    #[serde(borrow, default)]
    input: Option<Input<'a>>,
    #[serde(borrow, default)]
    instructions: Option<Text<'a>>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input<'a> {
    Text(#[serde(borrow)] Text<'a>),
    Items(#[serde(borrow)] Vec<InputItem<'a>>),
}

#[derive(Deserialize)]
struct InputItem<'a> {
    #[serde(borrow, default)]
    role: Option<Text<'a>>,
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct ResponseUsage {
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct ResponseObject<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    model: &'a str,
    output: &'a [OutputItem<'a>],
    usage: Option<ResponseUsage>,
    error: Option<()>,
    incomplete_details: Option<()>,
}

#[derive(Serialize)]
struct OutputItem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    status: &'static str,
    role: &'static str,
    content: &'a [OutputText<'a>],
}

#[derive(Serialize)]
struct OutputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
}

#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ResponseObject<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<OutputItem<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    part: Option<OutputText<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    mock_ts_us: u64,
}
