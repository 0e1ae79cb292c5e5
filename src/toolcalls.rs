//! Tool-call validation (PRODUCT.md §5 step 7, `[tool_calls]`): every tool call in a
//! response must name a tool the request declared, and its `arguments` must be JSON that
//! matches that tool's `parameters` schema. Compiled schemas are cached across requests by
//! content hash, so a fleet of requests declaring the same tools compiles each once.
//!
//! Error messages name the tool, the JSON pointer and the failed keyword, never argument
//! values: they go into audit lines and error bodies.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::openai::request::ToolDecl;

/// Compiled-schema cache shared by all requests.
pub struct SchemaCache {
    cache: moka::sync::Cache<u64, Arc<jsonschema::Validator>>,
}

impl Default for SchemaCache {
    fn default() -> Self {
        SchemaCache {
            cache: moka::sync::Cache::new(4096),
        }
    }
}

// === impl SchemaCache ===

impl SchemaCache {
    /// Validates one call against the declared tools.
    pub fn check(&self, decls: &[ToolDecl], name: &str, arguments: &str) -> Result<(), String> {
        let Some(decl) = decls.iter().find(|d| d.name == name) else {
            return Err(format!("tool {name:?} was not declared in the request"));
        };
        let args: Value = serde_json::from_str(if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        })
        .map_err(|e| {
            format!(
                "tool {name:?}: arguments are not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        let Some(schema) = &decl.parameters else {
            return Ok(());
        };
        let validator = self
            .validator(schema)
            .map_err(|e| format!("tool {name:?}: its parameters schema does not compile: {e}"))?;
        if let Some(err) = validator.iter_errors(&args).next() {
            let path = err.instance_path().to_string();
            let detail = match err.kind() {
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    format!("missing required property {property}")
                }
                k => format!("fails \"{}\"", k.keyword()),
            };
            let at = if path.is_empty() {
                "/".to_owned()
            } else {
                path
            };
            return Err(format!("tool {name:?}: arguments at {at} {detail}"));
        }
        Ok(())
    }

    fn validator(&self, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        schema.to_string().hash(&mut h);
        let key = h.finish();
        self.cache
            .try_get_with(key, || {
                jsonschema::validator_for(schema)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| e.to_string())
    }

    /// Validates the tool calls of a non-streaming chat / responses body.
    pub fn check_response(&self, decls: &[ToolDecl], body: &Value) -> Result<(), String> {
        for choice in body["choices"].as_array().into_iter().flatten() {
            for call in choice["message"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let f = &call["function"];
                self.check(
                    decls,
                    f["name"].as_str().unwrap_or_default(),
                    f["arguments"].as_str().unwrap_or_default(),
                )?;
            }
        }
        for item in body["output"].as_array().into_iter().flatten() {
            if item["type"] == "function_call" {
                self.check(
                    decls,
                    item["name"].as_str().unwrap_or_default(),
                    item["arguments"].as_str().unwrap_or_default(),
                )?;
            }
        }
        Ok(())
    }
}

/// Reports an invalid call in `on_invalid = "log"` mode (the message holds no arguments).
pub type Reporter = Box<dyn Fn(&str) + Send>;

/// Streaming validation: content deltas pass at once; from the first tool-call delta of a
/// response, frames are held until the calls are complete (a `finish_reason` or the end
/// of the stream), validated, then released together.
pub struct StreamToolCheck {
    decls: Arc<Vec<ToolDecl>>,
    cache: Arc<SchemaCache>,
    calls: BTreeMap<(u64, u64), (String, String)>,
    held: Vec<Bytes>,
    log: Option<Reporter>,
}

// === impl StreamToolCheck ===

impl StreamToolCheck {
    /// A checker for one response.
    pub fn new(decls: Arc<Vec<ToolDecl>>, cache: Arc<SchemaCache>) -> Self {
        StreamToolCheck {
            decls,
            cache,
            calls: BTreeMap::new(),
            held: Vec::new(),
            log: None,
        }
    }

