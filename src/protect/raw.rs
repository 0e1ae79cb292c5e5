//! Protect and restore on the raw JSON bytes: the same fields as the `Value` walkers in
//! `json`, found by a sparse borrowed parse (every field is a `&RawValue`, a slice of the
//! input), and only the strings that change are spliced in. Everything else — unknown
//! fields, number spellings, whitespace, key order — goes out byte for byte, and no tree
//! is built or serialized (on the hot path that was most of protection's cost).
//!
//! A body this pass does not take gives [`RawPass::Fallback`] and the caller uses the
//! `Value` walkers: a key the walkers read that appears twice in one object (the `Value`
//! keeps the last one; a splice would have to pick too), or bytes that are not JSON.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::ProtectError;
use super::{ChannelKind, ProtectStats, Protector, RestoreStats};
use crate::sparse::{sparse_struct, Field};

/// What a pass over the raw bytes did.
#[derive(Debug, PartialEq, Eq)]
pub enum RawPass<S> {
    /// Nothing to change: send the bytes as they are.
    Unchanged(S),
    /// The rewritten body.
    Rewritten(Vec<u8>, S),
    /// A body this pass does not take: use the `Value` walkers.
    Fallback,
}

sparse_struct!(
    /// The request fields that hold text (see the `json` module docs).
    Request { messages, input, instructions, user, prompt }
);
sparse_struct!(
    /// A chat message or responses-API item, request side.
    Item { content, output, text, arguments, function_call, tool_calls }
);
sparse_struct!(
    /// The response fields that hold text.
    Response { choices, output, output_text }
);
sparse_struct!(
    /// A choice of a chat or legacy completion.
    Choice { message, text }
);
sparse_struct!(
    /// A response message or responses-API output item.
    Message { content, refusal, reasoning_content, arguments, function_call, tool_calls, summary }
);
sparse_struct!(
    /// A content part (`text` / `refusal`), a tool call's `function`, a `function_call`.
    Part { text, refusal, arguments, function }
);

/// How a string is protected: [`Protector::protect_str`] or, for tool-call arguments
/// (JSON text), `protect_arguments_str`; `None` when nothing changed.
type ProtectFn = fn(&Protector, &str, &mut ProtectStats) -> Result<Option<String>, ProtectError>;
const ARGUMENTS: ProtectFn = Protector::protect_arguments_str;

/// The shape did not suit the sparse parse: fall back to the `Value` walkers.
struct Unsuited;

/// Replacements of byte ranges of `raw` (each a whole JSON string value).
struct Splice<'a> {
    raw: &'a str,
    edits: Vec<(Range<usize>, String)>,
}

// === impl Protector ===

impl Protector {
    /// [`protect_request`](Self::protect_request) on the raw body: the same fields, the
    /// same tokens, with only the changed strings spliced in.
    pub fn protect_request_raw(&self, raw: &[u8]) -> Result<RawPass<ProtectStats>, ProtectError> {
        let mut stats = ProtectStats::default();
        let Ok(raw) = std::str::from_utf8(raw) else {
            return Ok(RawPass::Fallback);
        };
        let mut splice = Splice::new(raw);
        match self.protect_request_fields(raw, &mut splice, &mut stats) {
            Ok(()) => Ok(splice.finish(stats)),
            Err(Walk::Unsuited) => Ok(RawPass::Fallback),
            Err(Walk::Protect(e)) => Err(e),
        }
    }

    /// [`restore_response`](Self::restore_response) on the raw body.
    pub fn restore_response_raw(&self, raw: &[u8]) -> RawPass<RestoreStats> {
        let mut stats = RestoreStats::default();
        let Ok(raw) = std::str::from_utf8(raw) else {
            return RawPass::Fallback;
        };
        let mut splice = Splice::new(raw);
        match self.restore_response_fields(raw, &mut splice, &mut stats) {
            Ok(()) => splice.finish(stats),
            Err(Unsuited) => RawPass::Fallback,
        }
    }

