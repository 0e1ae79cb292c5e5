//! The prompt text of a request, for token estimates and per-character pricing.

use serde_json::Value;

use super::{ApiRoute, ParsedRequest};

/// Tokens each message adds around its content in OpenAI chat formats (role and
/// delimiters), per OpenAI's published counting recipe.
pub const TOKENS_PER_MESSAGE: u64 = 3;

/// Tokens that prime the assistant's reply in chat formats.
pub const REPLY_PRIMING_TOKENS: u64 = 3;

/// Estimates the tokens of `text_chars` characters of text: `ceil(chars / 4)`.
///
/// About four characters per token holds for English prose and code under OpenAI's
/// tokenizers; it underestimates text in scripts such as Chinese or Japanese (nearer one
/// token per character). It is the fallback where no tokenizer of the model family is
/// known; message overhead is added by [`ParsedRequest::estimated_prompt_tokens`].
pub fn estimate_tokens_heuristic(text_chars: usize) -> u64 {
    u64::try_from(text_chars.div_ceil(4)).unwrap_or(u64::MAX)
}

// === impl ParsedRequest ===

impl ParsedRequest {
    /// Calls `f` with each piece of prompt text, in request order: chat message content
    /// (strings and the `text` of content parts) and tool-call arguments; the `prompt` of
    /// completions; the `input` of embeddings; the `instructions` and `input` (strings,
    /// message content, function-call arguments and outputs) of the responses API. Token
    /// arrays are skipped.
    pub fn for_each_prompt_text<'a>(&'a self, mut f: impl FnMut(&'a str)) {
        let Some(body) = self.body() else {
            return;
        };
        match self.route {
            ApiRoute::ChatCompletions => {
                for message in body
                    .get("messages")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    visit_item(message, &mut f);
                }
            }
            ApiRoute::Completions => visit_content(body.get("prompt"), &mut f),
            ApiRoute::Embeddings => visit_content(body.get("input"), &mut f),
            ApiRoute::Responses => {
                visit_content(body.get("instructions"), &mut f);
                match body.get("input") {
                    Some(Value::Array(items)) => items.iter().for_each(|i| visit_item(i, &mut f)),
                    other => visit_content(other, &mut f),
                }
            }
            ApiRoute::Models => {}
        }
    }

    /// The pieces of prompt text (see [`ParsedRequest::for_each_prompt_text`]).
    pub fn prompt_texts(&self) -> Vec<&str> {
        let mut texts = Vec::new();
        self.for_each_prompt_text(|text| texts.push(text));
        texts
    }

    /// Characters (Unicode scalar values) of prompt text, for per-character pricing.
    pub fn prompt_chars(&self) -> usize {
        let mut chars = 0;
        self.for_each_prompt_text(|text| chars += text.chars().count());
        chars
    }

    /// Messages (chat) or input items (responses API) that carry per-message overhead.
    pub fn prompt_messages(&self) -> usize {
        let Some(body) = self.body() else {
            return 0;
        };
        let key = match self.route {
            ApiRoute::ChatCompletions => "messages",
            ApiRoute::Responses => "input",
            _ => return 0,
        };
        match body.get(key) {
            Some(Value::Array(items)) => items.len(),
            Some(Value::String(_)) => 1,
            _ => 0,
        }
    }

    /// The heuristic prompt-token estimate: [`estimate_tokens_heuristic`] of the prompt
    /// characters, plus [`TOKENS_PER_MESSAGE`] per message and [`REPLY_PRIMING_TOKENS`]
    /// when there are messages.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        let messages = u64::try_from(self.prompt_messages()).unwrap_or(u64::MAX);
        let overhead = match messages {
            0 => 0,
            n => n.saturating_mul(TOKENS_PER_MESSAGE) + REPLY_PRIMING_TOKENS,
        };
        estimate_tokens_heuristic(self.prompt_chars()).saturating_add(overhead)
    }
}

/// A chat message or responses-API input item: its content, tool-call arguments, and a
/// function call's arguments or output.
fn visit_item<'a>(item: &'a Value, f: &mut impl FnMut(&'a str)) {
    visit_content(item.get("content"), f);
    for key in ["arguments", "output"] {
        if let Some(text) = item.get(key).and_then(Value::as_str) {
            f(text);
        }
    }
    let calls = item.get("tool_calls").and_then(Value::as_array);
    let legacy = item.get("function_call");
    for call in calls
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("function"))
        .chain(legacy)
    {
        if let Some(arguments) = call.get("arguments").and_then(Value::as_str) {
            f(arguments);
        }
    }
}

/// A string, or an array of strings and content parts with a `text` string.
fn visit_content<'a>(content: Option<&'a Value>, f: &mut impl FnMut(&'a str)) {
    match content {
        Some(Value::String(text)) => f(text),
        Some(Value::Array(parts)) => {
            for part in parts {
                match part {
                    Value::String(text) => f(text),
                    Value::Object(part) => {
                        if let Some(text) = part.get("text").and_then(Value::as_str) {
                            f(text);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_request;
    use super::*;

    fn parse(route: ApiRoute, json: &str) -> ParsedRequest {
        parse_request(route, json.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn heuristic_rounds_up() {
        assert_eq!(estimate_tokens_heuristic(0), 0);
        assert_eq!(estimate_tokens_heuristic(1), 1);
        assert_eq!(estimate_tokens_heuristic(8), 2);
        assert_eq!(estimate_tokens_heuristic(9), 3);
    }

    #[test]
    fn chat_prompt_text_covers_content_parts_and_tool_calls() {
        let req = parse(
            ApiRoute::ChatCompletions,
            r#"{"messages":[
                {"role":"system","content":"Be brief."},
                {"role":"user","content":[{"type":"text","text":"héllo"},{"type":"image_url","image_url":{"url":"x"}}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
                {"role":"tool","tool_call_id":"c","content":"42"}
            ]}"#,
        );
        assert_eq!(
            req.prompt_texts(),
            ["Be brief.", "héllo", "{\"a\":1}", "42"]
        );
        assert_eq!(req.prompt_chars(), 9 + 5 + 7 + 2);
        assert_eq!(req.prompt_messages(), 4);
        // ceil(23 / 4) = 6, plus 4 messages * 3, plus 3 for the reply.
        assert_eq!(req.estimated_prompt_tokens(), 6 + 12 + 3);
    }

    #[test]
    fn other_routes_prompt_text() {
        let completions = parse(ApiRoute::Completions, r#"{"prompt":["ab","cd",[1,2]]}"#);
        assert_eq!(completions.prompt_texts(), ["ab", "cd"]);
        assert_eq!(completions.estimated_prompt_tokens(), 1);
        let embeddings = parse(ApiRoute::Embeddings, r#"{"input":"some text"}"#);
        assert_eq!(embeddings.prompt_texts(), ["some text"]);
        let responses = parse(
            ApiRoute::Responses,
            r#"{"instructions":"sys","input":[
                {"role":"user","content":[{"type":"input_text","text":"q"}]},
                {"type":"function_call","name":"f","arguments":"{}","call_id":"1"},
                {"type":"function_call_output","call_id":"1","output":"r"}
            ]}"#,
        );
        assert_eq!(responses.prompt_texts(), ["sys", "q", "{}", "r"]);
        assert_eq!(responses.prompt_messages(), 3);
        let simple = parse(ApiRoute::Responses, r#"{"input":"hi"}"#);
        assert_eq!(simple.prompt_texts(), ["hi"]);
        assert_eq!(simple.prompt_messages(), 1);
    }
}