    /// `on_invalid = "log"`: report invalid calls through `report` and let them pass.
    pub fn log_only(mut self, report: Reporter) -> Self {
        self.log = Some(report);
        self
    }

    /// Whether frames are being held.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Observes one chunk (parsed) with its raw frame. Returns frames to release now.
    pub fn observe(&mut self, chunk: &Value, raw: Bytes) -> Result<Vec<Bytes>, String> {
        let mut saw_call = false;
        let mut finished = false;
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let ci = choice["index"].as_u64().unwrap_or(0);
            for tc in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                saw_call = true;
                let ti = tc["index"].as_u64().unwrap_or(0);
                let entry = self.calls.entry((ci, ti)).or_default();
                if let Some(n) = tc["function"]["name"].as_str() {
                    entry.0.push_str(n);
                }
                if let Some(a) = tc["function"]["arguments"].as_str() {
                    entry.1.push_str(a);
                }
            }
            if !choice["finish_reason"].is_null() {
                finished = true;
            }
        }
        if !saw_call && !self.holding() {
            return Ok(vec![raw]);
        }
        self.held.push(raw);
        if finished {
            return self.flush();
        }
        Ok(Vec::new())
    }

    /// Observes a chunk that was not parsed (no tool calls in it) while holding.
    pub fn observe_plain(&mut self, json: &str, raw: Bytes) -> Result<Vec<Bytes>, String> {
        match serde_json::from_str::<Value>(json) {
            Ok(v) => self.observe(&v, raw),
            Err(_) => {
                self.held.push(raw);
                Ok(Vec::new())
            }
        }
    }

    /// Validates every pending call and releases the held frames.
    pub fn flush(&mut self) -> Result<Vec<Bytes>, String> {
        for (name, args) in std::mem::take(&mut self.calls).values() {
            if let Err(msg) = self.cache.check(&self.decls, name, args) {
                match &self.log {
                    Some(report) => report(&msg),
                    None => return Err(msg),
                }
            }
        }
        Ok(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decls() -> Vec<ToolDecl> {
        vec![ToolDecl {
            name: "get_weather".into(),
            parameters: Some(serde_json::json!({
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"]
            })),
        }]
    }

    #[test]
    fn validates_names_json_and_schema_without_leaking_values() {
        let c = SchemaCache::default();
        let d = decls();
        assert!(c.check(&d, "get_weather", r#"{"city":"Paris"}"#).is_ok());
        assert!(c
            .check(&d, "rm_rf", "{}")
            .unwrap_err()
            .contains("not declared"));
        let e = c.check(&d, "get_weather", r#"{"days":3}"#).unwrap_err();
        assert!(
            e.contains("missing required property") && e.contains("city"),
            "{e}"
        );
        let e = c
            .check(
                &d,
                "get_weather",
                r#"{"city":"SECRET-VALUE","days":"many"}"#,
            )
            .unwrap_err();
        assert!(
            e.contains("/days")
                && e.contains("type")
                && !e.contains("SECRET")
                && !e.contains("many"),
            "{e}"
        );
        assert!(c
            .check(&d, "get_weather", "{not json")
            .unwrap_err()
            .contains("not valid JSON"));
    }

    #[test]
    fn stream_holds_tool_deltas_until_finish() {
        let cache = Arc::new(SchemaCache::default());
        let mut s = StreamToolCheck::new(Arc::new(decls()), cache);
        let content = serde_json::json!({"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]});
        assert_eq!(
            s.observe(&content, Bytes::from_static(b"c")).unwrap().len(),
            1
        );
        let d1 = serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"get_weather","arguments":"{\"ci"}}]},"finish_reason":null}]});
        let d2 = serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\":\"Oslo\"}"}}]},"finish_reason":null}]});
        let fin =
            serde_json::json!({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]});
        assert!(s.observe(&d1, Bytes::from_static(b"1")).unwrap().is_empty());
        assert!(s.observe(&d2, Bytes::from_static(b"2")).unwrap().is_empty());
        assert_eq!(s.observe(&fin, Bytes::from_static(b"f")).unwrap().len(), 3);
    }
}
