//! Error bodies: upstream errors normalized to the OpenAI shape, and the proxy's own.
//!
//! Every error a client sees has the shape the official SDKs parse:
//! `{"error":{"message","type","param","code"}}`. Upstream errors in other shapes keep
//! their original detail under `error.upstream`.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Map, Value};

use super::sse::encode_data;

/// The `type` of every error the proxy itself produces.
pub const PROXY_ERROR_TYPE: &str = "llm_egress_error";

/// The most of a non-JSON upstream body kept under `error.upstream`.
pub const MAX_UPSTREAM_COPY: usize = 2048;

/// The most of a plain-text upstream body used as the `message`.
const MAX_TEXT_MESSAGE: usize = 512;

/// The most of an HTML `<title>` used in the `message`.
const MAX_TITLE: usize = 200;

/// How far into an HTML page the `<title>` is looked for.
const MAX_TITLE_SEARCH: usize = 16 * 1024;

/// Normalizes an upstream error response to `{"error":{"message","type","param","code",
/// "upstream"}}`.
///
/// - OpenAI shape (`error` is an object with a string `message`, and not Gemini's):
///   returned unchanged.
/// - Anthropic `{"type":"error","error":{"type","message"}}`: the error type becomes both
///   `type` and `code`.
/// - Gemini `{"error":{"code","message","status"}}`, also inside a one-element list:
///   `code` is the status name (`RESOURCE_EXHAUSTED`), `type` derives from the HTTP status.
/// - Other JSON with a string `error`, `message` or `detail`: that string is the message.
/// - HTML: the message names the page `<title>`; the page itself (truncated) is only kept
///   under `upstream`. Plain text: the (truncated) text is the message.
/// - Empty: the message comes from the status code's reason phrase.
///
/// `upstream` holds the parsed JSON, or up to [`MAX_UPSTREAM_COPY`] bytes of other bodies.
pub fn normalize_error(status: u16, content_type: Option<&str>, body: &[u8]) -> Value {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        let message = format!("upstream returned HTTP {}", status_line(status));
        return error_value(message, type_for_status(status), Value::Null, Value::Null);
    }
    if let Ok(value) = serde_json::from_str::<Value>(trimmed) {
        return normalize_json(status, value);
    }
    let copy = Value::String(truncate(trimmed, MAX_UPSTREAM_COPY).to_owned());
    let message = if is_html(content_type, trimmed) {
        match html_title(trimmed) {
            Some(title) => format!("upstream returned HTTP {status} (HTML page: {title})"),
            None => format!("upstream returned HTTP {} (HTML page)", status_line(status)),
        }
    } else {
        truncate(trimmed, MAX_TEXT_MESSAGE).to_owned()
    };
    error_value(message, type_for_status(status), Value::Null, copy)
}

/// Whether an upstream error is worth another attempt: 429, any 5xx (529 included), or
/// Anthropic's `overloaded_error` (which also arrives inside streams with status 200).
pub fn is_retryable_upstream(status: u16, normalized: &Value) -> bool {
    if status == 429 || (500..=599).contains(&status) {
        return true;
    }
    let error = &normalized["error"];
    [&error["type"], &error["code"]]
        .iter()
        .any(|v| v.as_str() == Some("overloaded_error"))
}

/// The proxy's own error body:
/// `{"error":{"message":…,"type":"llm_egress_error","param":null,"code":…}}`.
pub fn proxy_error_body(code: &str, message: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + code.len() + 80);
    put_proxy_error(&mut out, code, message, None);
    out.freeze()
}

/// The proxy's own error body with the last upstream error kept under `error.upstream`
/// (for `all_targets_unavailable`).
pub fn proxy_error_body_with_upstream(code: &str, message: &str, upstream: &Value) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + code.len() + 160);
    put_proxy_error(&mut out, code, message, Some(upstream));
    out.freeze()
}

/// The proxy's error as the final event of a stream: `data: {"error":{…}}\n\n`, the
/// shape the official SDKs raise on.
pub fn stream_error_event(code: &str, message: &str) -> Bytes {
    encode_data(&proxy_error_body(code, message))
}

/// The OpenAI error `type` that best fits an HTTP status.
pub fn type_for_status(status: u16) -> &'static str {
    match status {
        400 | 404 | 409 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "upstream_error",
    }
}

/// `"503 Service Unavailable"`, or just the number for a status without a known phrase.
fn status_line(status: u16) -> String {
    let phrase = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Site Overloaded",
        _ => return status.to_string(),
    };
    format!("{status} {phrase}")
}