    fn protect_request_fields(
        &self,
        raw: &str,
        sp: &mut Splice<'_>,
        st: &mut ProtectStats,
    ) -> Result<(), Walk> {
        let req: Request<'_> = top(raw)?;
        for m in array(req.messages)?.into_iter().flatten() {
            if let Some(item) = object::<Item<'_>>(Some(m))? {
                self.protect_item_raw(&item, sp, st)?;
            }
        }
        match array(req.input)? {
            Some(items) => {
                for item in items {
                    match object::<Item<'_>>(Some(item))? {
                        Some(item) => self.protect_item_raw(&item, sp, st)?,
                        None => self.protect_leaf(Some(item), sp, st)?,
                    }
                }
            }
            None => self.protect_leaf(req.input, sp, st)?,
        }
        self.protect_leaf(req.instructions, sp, st)?;
        self.protect_leaf(req.user, sp, st)?;
        match array(req.prompt)? {
            Some(items) => {
                for item in items {
                    self.protect_leaf(Some(item), sp, st)?;
                }
            }
            None => self.protect_leaf(req.prompt, sp, st)?,
        }
        Ok(())
    }

    fn protect_item_raw(
        &self,
        m: &Item<'_>,
        sp: &mut Splice<'_>,
        st: &mut ProtectStats,
    ) -> Result<(), Walk> {
        for content in [m.content, m.output] {
            match array(content)? {
                Some(parts) => {
                    for part in parts {
                        match object::<Part<'_>>(Some(part))? {
                            Some(Part { text: Some(t), .. }) => {
                                self.protect_leaf(Some(t), sp, st)?
                            }
                            Some(_) => {}
                            None => self.protect_leaf(Some(part), sp, st)?,
                        }
                    }
                }
                None => self.protect_leaf(content, sp, st)?,
            }
        }
        self.protect_leaf(m.text, sp, st)?;
        self.protect_leaf_with(m.arguments, ARGUMENTS, sp, st)?;
        if let Some(f) = object::<Part<'_>>(m.function_call)? {
            self.protect_leaf_with(f.arguments, ARGUMENTS, sp, st)?;
        }
        for call in array(m.tool_calls)?.into_iter().flatten() {
            let function = object::<Part<'_>>(Some(call))?.and_then(|c| c.function);
            if let Some(f) = object::<Part<'_>>(function)? {
                self.protect_leaf_with(f.arguments, ARGUMENTS, sp, st)?;
            }
        }
        Ok(())
    }

    fn protect_leaf(
        &self,
        v: Field<'_>,
        sp: &mut Splice<'_>,
        st: &mut ProtectStats,
    ) -> Result<(), Walk> {
        self.protect_leaf_with(v, Protector::protect_str, sp, st)
    }

    /// Protects the string `v` with `how` (plain text, or tool-call arguments).
    fn protect_leaf_with(
        &self,
        v: Field<'_>,
        how: ProtectFn,
        sp: &mut Splice<'_>,
        st: &mut ProtectStats,
    ) -> Result<(), Walk> {
        if let Some((v, text)) = string(v)? {
            if let Some(new) = how(self, &text, st)? {
                sp.replace(v, &new);
            }
        }
        Ok(())
    }

    fn restore_response_fields(
        &self,
        raw: &str,
        sp: &mut Splice<'_>,
        st: &mut RestoreStats,
    ) -> Result<(), Unsuited> {
        let content = ChannelKind::Content;
        let resp: Response<'_> = top(raw)?;
        for choice in array(resp.choices)?.into_iter().flatten() {
            if let Some(c) = object::<Choice<'_>>(Some(choice))? {
                if let Some(m) = object::<Message<'_>>(c.message)? {
                    self.restore_message_raw(&m, sp, st)?;
                }
                self.restore_leaf(c.text, content, sp, st)?;
            }
        }
        for item in array(resp.output)?.into_iter().flatten() {
            if let Some(m) = object::<Message<'_>>(Some(item))? {
                self.restore_message_raw(&m, sp, st)?;
                for part in array(m.summary)?.into_iter().flatten() {
                    if let Some(p) = object::<Part<'_>>(Some(part))? {
                        self.restore_leaf(p.text, content, sp, st)?;
                    }
                }
            }
        }
        self.restore_leaf(resp.output_text, content, sp, st)
    }

    fn restore_message_raw(
        &self,
        m: &Message<'_>,
        sp: &mut Splice<'_>,
        st: &mut RestoreStats,
    ) -> Result<(), Unsuited> {
        let (content, args) = (ChannelKind::Content, ChannelKind::ToolArguments);
        match array(m.content)? {
            Some(parts) => {
                for part in parts {
                    if let Some(p) = object::<Part<'_>>(Some(part))? {
                        self.restore_leaf(p.text, content, sp, st)?;
                        self.restore_leaf(p.refusal, content, sp, st)?;
                    }
                }
            }
            None => self.restore_leaf(m.content, content, sp, st)?,
        }
        self.restore_leaf(m.refusal, content, sp, st)?;
        self.restore_leaf(m.reasoning_content, content, sp, st)?;
        self.restore_leaf(m.arguments, args, sp, st)?;
        if let Some(f) = object::<Part<'_>>(m.function_call)? {
            self.restore_leaf(f.arguments, args, sp, st)?;
        }
        for call in array(m.tool_calls)?.into_iter().flatten() {
            let function = object::<Part<'_>>(Some(call))?.and_then(|c| c.function);
            if let Some(f) = object::<Part<'_>>(function)? {
                self.restore_leaf(f.arguments, args, sp, st)?;
            }
        }
        Ok(())
    }

    fn restore_leaf(
        &self,
        v: Field<'_>,
        kind: ChannelKind,
        sp: &mut Splice<'_>,
        st: &mut RestoreStats,
    ) -> Result<(), Unsuited> {
        if let Some((v, text)) = string(v)? {
            if memchr::memmem::find(text.as_bytes(), super::TOKEN_PREFIX.as_bytes()).is_some() {
                let new = self.restore_text_as(&text, kind, st);
                if new != text {
                    sp.replace(v, &new);
                }
            }
        }
        Ok(())
    }
}

