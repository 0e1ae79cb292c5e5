//! Server-sent events: an incremental decoder and the matching encoders.
//!
//! The decoder follows the WHATWG event-stream parsing rules (LF, CRLF and lone CR line
//! endings, one optional space after the colon, a leading BOM ignored, unknown fields
//! ignored) but reports *frames* rather than dispatched events: every run of lines up to
//! and including a blank line is one [`SseFrame`] that carries its exact raw bytes, so
//! the proxy can forward a frame untouched when no step needs to change it. Concatenating
//! every frame's `raw` and the [`SseTail`] returned by [`SseDecoder::finish`] gives back
//! the input byte for byte, and the frames never depend on where the input was split.
//!
//! Field values are [`SseText`]: UTF-8 text that is usually a zero-copy slice of the
//! frame's raw bytes (multi-line `data` and invalid UTF-8, which is replaced with U+FFFD
//! as the spec requires, are the only copies).

mod decode;
mod encode;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::fmt;

use bytes::Bytes;

pub use decode::{Frames, SseDecoder};
pub use encode::{encode_comment, encode_data, encode_event};

/// The `data` payload that ends an OpenAI chat-completions stream.
pub const DONE: &str = "[DONE]";

/// UTF-8 text backed by [`Bytes`], usually a slice of a frame's raw bytes.
///
/// The bytes are always valid UTF-8: the decoder replaces invalid sequences with U+FFFD
/// before building one, and the constructors only take `str`/`String`.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SseText(Bytes);

/// One field-carrying frame: the fields a WHATWG parser would have collected for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The last `event:` value in the frame, if any (an empty value means `message`).
    pub event: Option<SseText>,
    /// All `data:` values joined with `\n`; `None` when the frame had no `data` field
    /// (a browser would not dispatch such a frame).
    pub data: Option<SseText>,
    /// The last `id:` value in the frame that contained no NUL, if any.
    pub id: Option<SseText>,
    /// The last `retry:` value made of ASCII digits only (and fitting in a `u64`).
    pub retry: Option<u64>,
}

/// What a frame says, once parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// No `event`, `data`, `id` or `retry` field: only comments (`: keep-alive`), unknown
    /// fields or a lone blank line. Forward it or drop it; it carries no event.
    KeepAlive,
    /// A frame with at least one of the known fields.
    Event(Event),
}

/// One complete frame: its fields, and its exact bytes including the terminating blank line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseFrame {
    /// The exact input bytes of this frame, up to and including its blank line (and, for
    /// the first frame of a stream, a leading BOM).
    pub raw: Bytes,
    /// The parsed content of the frame.
    pub kind: FrameKind,
}

/// What [`SseDecoder::finish`] found after the last complete frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SseTail {
    /// A final complete frame whose blank line ended in a lone CR: only the end of input
    /// could confirm that no LF (which would belong to the same line ending) followed.
    Frame(SseFrame),
    /// The input ended inside a frame: the stream was cut mid-frame. A WHATWG parser
    /// discards such a frame; `partial` says what its complete lines held.
    Incomplete {
        /// The leftover bytes, exactly as received.
        raw: Bytes,
        /// The fields of the complete lines seen so far (an unterminated last line is not
        /// a line and is not parsed).
        partial: FrameKind,
    },
}

// === impl SseText ===

impl SseText {
    /// Wraps a static string without copying.
    pub const fn from_static(text: &'static str) -> Self {
        Self(Bytes::from_static(text.as_bytes()))
    }

    /// Builds a text from bytes, replacing invalid UTF-8 with U+FFFD (copying only then).
    pub(crate) fn from_utf8_lossy(bytes: Bytes) -> Self {
        // `str::from_utf8` has an ASCII fast path that `String::from_utf8_lossy` lacks.
        if std::str::from_utf8(&bytes).is_ok() {
            return Self(bytes);
        }
        Self(Bytes::from(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// The text. Checking the (already valid) UTF-8 again costs a fraction of a
    /// nanosecond per byte and keeps this module free of `unsafe`.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The UTF-8 bytes of the text, for parsers that take bytes (`serde_json::from_slice`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The shared buffer holding the text.
    pub fn as_shared_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SseText {
    fn from(text: String) -> Self {
        Self(Bytes::from(text))
    }
}

impl From<&str> for SseText {
    fn from(text: &str) -> Self {
        Self(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl PartialEq<str> for SseText {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for SseText {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Debug for SseText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SseText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Event ===

impl Event {
    /// An event carrying only `data` (the shape of every OpenAI stream chunk).
    pub fn with_data(data: impl Into<SseText>) -> Self {
        Self {
            data: Some(data.into()),
            ..Self::default()
        }
    }

    /// The event type a browser would dispatch: the `event` value, or `message` when it is
    /// absent or empty.
    pub fn event_type(&self) -> &str {
        match &self.event {
            Some(name) if !name.is_empty() => name.as_str(),
            _ => "message",
        }
    }

    /// The `data` payload as text, if the frame had a `data` field.
    pub fn data_str(&self) -> Option<&str> {
        self.data.as_ref().map(SseText::as_str)
    }

    /// Whether the payload is exactly `[DONE]`.
    pub fn is_done(&self) -> bool {
        self.data.as_ref().is_some_and(|d| d == DONE)
    }
}

// === impl FrameKind ===

impl FrameKind {
    /// The event, unless this is a keep-alive frame.
    pub fn event(&self) -> Option<&Event> {
        match self {
            Self::KeepAlive => None,
            Self::Event(event) => Some(event),
        }
    }

    /// The `data` payload as text, without copying (for a JSON chunk, this is the JSON).
    pub fn data_str(&self) -> Option<&str> {
        self.event().and_then(Event::data_str)
    }

    /// The `data` payload as bytes, for `serde_json::from_slice` and friends.
    pub fn data_bytes(&self) -> Option<&[u8]> {
        self.event()
            .and_then(|e| e.data.as_ref())
            .map(SseText::as_bytes)
    }

    /// The JSON payload of a data event: the data, unless it is absent, `[DONE]` or blank.
    /// Whether it actually parses is left to the caller's JSON parser.
    pub fn json_str(&self) -> Option<&str> {
        self.data_str()
            .filter(|d| *d != DONE && !d.trim_ascii().is_empty())
    }

    /// Whether the payload is exactly `[DONE]`.
    pub fn is_done(&self) -> bool {
        self.event().is_some_and(Event::is_done)
    }
}

// === impl SseFrame ===

impl SseFrame {
    /// The event, unless this is a keep-alive frame.
    pub fn event(&self) -> Option<&Event> {
        self.kind.event()
    }

    /// The `data` payload as text, without copying.
    pub fn data_str(&self) -> Option<&str> {
        self.kind.data_str()
    }

    /// The JSON payload of a data event (see [`FrameKind::json_str`]).
    pub fn json_str(&self) -> Option<&str> {
        self.kind.json_str()
    }

    /// Whether the payload is exactly `[DONE]`.
    pub fn is_done(&self) -> bool {
        self.kind.is_done()
    }

    /// Whether this frame carries no event (comments, unknown fields, blank line).
    pub fn is_keep_alive(&self) -> bool {
        matches!(self.kind, FrameKind::KeepAlive)
    }
}

// === impl SseTail ===

impl SseTail {
    /// The leftover bytes, whichever the variant.
    pub fn raw(&self) -> &Bytes {
        match self {
            Self::Frame(frame) => &frame.raw,
            Self::Incomplete { raw, .. } => raw,
        }
    }

    /// Whether the input ended mid-frame.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, Self::Incomplete { .. })
    }
}
