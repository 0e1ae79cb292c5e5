//! `POST /v1/chat/completions`, JSON and streamed.
//!
//! The answer is `echo: <text of the last user message>`. When the request declares `tools`
//! and that message contains `call <name> <arguments>`, the answer is instead a call of tool
//! `<name>` with exactly `<arguments>` (`{}` when empty), so tests can produce valid and invalid
//! tool calls at will. After a `tool` message, the answer echoes the tool's result.

use std::ops::Range;

use bytes::Bytes;
use serde::Serialize;

use super::handlers::{bad_json, Reply, State};
use super::sse::{data_event, Source, DONE};
use super::wire::{
    echo, split_bytes, split_words, unix_micros, words, ChatMessage, ChatRequest, Content, Meta,
    StreamOptions, Usage,
};

/// Bytes of tool-call arguments per streamed delta: small, so arguments always span several.
const ARGUMENTS_PIECE: usize = 8;

/// What the assistant says.
#[derive(Debug)]
pub(crate) enum Answer {
    Text(String),
    Tool { name: String, arguments: String },
}

/// A streamed chat completion: role chunk, content (or tool-call) deltas, finish chunk, usage
/// chunk when `stream_options.include_usage`, `[DONE]`.
#[derive(Debug)]
pub(crate) struct ChatStream {
    meta: Meta,
    answer: Answer,
    call_id: String,
    pieces: Vec<Range<usize>>,
    usage: Option<Usage>,
}

/// Answers a chat completion request.
pub(crate) fn chat(state: &State, body: &[u8]) -> Reply {
    let request: ChatRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return bad_json(&err),
    };
    let prompt_tokens = (request.messages.iter())
        .filter_map(|message| message.content.as_ref())
        .map(Content::words)
        .sum();
    let answer = answer(&request);
    let usage = Usage::new(prompt_tokens, answer.words());
    let model = request.model.as_ref().map_or("mock-model", |m| &m.0);
    let meta = state.meta("chatcmpl-mock", model);
    let call_id = match answer {
        Answer::Tool { .. } => format!("call_mock{}", meta.serial),
        Answer::Text(_) => String::new(),
    };
    if request.stream == Some(true) {
        let usage = include_usage(request.stream_options.as_ref()).then_some(usage);
        return Reply::Stream(Source::Chat(ChatStream::new(meta, answer, call_id, usage)));
    }
    let (content, tool_calls, finish_reason) = match &answer {
        Answer::Text(text) => (Some(text.as_str()), None, "stop"),
        Answer::Tool { name, arguments } => {
            let function = Function { name, arguments };
            let call = ToolCall {
                id: &call_id,
                kind: "function",
                function,
            };
            (None, Some([call]), "tool_calls")
        }
    };
    let completion = ChatCompletion {
        id: &meta.id,
        object: "chat.completion",
        created: meta.created,
        model: &meta.model,
        choices: [Choice {
            index: 0,
            message: Message {
                role: "assistant",
                content,
                refusal: None,
                tool_calls,
            },
            logprobs: None,
            finish_reason,
        }],
        usage,
        system_fingerprint: &meta.fingerprint,
    };
    Reply::json(&completion)
}

/// Whether `stream_options.include_usage` is on.
pub(crate) fn include_usage(options: Option<&StreamOptions>) -> bool {
    options.and_then(|o| o.include_usage).unwrap_or(false)
}

/// The deterministic answer (see the module docs).
fn answer(request: &ChatRequest<'_>) -> Answer {
    let has_role =
        |message: &ChatMessage<'_>, role: &str| message.role.as_ref().is_some_and(|r| r.0 == role);
    let text_of = |message: &ChatMessage<'_>| {
        (message.content.as_ref()).map_or(String::new(), |c| c.text().into_owned())
    };
    if let Some(last) = request.messages.last().filter(|m| has_role(m, "tool")) {
        return Answer::Text(echo(&text_of(last)));
    }
    let Some(user) = (request.messages.iter()).rfind(|m| has_role(m, "user")) else {
        return Answer::Text(echo(""));
    };
    let text = user.content.as_ref().map(Content::text).unwrap_or_default();
    let declares_tools = request
        .tools
        .as_ref()
        .is_some_and(|tools| !tools.is_empty());
    match declares_tools.then(|| parse_call(&text)).flatten() {
        Some((name, arguments)) => Answer::Tool {
            name: name.to_owned(),
            arguments: arguments.to_owned(),
        },
        None => Answer::Text(echo(&text)),
    }
}