/// Normalizes a JSON error body.
fn normalize_json(status: u16, value: Value) -> Value {
    let fallback_type = type_for_status(status);
    // Gemini's list form: one element holding the object form.
    let inner = match &value {
        Value::Array(items) if items.len() == 1 => Some(&items[0]),
        _ => None,
    };
    let object = inner.unwrap_or(&value);
    let error = &object["error"];
    if object["type"] == "error" && error.is_object() {
        // Anthropic.
        let kind = error["type"].as_str().unwrap_or(fallback_type).to_owned();
        let message = str_or(&error["message"], || format!("upstream {kind}"));
        return error_value(message, &kind, Value::String(kind.clone()), value);
    }
    if let Some(gemini_status) = error["status"].as_str().filter(|_| error["type"].is_null()) {
        let message = str_or(&error["message"], || gemini_status.to_owned());
        let code = Value::String(gemini_status.to_owned());
        return error_value(message, fallback_type, code, value);
    }
    if error["message"].is_string() && inner.is_none() {
        return value; // already the OpenAI shape
    }
    // Ollama `{"error":"…"}`, Mistral and vLLM top-level `message`, FastAPI `detail`, a
    // bare JSON string.
    let message = [
        &error["message"],
        error,
        &object["message"],
        &object["detail"],
        object,
    ]
    .into_iter()
    .find_map(Value::as_str)
    .map(str::to_owned)
    .unwrap_or_else(|| format!("upstream returned HTTP {}", status_line(status)));
    let first_str = |key: &str| {
        [&error[key], &object[key]]
            .into_iter()
            .find_map(Value::as_str)
    };
    let kind = first_str("type").unwrap_or(fallback_type).to_owned();
    let code = first_str("code").map_or(Value::Null, |c| Value::String(c.to_owned()));
    error_value(message, &kind, code, value)
}

/// `value` as a string, or the fallback.
fn str_or(value: &Value, fallback: impl FnOnce() -> String) -> String {
    value.as_str().map_or_else(fallback, str::to_owned)
}

/// Builds the normalized body (keys in the order the SDKs document).
fn error_value(message: String, kind: &str, code: Value, upstream: Value) -> Value {
    let mut error = Map::new();
    error.insert("message".to_owned(), Value::String(message));
    error.insert("type".to_owned(), Value::String(kind.to_owned()));
    error.insert("param".to_owned(), Value::Null);
    error.insert("code".to_owned(), code);
    error.insert("upstream".to_owned(), upstream);
    json!({ "error": error })
}

/// Writes the proxy's error object; strings are escaped by serde_json.
fn put_proxy_error(out: &mut BytesMut, code: &str, message: &str, upstream: Option<&Value>) {
    out.put_slice(b"{\"error\":{\"message\":");
    put_json(out, message);
    out.put_slice(b",\"type\":\"llm_egress_error\",\"param\":null,\"code\":");
    put_json(out, code);
    if let Some(upstream) = upstream {
        out.put_slice(b",\"upstream\":");
        put_json(out, upstream);
    }
    out.put_slice(b"}}");
}

/// Appends `value` as JSON. Serializing a string or a `Value` into memory cannot fail.
fn put_json<T: serde::Serialize + ?Sized>(out: &mut BytesMut, value: &T) {
    let _ = serde_json::to_writer(out.writer(), value);
}

/// Whether a non-JSON body is an HTML page (by content type or by its first tag).
fn is_html(content_type: Option<&str>, text: &str) -> bool {
    let by_type = content_type.is_some_and(|ct| {
        let ct = ct.trim_start().as_bytes();
        ct.len() >= 9 && ct[..9].eq_ignore_ascii_case(b"text/html")
    });
    let head = text.as_bytes();
    let starts =
        |tag: &[u8]| head.len() >= tag.len() && head[..tag.len()].eq_ignore_ascii_case(tag);
    by_type || starts(b"<!doctype html") || starts(b"<html")
}

/// The page title: the text of the first `<title>` element, entities for `&`, `<`, `>`,
/// quotes decoded, whitespace collapsed, truncated to [`MAX_TITLE`] bytes.
fn html_title(html: &str) -> Option<String> {
    let html = truncate(html, MAX_TITLE_SEARCH);
    let lower = html.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let title = html[start..end]
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'");
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    (!title.is_empty()).then(|| truncate(&title, MAX_TITLE).to_owned())
}

/// At most `max` bytes of `text`, cut on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests;
