//! OpenAI request and response types shared by the endpoints, and the text helpers that make
//! answers and token counts deterministic.
//!
//! Requests are parsed borrowing from the body (`Cow`), reading only the fields the mock uses;
//! unknown fields are ignored. Responses are plain `Serialize` structs written straight into
//! one buffer, never through `serde_json::Value`.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// A string borrowed from the request body when it has no escapes.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// `POST /v1/chat/completions`, the fields the mock reads.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest<'a> {
    #[serde(borrow, default)]
    pub model: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub messages: Vec<ChatMessage<'a>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub tools: Option<Vec<IgnoredAny>>,
}

/// One message of a chat request.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatMessage<'a> {
    #[serde(borrow, default)]
    pub role: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub content: Option<Content<'a>>,
}

/// A message's content: a string, or an array of parts of which the text parts count.
#[derive(Debug)]
pub(crate) enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<Part<'a>>),
}

/// One content part (`{"type":"text","text":"..."}`; parts without text are skipped).
#[derive(Debug, Deserialize)]
pub(crate) struct Part<'a> {
    #[serde(borrow, default)]
    pub text: Option<Text<'a>>,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Token counts, as OpenAI reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// What every response of one request shares.
#[derive(Debug)]
pub(crate) struct Meta {
    /// N: the mock's response counter.
    pub serial: u64,
    /// `chatcmpl-mock<N>`, `cmpl-mock<N>`, `resp_mock<N>`, ...
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The request's model.
    pub model: String,
    /// The mock's name.
    pub fingerprint: Arc<str>,
}

// === impl Content ===

impl<'a> Content<'a> {
    /// The text: the string itself, or the text parts joined with `\n`.
    pub(crate) fn text(&self) -> Cow<'_, str> {
        match self {
            Content::Text(text) => Cow::Borrowed(text),
            Content::Parts(parts) => {
                let mut texts = parts.iter().filter_map(|part| part.text.as_ref());
                match (texts.next(), texts.next()) {
                    (None, _) => Cow::Borrowed(""),
                    (Some(only), None) => Cow::Borrowed(&only.0),
                    (Some(first), Some(second)) => {
                        let mut joined = format!("{}\n{}", first.0, second.0);
                        for text in texts {
                            joined.push('\n');
                            joined.push_str(&text.0);
                        }
                        Cow::Owned(joined)
                    }
                }
            }
        }
    }

    /// Whitespace-separated words in the text.
    pub(crate) fn words(&self) -> u64 {
        match self {
            Content::Text(text) => words(text),
            Content::Parts(parts) => parts
                .iter()
                .flat_map(|p| &p.text)
                .map(|t| words(&t.0))
                .sum(),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ContentVisitor(PhantomData))
    }
}

struct ContentVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ContentVisitor<'a> {
    type Value = Content<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of content parts")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Owned(text)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut parts = Vec::new();
        while let Some(part) = seq.next_element::<Part<'a>>()? {
            parts.push(part);
        }
        Ok(Content::Parts(parts))
    }
}

// === impl Usage ===

impl Usage {
    /// Usage with the total filled in.
    pub(crate) fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

// === text helpers ===

/// The mock's token count: whitespace-separated words (documented; deterministic).
pub(crate) fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The deterministic answer to a prompt.
pub(crate) fn echo(prompt: &str) -> String {
    let mut answer = String::with_capacity(6 + prompt.len());
    answer.push_str("echo: ");
    answer.push_str(prompt);
    answer
}

/// Splits `text` into stream pieces at word starts, each piece keeping the whitespace before
/// its word: `"echo: a b"` → `["echo:", " a", " b"]`.
pub(crate) fn split_words(text: &str) -> Vec<Range<usize>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut previous_is_space = true;
    for (at, c) in text.char_indices() {
        let is_space = c.is_whitespace();
        if is_space && !previous_is_space && at > start {
            pieces.push(start..at);
            start = at;
        }
        previous_is_space = is_space;
    }
    if start < text.len() {
        pieces.push(start..text.len());
    }
    pieces
}

/// Splits `text` into pieces of at most `size` bytes, on character boundaries.
pub(crate) fn split_bytes(text: &str, size: usize) -> Vec<Range<usize>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + size.max(1)).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        pieces.push(start..end);
        start = end;
    }
    pieces
}

/// Unix time in seconds.
pub(crate) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Unix time in microseconds (the `mock_ts_us` of streamed events).
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_keep_every_byte() {
        let text = "echo:  héllo\twörld ";
        let pieces: Vec<&str> = split_words(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(pieces, ["echo:", "  héllo", "\twörld", " "]);
        assert_eq!(pieces.concat(), text);
        let args = r#"{"city":"Zürich"}"#;
        let pieces: Vec<&str> = split_bytes(args, 4).into_iter().map(|r| &args[r]).collect();
        assert_eq!(pieces.concat(), args);
        assert!(pieces.len() > 3);
        assert!(split_words("").is_empty());
    }

    #[test]
    fn parses_without_copying_plain_strings() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi there"},
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"},
            {"type":"text","text":"b c"}]}],"stream":true,"tools":[{}]}"#;
        let request: ChatRequest = serde_json::from_slice(body).unwrap();
        assert!(matches!(request.model, Some(Text(Cow::Borrowed("m")))));
        let texts: Vec<_> = request
            .messages
            .iter()
            .map(|m| m.content.as_ref().unwrap().text().into_owned())
            .collect();
        assert_eq!(texts, ["hi there", "a\nb c"]);
        assert!(matches!(
            request.messages[0].content,
            Some(Content::Text(Cow::Borrowed(_)))
        ));
        assert_eq!(request.messages[1].content.as_ref().unwrap().words(), 3);
        assert_eq!(request.tools.map(|t| t.len()), Some(1));
    }
}