/// Why a walk stopped: the shape, or protection itself failed (nothing may be sent).
enum Walk {
    Unsuited,
    Protect(ProtectError),
}

impl From<Unsuited> for Walk {
    fn from(_: Unsuited) -> Walk {
        Walk::Unsuited
    }
}

impl From<ProtectError> for Walk {
    fn from(e: ProtectError) -> Walk {
        Walk::Protect(e)
    }
}

/// The sparse fields of the object `raw`; a repeated field is [`Unsuited`].
fn sparse<'a, T: Deserialize<'a>>(raw: &'a str) -> Result<T, Unsuited> {
    serde_json::from_str(raw).map_err(|_| Unsuited)
}

/// The sparse fields of a whole body, which must be an object (a derived struct would
/// also take an array, field by position).
fn top<'a, T: Deserialize<'a>>(raw: &'a str) -> Result<T, Unsuited> {
    match raw
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        true => sparse(raw),
        false => Err(Unsuited),
    }
}

/// The sparse fields of `v` when it is an object, `None` when it is anything else.
fn object<'a, T: Deserialize<'a>>(v: Field<'a>) -> Result<Option<T>, Unsuited> {
    match v {
        Some(v) if v.get().starts_with('{') => sparse(v.get()).map(Some),
        _ => Ok(None),
    }
}

/// The elements of `v` when it is an array (JSON `null` elements are skipped: no walker
/// reads anything in them), `None` when it is anything else.
fn array(v: Field<'_>) -> Result<Option<Vec<&RawValue>>, Unsuited> {
    match v {
        Some(v) if v.get().starts_with('[') => {
            let items: Vec<Option<&RawValue>> = sparse(v.get())?;
            Ok(Some(items.into_iter().flatten().collect()))
        }
        _ => Ok(None),
    }
}

/// `v` and its decoded text when it is a string.
fn string(v: Field<'_>) -> Result<Option<(&RawValue, Cow<'_, str>)>, Unsuited> {
    let Some(v) = v.filter(|v| v.get().starts_with('"')) else {
        return Ok(None);
    };
    let quoted = v.get();
    let inner = &quoted[1..quoted.len() - 1];
    if !inner.contains('\\') {
        return Ok(Some((v, Cow::Borrowed(inner))));
    }
    let text: String = serde_json::from_str(quoted).map_err(|_| Unsuited)?;
    Ok(Some((v, Cow::Owned(text))))
}

// === impl Splice ===

impl<'a> Splice<'a> {
    fn new(raw: &'a str) -> Self {
        Splice {
            raw,
            edits: Vec::new(),
        }
    }

    /// Replaces the string value `v` (a slice of `raw`) with the JSON string of `text`.
    fn replace(&mut self, v: &RawValue, text: &str) {
        let start = v.get().as_ptr() as usize - self.raw.as_ptr() as usize;
        let range = start..start + v.get().len();
        debug_assert!(self.raw.get(range.clone()) == Some(v.get()));
        // Serializing a `str` cannot fail.
        let quoted = serde_json::to_string(text).unwrap_or_default();
        self.edits.push((range, quoted));
    }

    /// The spliced body, or `Unchanged` when nothing was replaced.
    fn finish<S>(mut self, stats: S) -> RawPass<S> {
        if self.edits.is_empty() {
            return RawPass::Unchanged(stats);
        }
        // The walkers visit fields in their own order, not the document's.
        self.edits.sort_unstable_by_key(|(r, _)| r.start);
        let grow: usize = self.edits.iter().map(|(_, s)| s.len()).sum();
        let mut out = Vec::with_capacity(self.raw.len() + grow);
        let mut last = 0;
        for (range, text) in &self.edits {
            out.extend_from_slice(&self.raw.as_bytes()[last..range.start]);
            out.extend_from_slice(text.as_bytes());
            last = range.end;
        }
        out.extend_from_slice(&self.raw.as_bytes()[last..]);
        RawPass::Rewritten(out, stats)
    }
}
