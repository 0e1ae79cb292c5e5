//! Client-side prompt protection (PRODUCT.md §6): sensitive spans in prompts are replaced
//! with deterministic AES-SIV tokens (or redacted, for secrets and long spans) before a
//! request leaves the machine, and tokens in the model's answer are restored, streaming
//! included. See docs/protection.md for the token grammar, the detectors and the threat
//! model.
//!
//! The pieces: `detect` + `numeric` find spans, `token` seals and opens them, `restore`
//! scans output (whole or streamed), `json` knows where the OpenAI payloads keep text,
//! `keys` reads and writes key files. [`Protector`] ties them together, built once per
//! policy load and shared via `Arc`.

mod detect;
mod error;
mod json;
mod keys;
mod numeric;
mod raw;
mod restore;
mod token;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_json;
#[cfg(test)]
mod tests_prop;
#[cfg(test)]
mod tests_raw;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

pub use detect::DETECTORS;
pub use error::{KeyFormat, ProtectError};
pub use keys::{key_from_env, keygen, load_key_file};
pub use raw::RawPass;
pub use restore::{ChannelKind, RestoreStats, StreamRestorer};
pub use token::{MAX_SPAN, MAX_TOKEN_LEN, TOKEN_PREFIX};

use detect::Detectors;
use token::KeyRing;

/// What a [`Protector`] is built from (the `[protect]` table with its keys loaded).
#[derive(Clone, Default)]
pub struct ProtectConfig {
    /// `(id, master key)`; ids `[a-z0-9]{1,16}`, unique. The first key seals, all open.
    pub keys: Vec<(String, [u8; 32])>,
    /// Built-in detectors to run, from [`DETECTORS`].
    pub detectors: Vec<String>,
    /// Custom detectors: `(name, regex)`; names `[a-z][a-z0-9_]{0,31}`, distinct from the
    /// built-in ones. Their spans are tokenized like any other (redacted if > 64 bytes).
    pub patterns: Vec<(String, String)>,
}

/// Counters of one protect pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtectStats {
    /// Spans replaced (tokenized or redacted), by detector name.
    pub by_detector: BTreeMap<String, u64>,
}

/// Protects requests and restores responses under one policy's keys and detectors.
/// `Send + Sync`; build once per policy load and share via `Arc`.
pub struct Protector {
    ring: Arc<KeyRing>,
    detectors: Detectors,
}

// === impl ProtectConfig ===

impl std::fmt::Debug for ProtectConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("ProtectConfig")
            .field("key_ids", &ids)
            .field("detectors", &self.detectors)
            .field("patterns", &self.patterns)
            .finish()
    }
}

// === impl ProtectStats ===

impl ProtectStats {
    /// Spans replaced, all detectors together.
    pub fn total(&self) -> u64 {
        self.by_detector.values().sum()
    }

    fn count(&mut self, detector: &str) {
        match self.by_detector.get_mut(detector) {
            Some(n) => *n += 1,
            None => {
                self.by_detector.insert(detector.to_owned(), 1);
            }
        }
    }
}

// === impl Protector ===

impl Protector {
    /// Derives the keys and compiles the detectors. The first key seals, all keys open.
    pub fn new(cfg: &ProtectConfig) -> Result<Protector, ProtectError> {
        Ok(Protector {
            ring: Arc::new(KeyRing::new(&cfg.keys)?),
            detectors: Detectors::new(&cfg.detectors, &cfg.patterns)?,
        })
    }

    /// Replaces every detected span of `text`: a token for spans of at most
    /// [`MAX_SPAN`] bytes, `[redacted:<detector>]` for `secret` spans and longer ones.
    pub fn protect_text(
        &self,
        text: &str,
        stats: &mut ProtectStats,
    ) -> Result<String, ProtectError> {
        Ok(self
            .protect_str(text, stats)?
            .unwrap_or_else(|| text.to_owned()))
    }

    /// Like [`protect_text`](Self::protect_text), but `None` when nothing was found (no
    /// allocation on the common path).
    pub fn protect_str(
        &self,
        text: &str,
        stats: &mut ProtectStats,
    ) -> Result<Option<String>, ProtectError> {
        let hits = self.detectors.find(text);
        if hits.is_empty() {
            return Ok(None);
        }
        let mut out = String::with_capacity(text.len() + hits.len() * 64);
        let mut last = 0;
        for hit in hits {
            out.push_str(&text[last..hit.range.start]);
            let name = self.detectors.name(hit.det);
            let span = &text[hit.range.clone()];
            if self.detectors.is_secret(hit.det) || span.len() > MAX_SPAN {
                out.push_str("[redacted:");
                out.push_str(name);
                out.push(']');
            } else {
                self.ring.seal(name, span, &mut out)?;
            }
            stats.count(name);
            last = hit.range.end;
        }
        out.push_str(&text[last..]);
        Ok(Some(out))
    }

    /// The spans the detectors find in `text` (after overlap resolution), with the
    /// detector's name. For tests, tools and benchmarks.
    pub fn detect(&self, text: &str) -> Vec<(Range<usize>, &str)> {
        self.detectors
            .find(text)
            .into_iter()
            .map(|h| (h.range, self.detectors.name(h.det)))
            .collect()
    }

    /// Restores the tokens of a plain text (message content).
    pub fn restore_text(&self, text: &str, stats: &mut RestoreStats) -> String {
        self.restore_text_as(text, ChannelKind::Content, stats)
    }

    /// Restores the tokens of a text of the given kind; for
    /// [`ChannelKind::ToolArguments`] restored values are JSON-escaped.
    pub fn restore_text_as(
        &self,
        text: &str,
        kind: ChannelKind,
        stats: &mut RestoreStats,
    ) -> String {
        let mut out = String::with_capacity(text.len());
        restore::restore_into(&self.ring, text, true, kind, &mut out, stats);
        out
    }

    /// Can the raw JSON answer `raw` hold a token to restore? False only when it holds
    /// neither the token prefix nor a `\u` escape (which could spell one), so an answer
    /// without tokens passes untouched, without a parse and a re-serialization.
    pub fn may_hold_tokens(raw: &[u8]) -> bool {
        memchr::memmem::find(raw, token::TOKEN_PREFIX.as_bytes()).is_some()
            || memchr::memmem::find(raw, b"\\u").is_some()
    }

    /// A streaming restorer for one text channel.
    pub fn stream_restorer(&self, kind: ChannelKind) -> StreamRestorer {
        StreamRestorer::new(self.ring.clone(), kind)
    }

    /// The enabled detector names (built-in first, then patterns).
    pub fn detector_names(&self) -> &[String] {
        self.detectors.names()
    }
}

impl std::fmt::Debug for Protector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.ring.ids().collect();
        f.debug_struct("Protector")
            .field("key_ids", &ids)
            .field("detectors", &self.detectors.names())
            .finish()
    }
}
