//! Restore: tokens in model output back to their plaintext, for whole texts and for
//! streams. One scanner serves both, so a stream restores exactly as the whole text would,
//! whatever the delta boundaries: a decision at a `P` is taken only once every byte it
//! depends on is there, and until then the text from that `P` on is held (at most
//! [`MAX_TOKEN_LEN`](super::token::MAX_TOKEN_LEN) − 1 bytes).

use std::sync::Arc;

use super::token::{Found, KeyRing};

/// What kind of text a restored value lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// Plain text (message content, completions text): the plaintext goes in as is; the
    /// JSON or SSE encoder escapes it once for the string it is written into.
    Content,
    /// JSON text carried inside a JSON string (tool-call `arguments`; also message content
    /// under `response_format` `json_object` / `json_schema`): the plaintext is
    /// JSON-escaped for the JSON string it sits in, and the encoder escapes the whole
    /// text once more.
    ToolArguments,
}

/// Counters of one restore pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Tokens restored.
    pub restored: u64,
    /// Token-shaped strings left as they are: unknown key id or failed authentication.
    pub failed: u64,
}

/// Restores the tokens of `text` into `out`. With `complete == false` the text may go on:
/// a possible token cut by its end is not decided, and the returned offset is where the
/// undecided tail starts (`text.len()` when nothing is held).
pub(crate) fn restore_into(
    ring: &KeyRing,
    text: &str,
    complete: bool,
    kind: ChannelKind,
    out: &mut String,
    stats: &mut RestoreStats,
) -> usize {
    let b = text.as_bytes();
    let (mut emitted, mut i) = (0, 0);
    while let Some(off) = memchr::memchr(b'P', &b[i..]) {
        let at = i + off;
        match ring.examine(text, at, complete) {
            Found::Token { end, plain } => {
                out.push_str(&text[emitted..at]);
                match kind {
                    ChannelKind::Content => out.push_str(&plain),
                    ChannelKind::ToolArguments => push_json_escaped(out, &plain),
                }
                stats.restored += 1;
                (emitted, i) = (end, end);
            }
            Found::Failed => {
                stats.failed += 1;
                i = at + 1;
            }
            Found::NotToken => i = at + 1,
            Found::NeedMore => {
                out.push_str(&text[emitted..at]);
                return at;
            }
        }
    }
    out.push_str(&text[emitted..]);
    text.len()
}

/// Appends `s` escaped as the inside of a JSON string (RFC 8259: `"`, `\` and control
/// characters; everything else, non-ASCII included, as is).
pub(crate) fn push_json_escaped(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let n = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[n >> 4]));
                out.push(char::from(HEX[n & 0xf]));
            }
            c => out.push(c),
        }
    }
}

/// Restores tokens in one streamed text channel (one choice's content, or one tool call's
/// arguments). Each [`push`](StreamRestorer::push) returns what can be emitted now; only a
/// tail that may still become a token is held, never more than the longest token minus one
/// byte. [`finish`](StreamRestorer::finish) flushes the tail at the channel's end.
pub struct StreamRestorer {
    ring: Arc<KeyRing>,
    kind: ChannelKind,
    held: String,
}

// === impl StreamRestorer ===

impl StreamRestorer {
    pub(crate) fn new(ring: Arc<KeyRing>, kind: ChannelKind) -> StreamRestorer {
        StreamRestorer {
            ring,
            kind,
            held: String::new(),
        }
    }

    /// Feeds one delta's text; returns the text to emit now (possibly empty).
    pub fn push(&mut self, delta: &str, stats: &mut RestoreStats) -> String {
        let mut out = String::with_capacity(self.held.len() + delta.len());
        if self.held.is_empty() {
            let cut = restore_into(&self.ring, delta, false, self.kind, &mut out, stats);
            self.held.push_str(&delta[cut..]);
        } else {
            self.held.push_str(delta);
            let cut = restore_into(&self.ring, &self.held, false, self.kind, &mut out, stats);
            self.held.drain(..cut);
        }
        out
    }

    /// Ends the channel: returns the held tail, restored where it is a token.
    pub fn finish(&mut self, stats: &mut RestoreStats) -> String {
        let mut out = String::with_capacity(self.held.len());
        restore_into(&self.ring, &self.held, true, self.kind, &mut out, stats);
        self.held.clear();
        out
    }

    /// Bytes currently held back.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The kind of channel this restorer serves.
    pub fn kind(&self) -> ChannelKind {
        self.kind
    }
}

impl std::fmt::Debug for StreamRestorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The held tail may be part of a token; its content is not shown.
        f.debug_struct("StreamRestorer")
            .field("kind", &self.kind)
            .field("held", &self.held.len())
            .finish()
    }
}
