//! Parsing one policy file (TOML, or JSON for `*.json`) into the model, turning the
//! parsers' errors into located [`PolicyError`]s with a message a person can act on.

use std::path::Path;

use crate::policy::load::PolicyError;
use crate::policy::locate::{line_col, SourceFile, SpanNode};
use crate::policy::model::PolicyFile;

/// Keys whose values are durations (strings with a unit).
const DURATION_KEYS: &[&str] = &[
    "connect",
    "first_byte",
    "idle",
    "backoff",
    "max_backoff",
    "deadline",
    "window",
    "p99_latency",
    "open_for",
    "handshake_timeout",
    "header_read_timeout",
    "idle_timeout",
    "tunnel_idle_timeout",
];

/// Parses `bytes` read from `path`. JSON when the name ends in `.json`, TOML otherwise.
pub(super) fn parse_file(
    path: &Path,
    bytes: &[u8],
) -> Result<(PolicyFile, SourceFile), PolicyError> {
    // A BOM is not part of the text: editors do not show it, so it is no column either.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = String::from_utf8_lossy(&bytes[..e.valid_up_to()]);
            let (line, column) = line_col(&valid, valid.len());
            return Err(PolicyError {
                file: path.to_path_buf(),
                line,
                column,
                message: "the file is not valid UTF-8".into(),
                hint: Some("save policy files as UTF-8".into()),
            });
        }
    };
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let (tree, result) = if is_json {
        (SpanNode::from_json(text), parse_json(text))
    } else {
        (SpanNode::from_toml(text), parse_toml(text))
    };
    let source = SourceFile {
        path: path.to_path_buf(),
        text: text.to_owned(),
        tree,
    };
    match result {
        Ok(model) => Ok((model, source)),
        Err(raw) => {
            let (offset, key) = match &source.tree {
                None => (raw.offset, None),
                Some(tree) => {
                    let (start, key, exact) = tree.innermost(raw.offset);
                    // serde_json places some errors just past the value they are about
                    // (after a string's closing quote); "missing field" at the `}`.
                    let before = raw.offset.checked_sub(1).map(|o| tree.innermost(o));
                    let (start, key) = match before {
                        Some((s, k, true))
                            if !exact && !raw.message.starts_with("missing field") =>
                        {
                            (s, k)
                        }
                        _ => (start, key),
                    };
                    (if raw.data_error { start } else { raw.offset }, key)
                }
            };
            let (message, hint) = explain(&raw.message, key);
            let (line, column) = source.line_col(offset);
            Err(PolicyError {
                file: path.to_path_buf(),
                line,
                column,
                message,
                hint,
            })
        }
    }
}

/// A parser error before it is explained and located.
struct RawError {
    message: String,
    offset: usize,
    /// The text is well-formed but does not fit the model: worth sharpening the offset
    /// to the start of the key or value it is about.
    data_error: bool,
}

fn parse_toml(text: &str) -> Result<PolicyFile, RawError> {
    toml::from_str(text).map_err(|e| RawError {
        message: e.message().to_owned(),
        offset: e.span().map_or(0, |s| s.start),
        // toml's spans are already exact for data errors.
        data_error: false,
    })
}

fn parse_json(text: &str) -> Result<PolicyFile, RawError> {
    serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        let message = match full.rfind(" at line ") {
            Some(i) if e.line() > 0 => full[..i].to_owned(),
            _ => full,
        };
        RawError {
            message,
            offset: json_offset(text, e.line(), e.column()),
            data_error: e.is_data(),
        }
    })
}

/// Byte offset of serde_json's (1-based line, 1-based byte column; 0 at a line start).
fn json_offset(text: &str, line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        text.match_indices('\n')
            .nth(line - 2)
            .map_or(text.len(), |(i, _)| i + 1)
    };
    (line_start + column.saturating_sub(1)).min(text.len())
}

