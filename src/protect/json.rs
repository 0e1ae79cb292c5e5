//! Where OpenAI-shaped payloads keep text: the request fields that are protected and the
//! response fields that are restored. Unknown fields are left alone.
//!
//! Request (chat completions, completions, responses, embeddings): `messages[].content`
//! (string, or the `text` of content parts) for every role, tool results included;
//! `messages[].tool_calls[].function.arguments` and legacy `function_call.arguments`
//! (JSON text: the string values, object keys and integer numbers inside are protected and
//! the text re-encoded, so it stays valid JSON); `input` (string, array of strings, or
//! responses-API items: message `content`, `function_call` `arguments`,
//! `function_call_output` `output`); `instructions`; `prompt`; `user`.
//!
//! Response: `choices[].message.content` / `.refusal` / `.reasoning_content`,
//! `choices[].message.tool_calls[].function.arguments`, `.function_call.arguments`,
//! `choices[].text`; responses-API `output[]` message parts' `text` / `refusal`,
//! `function_call` `arguments`, reasoning `summary[].text`, and `output_text`.

use serde_json::{Map, Value};

use super::error::ProtectError;
use super::{ChannelKind, ProtectStats, Protector, RestoreStats};

// === impl Protector ===

impl Protector {
    /// Rewrites a chat/completions/responses/embeddings request body in place (see the
    /// module docs for the fields). Returns counts per detector. On error the body may be
    /// partly rewritten and must not be sent.
    pub fn protect_request(&self, body: &mut Value) -> Result<ProtectStats, ProtectError> {
        let mut stats = ProtectStats::default();
        let Some(obj) = body.as_object_mut() else {
            return Ok(stats);
        };
        if let Some(messages) = obj.get_mut("messages").and_then(Value::as_array_mut) {
            for m in messages.iter_mut().filter_map(Value::as_object_mut) {
                self.protect_item(m, &mut stats)?;
            }
        }
        if let Some(input) = obj.get_mut("input") {
            match input {
                Value::Array(items) => {
                    for item in items {
                        match item {
                            Value::Object(m) => self.protect_item(m, &mut stats)?,
                            other => self.protect_string(other, &mut stats)?,
                        }
                    }
                }
                other => self.protect_string(other, &mut stats)?,
            }
        }
        for key in ["instructions", "user"] {
            if let Some(v) = obj.get_mut(key) {
                self.protect_string(v, &mut stats)?;
            }
        }
        match obj.get_mut("prompt") {
            Some(Value::Array(items)) => {
                for item in items {
                    self.protect_string(item, &mut stats)?;
                }
            }
            Some(v) => self.protect_string(v, &mut stats)?,
            None => {}
        }
        Ok(stats)
    }

    /// A chat message or a responses-API input item.
    fn protect_item(
        &self,
        m: &mut Map<String, Value>,
        stats: &mut ProtectStats,
    ) -> Result<(), ProtectError> {
        for key in ["content", "output"] {
            if let Some(v) = m.get_mut(key) {
                self.protect_content(v, stats)?;
            }
        }
        if let Some(v) = m.get_mut("text") {
            self.protect_string(v, stats)?;
        }
        if let Some(v) = m.get_mut("arguments") {
            self.protect_arguments(v, stats)?;
        }
        if let Some(v) = m
            .get_mut("function_call")
            .and_then(|f| f.get_mut("arguments"))
        {
            self.protect_arguments(v, stats)?;
        }
        if let Some(calls) = m.get_mut("tool_calls").and_then(Value::as_array_mut) {
            for call in calls {
                if let Some(v) = call
                    .get_mut("function")
                    .and_then(|f| f.get_mut("arguments"))
                {
                    self.protect_arguments(v, stats)?;
                }
            }
        }
        Ok(())
    }

    /// Content: a string, or an array of parts whose `text` is protected.
    fn protect_content(&self, v: &mut Value, stats: &mut ProtectStats) -> Result<(), ProtectError> {
        match v {
            Value::Array(parts) => {
                for part in parts {
                    match part.get_mut("text") {
                        Some(text) => self.protect_string(text, stats)?,
                        None => self.protect_string(part, stats)?,
                    }
                }
                Ok(())
            }
            other => self.protect_string(other, stats),
        }
    }

    fn protect_string(&self, v: &mut Value, stats: &mut ProtectStats) -> Result<(), ProtectError> {
        if let Value::String(s) = v {
            if let Some(new) = self.protect_str(s, stats)? {
                *s = new;
            }
        }
        Ok(())
    }

    /// Tool-call arguments: JSON text in a string. Protected inside, re-encoded only when
    /// something changed; text that is not JSON is protected as plain text.
    fn protect_arguments(
        &self,
        v: &mut Value,
        stats: &mut ProtectStats,
    ) -> Result<(), ProtectError> {
        if let Value::String(s) = v {
            if let Some(new) = self.protect_arguments_str(s, stats)? {
                *s = new;
            }
        }
        Ok(())
    }

