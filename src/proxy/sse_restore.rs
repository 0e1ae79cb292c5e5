//! Restoring protected spans in event streams (PRODUCT.md §6): one streaming restorer per
//! text channel — each choice's `delta.content` and each tool call's
//! `function.arguments` — so a token split across any number of deltas is restored,
//! holding back at most a possible token prefix. What a channel still holds is emitted
//! before its choice's `finish_reason`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::protect::{ChannelKind, Protector, RestoreStats, StreamRestorer};

/// Per-stream restore state.
pub struct SseRestore {
    protector: Arc<Protector>,
    content: BTreeMap<u64, StreamRestorer>,
    args: BTreeMap<(u64, u64), StreamRestorer>,
    /// Counts of restored and failed tokens.
    pub stats: RestoreStats,
}

// === impl SseRestore ===

impl SseRestore {
    /// Restore state for one stream.
    pub fn new(protector: Arc<Protector>) -> Self {
        SseRestore {
            protector,
            content: BTreeMap::new(),
            args: BTreeMap::new(),
            stats: RestoreStats::default(),
        }
    }

    /// Rewrites one chat-completion chunk in place; true when it changed.
    pub fn rewrite(&mut self, chunk: &mut Value) -> bool {
        let mut changed = false;
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            return false;
        };
        for choice in choices {
            let ci = choice["index"].as_u64().unwrap_or(0);
            let finishing = !choice["finish_reason"].is_null();
            let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) else {
                continue;
            };
            let p = &self.protector;
            let mut text = match delta.get("content").and_then(Value::as_str) {
                Some(t) => {
                    let r = self
                        .content
                        .entry(ci)
                        .or_insert_with(|| p.stream_restorer(ChannelKind::Content));
                    r.push(t, &mut self.stats)
                }
                None => String::new(),
            };
            if finishing {
                if let Some(mut r) = self.content.remove(&ci) {
                    text.push_str(&r.finish(&mut self.stats));
                }
            }
            if delta.contains_key("content") || !text.is_empty() {
                let old = delta
                    .get("content")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if old != text {
                    delta.insert("content".into(), Value::String(text));
                    changed = true;
                }
            }
            if let Some(calls) = delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for call in calls {
                    let ti = call["index"].as_u64().unwrap_or(0);
                    if let Some(a) = call.pointer_mut("/function/arguments") {
                        if let Some(t) = a.as_str() {
                            let r = self
                                .args
                                .entry((ci, ti))
                                .or_insert_with(|| p.stream_restorer(ChannelKind::ToolArguments));
                            let out = r.push(t, &mut self.stats);
                            if out != t {
                                *a = Value::String(out);
                                changed = true;
                            }
                        }
                    }
                }
            }
            if finishing {
                let pending: Vec<(u64, u64)> =
                    self.args.keys().filter(|k| k.0 == ci).copied().collect();
                for key in pending {
                    if let Some(mut r) = self.args.remove(&key) {
                        let rest = r.finish(&mut self.stats);
                        if !rest.is_empty() {
                            let calls = delta
                                .entry("tool_calls")
                                .or_insert_with(|| Value::Array(Vec::new()));
                            if let Some(arr) = calls.as_array_mut() {
                                arr.push(serde_json::json!({ "index": key.1, "function": { "arguments": rest } }));
                                changed = true;
                            }
                        }
                    }
                }
            }
        }
        changed
    }

    /// Chunks carrying whatever is still held (a stream that ended without finish_reason).
    pub fn flush(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        for (ci, mut r) in std::mem::take(&mut self.content) {
            let rest = r.finish(&mut self.stats);
            if !rest.is_empty() {
                out.push(serde_json::json!({ "object": "chat.completion.chunk", "choices": [{ "index": ci, "delta": { "content": rest }, "finish_reason": null }] }));
            }
        }
        for ((ci, ti), mut r) in std::mem::take(&mut self.args) {
            let rest = r.finish(&mut self.stats);
            if !rest.is_empty() {
                out.push(serde_json::json!({ "object": "chat.completion.chunk", "choices": [{ "index": ci, "delta": { "tool_calls": [{ "index": ti, "function": { "arguments": rest } }] }, "finish_reason": null }] }));
            }
        }
        out
    }
}