/// Turns a serde message into (message, hint). `key` is the key the error is at, if known.
pub(super) fn explain(raw: &str, key: Option<&str>) -> (String, Option<String>) {
    let ticked = backticked(raw);
    if raw.starts_with("unknown field") {
        let Some((bad, valid)) = ticked.split_first() else {
            return (raw.to_owned(), None);
        };
        let hint = if valid.is_empty() {
            "this table takes no keys".to_owned()
        } else {
            format!(
                "{}valid keys here: {}",
                did_you_mean(bad, valid),
                valid.join(", ")
            )
        };
        return (format!("unknown key `{bad}`"), Some(hint));
    }
    if raw.starts_with("unknown variant") {
        let Some((bad, valid)) = ticked.split_first() else {
            return (raw.to_owned(), None);
        };
        let hint = format!(
            "{}expected one of: {}",
            did_you_mean(bad, valid),
            valid.join(", ")
        );
        return (format!("unknown value \"{bad}\""), Some(hint));
    }
    if raw.starts_with("missing field") {
        let field = ticked.first().cloned().unwrap_or_default();
        return (
            format!("missing required key `{field}`"),
            missing_hint(&field),
        );
    }
    if raw.contains("untagged enum SecretSource") {
        return (
            "a key source must have exactly one of `env` or `file`".into(),
            Some("write api_key = { env = \"OPENAI_API_KEY\" } or api_key = { file = \"keys/openai.key\" }".into()),
        );
    }
    let hint = if raw.starts_with("duration ")
        || (raw.contains("expected a string") && key.is_some_and(|k| DURATION_KEYS.contains(&k)))
    {
        Some(
            "durations are strings with a unit: \"250ms\", \"30s\", \"5m\", \"1h\", \"1m30s\""
                .into(),
        )
    } else if raw.starts_with("size ") {
        Some(
            "sizes are a number of bytes or a string with a unit: \"64KiB\", \"32MiB\", \"10MB\""
                .into(),
        )
    } else if raw.contains("expected a sequence") {
        Some(match key {
            Some(k @ ("allow" | "provider" | "route")) => {
                format!("write [[{k}]] with double brackets: each entry is one table of an array")
            }
            _ => "this key takes a list, e.g. [\"a\", \"b\"]".into(),
        })
    } else if raw.contains("invalid type: sequence") && raw.contains("expected struct") {
        Some("this is a single table: write [name] with single brackets, once".into())
    } else {
        None
    };
    (raw.to_owned(), hint)
}

fn missing_hint(field: &str) -> Option<String> {
    let h = match field {
        "name" => "every [[allow]], [[provider]] and [[route]] entry needs a unique name, e.g. name = \"openai\"",
        "base_url" => "e.g. base_url = \"https://api.openai.com/v1\"",
        "targets" => "e.g. targets = [{ provider = \"openai\", model = \"gpt-4o-mini\" }]",
        "provider" => "each target names a [[provider]], e.g. { provider = \"openai\" }",
        "id" => "each key needs an id, e.g. { id = \"k1\", env = \"LLM_EGRESS_PROTECT_KEY\" }",
        "regex" => "e.g. { name = \"customer_id\", regex = \"CUST-[0-9]{8}\" }",
        _ => return None,
    };
    Some(h.to_owned())
}

/// The names in backticks in a serde message, in order.
fn backticked(raw: &str) -> Vec<String> {
    raw.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// "did you mean `x`? " when one valid name is close to `bad`, else "".
fn did_you_mean(bad: &str, valid: &[String]) -> String {
    let bad_l = bad.to_ascii_lowercase();
    valid
        .iter()
        .map(|v| (edit_distance(&bad_l, &v.to_ascii_lowercase()), v))
        .filter(|(d, v)| *d <= 2.max(v.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| format!("did you mean `{v}`? "))
        .unwrap_or_default()
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_unknown_keys_with_suggestion() {
        let (m, h) = explain(
            "unknown field `pinz`, expected one of `name`, `pins`, `mode`",
            None,
        );
        assert_eq!(m, "unknown key `pinz`");
        assert_eq!(
            h.as_deref(),
            Some("did you mean `pins`? valid keys here: name, pins, mode")
        );
        let (_, h) = explain("unknown field `zzzzzz`, expected `connect`", None);
        assert_eq!(h.as_deref(), Some("valid keys here: connect"));
    }

    #[test]
    fn explains_variants_and_durations() {
        let (m, h) = explain(
            "unknown variant `Tunnel`, expected `inspect` or `tunnel`",
            None,
        );
        assert_eq!(m, "unknown value \"Tunnel\"");
        assert_eq!(
            h.as_deref(),
            Some("did you mean `tunnel`? expected one of: inspect, tunnel")
        );
        let (_, h) = explain(
            "invalid type: integer `30`, expected a string",
            Some("window"),
        );
        assert!(h.unwrap_or_default().starts_with("durations are strings"));
        let (_, h) = explain(
            "invalid type: integer `30`, expected a string",
            Some("name"),
        );
        assert_eq!(h, None);
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("pinz", "pins"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("base_ulr", "base_url"), 2);
    }

    #[test]
    fn json_offsets() {
        let t = "{\n  \"a\": 1\n}";
        assert_eq!(json_offset(t, 2, 3), 4);
        assert_eq!(json_offset(t, 1, 0), 0);
        assert_eq!(json_offset(t, 9, 9), t.len());
    }
}