    /// [`protect_arguments`](Self::protect_arguments) of the text itself: `None` when
    /// nothing changed.
    pub(super) fn protect_arguments_str(
        &self,
        s: &str,
        stats: &mut ProtectStats,
    ) -> Result<Option<String>, ProtectError> {
        match serde_json::from_str::<Value>(s) {
            Ok(mut parsed) => {
                if !self.protect_value(&mut parsed, stats)? {
                    return Ok(None);
                }
                serde_json::to_string(&parsed)
                    .map(Some)
                    .map_err(|_| ProtectError::ArgumentsEncoding)
            }
            Err(_) => self.protect_str(s, stats),
        }
    }

    /// Protects every string, object key and integer inside a JSON value; true if
    /// anything changed. An integer that is, say, a card number becomes a token string.
    fn protect_value(&self, v: &mut Value, stats: &mut ProtectStats) -> Result<bool, ProtectError> {
        match v {
            Value::String(s) => Ok(match self.protect_str(s, stats)? {
                Some(new) => {
                    *s = new;
                    true
                }
                None => false,
            }),
            Value::Number(n) if n.is_u64() || n.is_i64() => {
                let text = n.to_string();
                Ok(match self.protect_str(&text, stats)? {
                    Some(new) => {
                        *v = Value::String(new);
                        true
                    }
                    None => false,
                })
            }
            Value::Array(items) => {
                let mut changed = false;
                for item in items {
                    changed |= self.protect_value(item, stats)?;
                }
                Ok(changed)
            }
            Value::Object(map) => {
                let mut changed = false;
                let old = std::mem::take(map);
                for (key, mut value) in old {
                    changed |= self.protect_value(&mut value, stats)?;
                    let key = match self.protect_str(&key, stats)? {
                        Some(new) => {
                            changed = true;
                            new
                        }
                        None => key,
                    };
                    map.insert(key, value);
                }
                Ok(changed)
            }
            _ => Ok(false),
        }
    }

    /// Restores tokens in a non-streaming response body in place (see the module docs
    /// for the fields).
    pub fn restore_response(&self, body: &mut Value) -> RestoreStats {
        self.restore_response_as(body, ChannelKind::Content)
    }

    /// Like [`restore_response`](Self::restore_response), with message content restored
    /// as `content` (pass [`ChannelKind::ToolArguments`] when the request asked for JSON
    /// output with `response_format`). Arguments are always JSON text.
    pub fn restore_response_as(&self, body: &mut Value, content: ChannelKind) -> RestoreStats {
        let mut st = RestoreStats::default();
        if let Some(choices) = body.get_mut("choices").and_then(Value::as_array_mut) {
            for choice in choices {
                if let Some(m) = choice.get_mut("message") {
                    self.restore_message(m, content, &mut st);
                }
                self.restore_field(choice.get_mut("text"), content, &mut st);
            }
        }
        if let Some(output) = body.get_mut("output").and_then(Value::as_array_mut) {
            for item in output {
                self.restore_message(item, content, &mut st);
                if let Some(parts) = item.get_mut("summary").and_then(Value::as_array_mut) {
                    for part in parts {
                        self.restore_field(part.get_mut("text"), ChannelKind::Content, &mut st);
                    }
                }
            }
        }
        self.restore_field(body.get_mut("output_text"), content, &mut st);
        st
    }

    fn restore_message(&self, m: &mut Value, content: ChannelKind, st: &mut RestoreStats) {
        match m.get_mut("content") {
            Some(Value::Array(parts)) => {
                for part in parts {
                    self.restore_field(part.get_mut("text"), content, st);
                    self.restore_field(part.get_mut("refusal"), ChannelKind::Content, st);
                }
            }
            other => self.restore_field(other, content, st),
        }
        for key in ["refusal", "reasoning_content"] {
            self.restore_field(m.get_mut(key), ChannelKind::Content, st);
        }
        let args = ChannelKind::ToolArguments;
        self.restore_field(m.get_mut("arguments"), args, st);
        self.restore_field(m.pointer_mut("/function_call/arguments"), args, st);
        if let Some(calls) = m.get_mut("tool_calls").and_then(Value::as_array_mut) {
            for call in calls {
                self.restore_field(call.pointer_mut("/function/arguments"), args, st);
            }
        }
    }

    fn restore_field(&self, v: Option<&mut Value>, kind: ChannelKind, st: &mut RestoreStats) {
        if let Some(Value::String(s)) = v {
            if memchr::memmem::find(s.as_bytes(), b"PII.").is_some() {
                *s = self.restore_text_as(s, kind, st);
            }
        }
    }
}