/// Finds `call <name> <arguments>` (with `call` at the start or after whitespace).
fn parse_call(text: &str) -> Option<(&str, &str)> {
    let mut from = 0;
    while let Some(found) = text[from..].find("call ") {
        let at = from + found;
        from = at + "call ".len();
        if at > 0 && !text[..at].ends_with(char::is_whitespace) {
            continue;
        }
        let rest = text[from..].trim_start();
        let name_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if name_end == 0 {
            continue;
        }
        let arguments = rest[name_end..].trim();
        let arguments = if arguments.is_empty() {
            "{}"
        } else {
            arguments
        };
        return Some((&rest[..name_end], arguments));
    }
    None
}

// === impl Answer ===

impl Answer {
    /// Completion tokens: words of the text, or of the tool name and arguments.
    fn words(&self) -> u64 {
        match self {
            Answer::Text(text) => words(text),
            Answer::Tool { name, arguments } => words(name) + words(arguments),
        }
    }
}

// === impl ChatStream ===

impl ChatStream {
    fn new(meta: Meta, answer: Answer, call_id: String, usage: Option<Usage>) -> Self {
        let pieces = match &answer {
            Answer::Text(text) => split_words(text),
            Answer::Tool { arguments, .. } => split_bytes(arguments, ARGUMENTS_PIECE),
        };
        Self {
            meta,
            answer,
            call_id,
            pieces,
            usage,
        }
    }

    /// Events before the first content event (see `sse::Source::prelude`).
    pub(crate) fn prelude(&self) -> usize {
        1
    }

    /// Content events: the ones `cut_after` and `end_early_after` count.
    pub(crate) fn content(&self) -> usize {
        usize::from(matches!(self.answer, Answer::Tool { .. })) + self.pieces.len()
    }

    /// Events in the complete stream.
    pub(crate) fn len(&self) -> usize {
        self.content() + 3 + usize::from(self.usage.is_some())
    }

    /// Writes event `index`, stamped with the current `mock_ts_us`.
    pub(crate) fn event(&self, index: usize) -> Result<Bytes, serde_json::Error> {
        let content = self.content();
        let usage_field = self.usage.map(|_| None);
        let mut delta = Delta::default();
        let mut finish_reason = None;
        match (index, &self.answer) {
            (0, Answer::Text(_)) => {
                delta.role = Some("assistant");
                delta.content = Some(Some(""));
                delta.refusal = Some(None);
            }
            (0, Answer::Tool { .. }) => {
                delta.role = Some("assistant");
                delta.content = Some(None);
            }
            (i, Answer::Text(text)) if i <= content => {
                delta.content = Some(Some(&text[self.pieces[i - 1].clone()]));
            }
            (1, Answer::Tool { name, .. }) => {
                delta.tool_calls = Some([ToolCallDelta {
                    index: 0,
                    id: Some(&self.call_id),
                    kind: Some("function"),
                    function: FunctionDelta {
                        name: Some(name),
                        arguments: "",
                    },
                }]);
            }
            (i, Answer::Tool { arguments, .. }) if i <= content => {
                delta.tool_calls = Some([ToolCallDelta {
                    index: 0,
                    id: None,
                    kind: None,
                    function: FunctionDelta {
                        name: None,
                        arguments: &arguments[self.pieces[i - 2].clone()],
                    },
                }]);
            }
            (i, answer) if i == content + 1 => {
                finish_reason = Some(match answer {
                    Answer::Text(_) => "stop",
                    Answer::Tool { .. } => "tool_calls",
                });
            }
            (i, _) => {
                return match self.usage {
                    Some(usage) if i == content + 2 => self.chunk(&[], Some(Some(usage))),
                    _ => Ok(DONE),
                };
            }
        }
        let choices = [ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        }];
        self.chunk(&choices, usage_field)
    }

    fn chunk(
        &self,
        choices: &[ChunkChoice<'_>],
        usage: Option<Option<Usage>>,
    ) -> Result<Bytes, serde_json::Error> {
        data_event(&ChatChunk {
            id: &self.meta.id,
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: &self.meta.model,
            system_fingerprint: &self.meta.fingerprint,
            choices,
            usage,
            mock_ts_us: unix_micros(),
        })
    }
}

// === wire types ===

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
    system_fingerprint: &'a str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'a str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent without `include_usage`; `null` on content chunks with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
    mock_ts_us: u64,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[cfg(test)]
mod tests {
    use super::parse_call;

    #[test]
    fn finds_tool_calls() {
        let args = r#"{"city":"Paris"}"#;
        let prompt = format!("call get_weather {args}");
        assert_eq!(parse_call(&prompt), Some(("get_weather", args)));
        assert_eq!(
            parse_call("please\ncall  lookup   not json "),
            Some(("lookup", "not json"))
        );
        assert_eq!(parse_call("call ping"), Some(("ping", "{}")));
        assert_eq!(parse_call("recall x"), None);
        assert_eq!(parse_call("no tools here"), None);
        assert_eq!(parse_call("call "), None);
    }
}
