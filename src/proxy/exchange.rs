//! Step 3 (parse): for the known OpenAI routes, read the JSON body (up to
//! `max_request_body`), refuse invalid JSON, and note what later steps need — model,
//! streaming, whether the client asked for usage, declared tools — in an [`Exchange`].
//! Bodies of other routes are never read: they stream through untouched.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use hyper::body::Incoming;

use crate::error::{Code, ProxyError};
use crate::openai::request::{parse_request_bytes, ApiRoute, ParsedRequest, ToolDecl};
use crate::policy::compile::{Label, ProviderInfo};

/// What the response steps need to know about the request.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// The OpenAI route, when the path is one.
    pub route: Option<ApiRoute>,
    /// `stream: true`.
    pub stream: bool,
    /// The client asked for `stream_options.include_usage` itself.
    pub client_wants_usage: bool,
    /// The proxy asked the upstream for usage on the client's behalf (drop the extra chunk).
    pub injected_usage: bool,
    /// The `model` metrics label of the request's model (set by the caller, which knows the
    /// policy's labels).
    pub model: Option<Label>,
    /// Tools the request declared (for validation).
    pub tools: Vec<ToolDecl>,
    /// Provider label for metrics (the provider name, else the allow rule). An `Option`:
    /// an empty `Arc<str>` default would share one count across every thread.
    pub provider: Option<Label>,
    /// Provider pricing, when known.
    pub price: Option<crate::openai::usage::Price>,
    /// Prompt characters (for per-character pricing).
    pub prompt_chars: u64,
    /// Spans protected, by detector.
    pub protected: Vec<(String, u64)>,
}

/// Outcome of the parse step: the body to forward.
pub enum Body {
    /// Untouched: stream the client's body through.
    Stream(Incoming),
    /// Read (and maybe rewritten): send these bytes.
    Bytes(Bytes),
}

/// Reads and parses the body when `route` is a JSON OpenAI route; otherwise passes it on.
#[allow(clippy::too_many_arguments)]
pub async fn parse(
    protector: Option<&crate::protect::Protector>,
    method: &http::Method,
    headers: &mut HeaderMap,
    body: Incoming,
    route: Option<ApiRoute>,
    provider: Option<&ProviderInfo>,
    max_body: u64,
    ex: &mut Exchange,
) -> Result<(Body, Option<ParsedRequest>), ProxyError> {
    ex.route = route;
    if let Some(p) = provider {
        ex.provider = Some(p.name.clone());
        ex.price = p.price.clone();
    }
    let Some(route) = route.filter(|_| method == http::Method::POST) else {
        return Ok((Body::Stream(body), None));
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        if len > max_body {
            return Err(too_large(max_body));
        }
    }
    let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
    let bytes = super::body::collect(body, limit)
        .await
        .map_err(|e| match e {
            super::body::CollectError::TooLarge => too_large(max_body),
            super::body::CollectError::Read(_) => {
                ProxyError::new(Code::BadRequest, "the request body could not be read")
            }
        })?;
    let mut parsed = parse_request_bytes(route, bytes).map_err(|e| {
        ProxyError::new(
            Code::InvalidRequestJson,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    ex.stream = parsed.stream();
    ex.client_wants_usage = parsed.client_requested_usage();
    ex.tools = parsed.tools().to_vec();
    if ex
        .price
        .as_ref()
        .is_some_and(|p| p.input_per_mchar.is_some())
    {
        ex.prompt_chars = parsed.prompt_chars() as u64;
    }
    // Step 4: protect sensitive spans before anything leaves; on failure send nothing.
    // Before any change to the map, so the raw bytes can be rewritten in place.
    if let Some(p) = protector {
        ex.protected = protect(p, &mut parsed)?.by_detector.into_iter().collect();
    }
    if ex.stream
        && provider.is_none_or(|p| p.stream_usage)
        && !ex.client_wants_usage
        && parsed.set_include_usage()
    {
        ex.injected_usage = true;
    }
    // The original bytes unless a step changed the body.
    let out = parsed.to_bytes();
    if !states_length(headers, out.len()) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    }
    headers.remove(header::TRANSFER_ENCODING);
    // The response body will be read (usage, stream checks): ask for it uncompressed.
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    Ok((Body::Bytes(out), Some(parsed)))
}

/// Protects the request body: on its raw bytes when it has not been changed yet (no tree
/// built, no re-serialization), else through the map.
fn protect(
    p: &crate::protect::Protector,
    parsed: &mut ParsedRequest,
) -> Result<crate::protect::ProtectStats, ProxyError> {
    use crate::protect::RawPass;
    let failed = |e: &dyn std::fmt::Display| {
        ProxyError::new(
            Code::ProtectFailed,
            format!("prompt protection failed, nothing was sent: {e}"),
        )
    };
    if parsed.has_body() && !parsed.is_modified() {
        match p.protect_request_raw(&parsed.to_bytes()) {
            Ok(RawPass::Unchanged(stats)) => return Ok(stats),
            Ok(RawPass::Rewritten(body, stats)) => {
                // Unmodified (checked above), so the swap takes; fail closed if not.
                if !parsed.replace_raw(Bytes::from(body)) {
                    return Err(failed(&"the rewritten body could not be kept"));
                }
                return Ok(stats);
            }
            Ok(RawPass::Fallback) => {}
            Err(e) => return Err(failed(&e)),
        }
    }
    let has_body = parsed.has_body();
    let Some(map) = parsed.body_mut() else {
        // Fail closed: a body the protector cannot read is not sent.
        return match has_body {
            true => Err(failed(&"the body could not be read")),
            false => Ok(Default::default()),
        };
    };
    let mut v = serde_json::Value::Object(std::mem::take(map));
    let result = p.protect_request(&mut v);
    if let serde_json::Value::Object(m) = v {
        *map = m;
    }
    result.map_err(|e| failed(&e))
}

/// The request already says `Content-Length: len`, written the canonical way.
fn states_length(headers: &HeaderMap, len: usize) -> bool {
    let mut found = headers.get_all(header::CONTENT_LENGTH).iter();
    match (found.next(), found.next()) {
        (Some(v), None) => {
            let b = v.as_bytes();
            !b.is_empty()
                && (b == b"0" || b[0] != b'0')
                && b.iter().all(u8::is_ascii_digit)
                && v.to_str().ok().and_then(|s| s.parse::<usize>().ok()) == Some(len)
        }
        _ => false,
    }
}

fn too_large(max: u64) -> ProxyError {
    ProxyError::new(
        Code::RequestTooLarge,
        format!("request body is larger than max_request_body ({max} bytes)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_kept_only_when_it_is_exactly_the_length() {
        let with = |vals: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in vals {
                h.append(header::CONTENT_LENGTH, HeaderValue::from_static(v));
            }
            h
        };
        assert!(states_length(&with(&["70"]), 70));
        assert!(states_length(&with(&["0"]), 0));
        assert!(!states_length(&with(&["71"]), 70));
        assert!(!states_length(&with(&["070"]), 70));
        assert!(!states_length(&with(&["+70"]), 70));
        assert!(!states_length(&with(&["70", "70"]), 70));
        assert!(!states_length(&with(&[]), 70));
    }
}
