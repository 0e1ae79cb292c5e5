//! The one error type of the request path: a stable code, its HTTP status, whether a
//! retry can help, and the OpenAI-shaped body every SDK knows how to surface
//! (PRODUCT.md §8). Everything the proxy refuses goes through [`ProxyError::response`].

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

/// Stable error codes (`error.code` and `x-llm-egress-reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// No `[[allow]]` covers the URL.
    EndpointNotAllowed,
    /// The URL is allowed but not with this method.
    MethodNotAllowed,
    /// Host / `:authority` / SNI differ from the CONNECT host.
    HostMismatch,
    /// The upstream chain carries no pinned key.
    CertificatePinMismatch,
    /// Upstream TLS failed (unknown CA, wrong name, expired).
    UpstreamTlsError,
    /// DNS or connect failure.
    UpstreamUnreachable,
    /// DNS led to a private address.
    PrivateAddress,
    /// Body over `max_request_body`.
    RequestTooLarge,
    /// URL refused by normalization.
    InvalidUrl,
    /// Body of a known route is not valid JSON.
    InvalidRequestJson,
    /// Malformed request (conflicting framing headers, bad CONNECT target).
    BadRequest,
    /// Gateway request that no route takes.
    NoRoute,
    /// Every target failed or has an open circuit.
    AllTargetsUnavailable,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The upstream cut a stream.
    UpstreamStreamCut,
    /// A tool call failed validation.
    ToolCallInvalid,
    /// Protection could not be applied; nothing was sent.
    ProtectFailed,
    /// Too many connections or requests.
    Overloaded,
    /// A bug or an unexpected failure.
    InternalError,
}

// === impl Code ===

impl Code {
    /// The code as it appears on the wire and in audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::EndpointNotAllowed => "endpoint_not_allowed",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::HostMismatch => "host_mismatch",
            Code::CertificatePinMismatch => "certificate_pin_mismatch",
            Code::UpstreamTlsError => "upstream_tls_error",
            Code::UpstreamUnreachable => "upstream_unreachable",
            Code::PrivateAddress => "private_address",
            Code::RequestTooLarge => "request_too_large",
            Code::InvalidUrl => "invalid_url",
            Code::InvalidRequestJson => "invalid_request_json",
            Code::BadRequest => "bad_request",
            Code::NoRoute => "no_route",
            Code::AllTargetsUnavailable => "all_targets_unavailable",
            Code::UpstreamTimeout => "upstream_timeout",
            Code::UpstreamStreamCut => "upstream_stream_cut",
            Code::ToolCallInvalid => "tool_call_invalid",
            Code::ProtectFailed => "protect_failed",
            Code::Overloaded => "overloaded",
            Code::InternalError => "internal_error",
        }
    }

    /// HTTP status of this code.
    pub fn status(self) -> StatusCode {
        match self {
            Code::EndpointNotAllowed | Code::MethodNotAllowed | Code::PrivateAddress => {
                StatusCode::FORBIDDEN
            }
            Code::HostMismatch => StatusCode::MISDIRECTED_REQUEST,
            Code::CertificatePinMismatch
            | Code::UpstreamTlsError
            | Code::UpstreamUnreachable
            | Code::UpstreamStreamCut
            | Code::ToolCallInvalid => StatusCode::BAD_GATEWAY,
            Code::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::InvalidUrl | Code::InvalidRequestJson | Code::BadRequest => {
                StatusCode::BAD_REQUEST
            }
            Code::NoRoute => StatusCode::NOT_FOUND,
            Code::AllTargetsUnavailable | Code::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Code::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Code::ProtectFailed | Code::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether a retry could help; when not, responses carry `x-should-retry: false`.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Code::UpstreamUnreachable
                | Code::AllTargetsUnavailable
                | Code::UpstreamTimeout
                | Code::UpstreamStreamCut
                | Code::Overloaded
                | Code::InternalError
        )
    }

    /// Whether a refusal with this code is a security event for the audit log.
    pub fn is_block(self) -> bool {
        matches!(
            self,
            Code::EndpointNotAllowed
                | Code::MethodNotAllowed
                | Code::HostMismatch
                | Code::CertificatePinMismatch
                | Code::UpstreamTlsError
                | Code::PrivateAddress
                | Code::InvalidUrl
        )
    }
}

/// An error the proxy answers with.
#[derive(Debug, Clone)]
pub struct ProxyError {
    /// The stable code.
    pub code: Code,
    /// Human message (never secrets, prompt content or keys).
    pub message: String,
    /// Extra structured detail for the audit line (e.g. observed pins).
    pub detail: Option<Box<serde_json::Value>>,
    /// The upstream's original error, kept under `error.upstream`.
    pub upstream: Option<Box<serde_json::Value>>,
    /// `Retry-After` seconds, where one applies.
    pub retry_after: Option<u64>,
}

// === impl ProxyError ===

impl ProxyError {
    /// An error with a code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ProxyError {
            code,
            message: message.into(),
            detail: None,
            upstream: None,
            retry_after: None,
        }
    }

    /// Adds audit detail.
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(Box::new(detail));
        self
    }

    /// The OpenAI-shaped JSON body.
    pub fn body(&self) -> Bytes {
        match &self.upstream {
            Some(up) => crate::openai::errors::proxy_error_body_with_upstream(
                self.code.as_str(),
                &self.message,
                up,
            ),
            None => crate::openai::errors::proxy_error_body(self.code.as_str(), &self.message),
        }
    }

    /// The full response: status, body, reason header, retry hints, request id.
    pub fn response<B: From<Bytes>>(&self, request_id: &str) -> Response<B> {
        let mut resp = Response::new(B::from(self.body()));
        *resp.status_mut() = self.code.status();
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            "x-llm-egress-reason",
            HeaderValue::from_static(self.code.as_str()),
        );
        if !self.code.retryable() {
            h.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if let Some(s) = self.retry_after {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-request-id", v);
        }
        resp
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = ProxyError::new(Code::EndpointNotAllowed, "no");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).expect("json");
        assert_eq!(v["error"]["code"], "endpoint_not_allowed");
        assert_eq!(v["error"]["type"], "llm_egress_error");
        assert!(v["error"]["param"].is_null());
        let r: Response<Bytes> = e.response("req-1");
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["x-should-retry"], "false");
        assert_eq!(r.headers()["x-request-id"], "req-1");
    }
}
