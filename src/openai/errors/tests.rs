use proptest::prelude::*;
use serde_json::json;

use super::*;

fn norm(status: u16, content_type: Option<&str>, body: &str) -> Value {
    normalize_error(status, content_type, body.as_bytes())
}

#[test]
fn openai_shape_passes_through_unchanged() {
    let body = json!({"error": {"message": "Rate limit", "type": "requests", "param": null,
                                "code": "rate_limit_exceeded", "extra": 1}});
    let out = norm(429, Some("application/json"), &body.to_string());
    assert_eq!(out, body);
    assert!(is_retryable_upstream(429, &out));
}

#[test]
fn anthropic_errors() {
    let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let out = norm(529, Some("application/json"), body);
    assert_eq!(out["error"]["message"], "Overloaded");
    assert_eq!(out["error"]["type"], "overloaded_error");
    assert_eq!(out["error"]["code"], "overloaded_error");
    assert_eq!(out["error"]["param"], Value::Null);
    assert_eq!(
        out["error"]["upstream"]["error"]["type"],
        "overloaded_error"
    );
    assert!(is_retryable_upstream(529, &out));
    // Inside a stream the status is 200; the error type alone makes it retryable.
    assert!(is_retryable_upstream(200, &out));
    let invalid = r#"{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}"#;
    assert!(!is_retryable_upstream(400, &norm(400, None, invalid)));
}

#[test]
fn gemini_list_and_object_forms() {
    let object =
        r#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#;
    for body in [format!("[{object}]"), object.to_owned()] {
        let out = norm(429, Some("application/json; charset=UTF-8"), &body);
        assert_eq!(out["error"]["message"], "Quota exceeded", "{body}");
        assert_eq!(out["error"]["code"], "RESOURCE_EXHAUSTED");
        assert_eq!(out["error"]["type"], "rate_limit_error");
        let upstream: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(out["error"]["upstream"], upstream);
    }
}

#[test]
fn other_json_shapes() {
    let ollama = norm(404, None, r#"{"error":"model 'x' not found"}"#);
    assert_eq!(ollama["error"]["message"], "model 'x' not found");
    assert_eq!(ollama["error"]["type"], "invalid_request_error");
    let mistral = norm(
        422,
        None,
        r#"{"object":"error","message":"bad temp","type":"invalid_request_message_error","param":null,"code":"1001"}"#,
    );
    assert_eq!(mistral["error"]["message"], "bad temp");
    assert_eq!(mistral["error"]["type"], "invalid_request_message_error");
    assert_eq!(mistral["error"]["code"], "1001");
    let fastapi = norm(500, None, r#"{"detail":"boom"}"#);
    assert_eq!(fastapi["error"]["message"], "boom");
    let odd = norm(502, None, r#"{"status":7}"#);
    assert_eq!(
        odd["error"]["message"],
        "upstream returned HTTP 502 Bad Gateway"
    );
    assert_eq!(odd["error"]["upstream"], json!({"status": 7}));
    assert_eq!(norm(500, None, r#""oops""#)["error"]["message"], "oops");
}

#[test]
fn html_pages_are_summarized_not_dumped() {
    let page = format!(
        "<!DOCTYPE html><html><head><TITLE>\n 502 Bad &amp; Gateway </TITLE></head><body>{}</body></html>",
        "x".repeat(5000)
    );
    let out = norm(502, Some("text/html"), &page);
    let message = out["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(
        message,
        "upstream returned HTTP 502 (HTML page: 502 Bad & Gateway)"
    );
    let copy = out["error"]["upstream"].as_str().unwrap_or_default();
    assert_eq!(copy.len(), MAX_UPSTREAM_COPY);
    assert!(page.starts_with(copy));
    assert_eq!(out["error"]["type"], "api_error");
    let untitled = norm(503, None, "<html><body>down</body></html>");
    assert_eq!(
        untitled["error"]["message"],
        "upstream returned HTTP 503 Service Unavailable (HTML page)"
    );
}

#[test]
fn plain_text_and_empty_bodies() {
    let out = norm(500, Some("text/plain"), "  upstream connect error  \n");
    assert_eq!(out["error"]["message"], "upstream connect error");
    assert_eq!(out["error"]["upstream"], "upstream connect error");
    let long = "é".repeat(2000);
    let out = norm(500, None, &long);
    assert_eq!(out["error"]["message"].as_str().map(str::len), Some(512));
    let out = norm(503, None, "");
    assert_eq!(
        out["error"]["message"],
        "upstream returned HTTP 503 Service Unavailable"
    );
    assert_eq!(out["error"]["upstream"], Value::Null);
    assert_eq!(
        norm(599, None, " ")["error"]["message"],
        "upstream returned HTTP 599"
    );
}

#[test]
fn retryable_statuses() {
    let empty = Value::Null;
    for status in [429, 500, 502, 503, 504, 529] {
        assert!(is_retryable_upstream(status, &empty), "{status}");
    }
    for status in [200, 400, 401, 403, 404, 422] {
        assert!(!is_retryable_upstream(status, &empty), "{status}");
    }
}

#[test]
fn proxy_error_body_is_exact() {
    assert_eq!(
        proxy_error_body("endpoint_not_allowed", "host \"x\" is not allowed"),
        &br#"{"error":{"message":"host \"x\" is not allowed","type":"llm_egress_error","param":null,"code":"endpoint_not_allowed"}}"#[..]
    );
    assert_eq!(
        stream_error_event("upstream_stream_cut", "cut"),
        &b"data: {\"error\":{\"message\":\"cut\",\"type\":\"llm_egress_error\",\"param\":null,\"code\":\"upstream_stream_cut\"}}\n\n"[..]
    );
    let with = proxy_error_body_with_upstream("all_targets_unavailable", "m", &json!({"a": 1}));
    let parsed: Value = serde_json::from_slice(&with).unwrap_or_default();
    assert_eq!(parsed["error"]["upstream"], json!({"a": 1}));
    assert_eq!(parsed["error"]["type"], PROXY_ERROR_TYPE);
}

proptest! {
    #[test]
    fn always_yields_an_openai_shaped_error(
        status in 100u16..600,
        body in prop::collection::vec(any::<u8>(), 0..300),
        html in any::<bool>(),
    ) {
        let content_type = html.then_some("text/html");
        let out = normalize_error(status, content_type, &body);
        prop_assert!(out["error"]["message"].is_string());
        if let Some(copy) = out["error"]["upstream"].as_str() {
            prop_assert!(copy.len() <= MAX_UPSTREAM_COPY);
        }
    }

    #[test]
    fn proxy_bodies_are_valid_json(code in ".{0,12}", message in ".{0,40}") {
        let parsed: Value = serde_json::from_slice(&proxy_error_body(&code, &message))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&parsed["error"]["message"], &Value::String(message));
        prop_assert_eq!(&parsed["error"]["code"], &Value::String(code));
    }
}
