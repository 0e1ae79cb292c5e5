//! Error bodies: the mock's own errors (OpenAI's shape) and the provider-specific shapes that
//! status faults imitate, so the proxy's error normalization can be tested against each.

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

use super::faults::ErrorShape;

/// An error response before headers are added: status, content type (`None`: no body) and body.
pub(crate) struct ErrorReply {
    pub status: StatusCode,
    pub content_type: Option<&'static str>,
    pub body: Bytes,
}

/// The mock's own error (bad request, unknown path, ...) in OpenAI's error shape.
pub(crate) fn openai_error(status: StatusCode, message: &str) -> ErrorReply {
    error_reply(ErrorShape::OpenAi, status, message)
}

/// An error body of the given provider's shape.
pub(crate) fn error_reply(shape: ErrorShape, status: StatusCode, message: &str) -> ErrorReply {
    let code = status.as_u16();
    let reason = status.canonical_reason().unwrap_or("Error");
    let (content_type, body) = match shape {
        ErrorShape::OpenAi => {
            let (kind, error_code) = openai_kind(code);
            let body = json!({
                "error": { "message": message, "type": kind, "param": null, "code": error_code }
            });
            (Some(JSON), Bytes::from(body.to_string()))
        }
        ErrorShape::Anthropic => {
            let body = json!({
                "type": "error",
                "error": { "type": anthropic_kind(code), "message": message }
            });
            (Some(JSON), Bytes::from(body.to_string()))
        }
        ErrorShape::Gemini => {
            let body = json!([{
                "error": { "code": code, "message": message, "status": gemini_status(code) }
            }]);
            (Some(JSON), Bytes::from(body.to_string()))
        }
        ErrorShape::Html => {
            let body = format!(
                "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n\
                 <center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n\
                 </body>\r\n</html>\r\n"
            );
            (Some("text/html"), Bytes::from(body))
        }
        ErrorShape::Text => (
            Some("text/plain; charset=utf-8"),
            Bytes::from(format!("upstream error: {code} {reason}\n")),
        ),
        ErrorShape::Empty => (None, Bytes::new()),
    };
    ErrorReply {
        status,
        content_type,
        body,
    }
}

const JSON: &str = "application/json";

/// OpenAI's `type` and `code` for a status.
fn openai_kind(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("permission_error", None),
        404 => ("invalid_request_error", Some("unknown_url")),
        400..=428 => ("invalid_request_error", None),
        429 => ("requests", Some("rate_limit_exceeded")),
        503 | 529 => ("server_error", Some("overloaded")),
        _ => ("server_error", None),
    }
}

/// Anthropic's error `type` for a status.
fn anthropic_kind(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Google's canonical status name for an HTTP status.
fn gemini_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}
