//! Step 7: the response on its way back. Upstream errors are normalized to the OpenAI
//! shape; event streams go through [`SseBody`]; JSON bodies of known routes are read for
//! usage as they pass (buffered only when tool calls must be validated first); anything
//! else streams through untouched.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Response;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};

use super::body::Kept;
use super::exchange::Exchange;
use super::pipeline::RespBody;
use super::sse_body::{SseBody, StreamEnd};
use crate::audit::{AuditEvent, EventKind};
use crate::error::{Code, ProxyError};
use crate::openai::errors::normalize_error;
use crate::openai::request::ApiRoute;
use crate::openai::usage::{extract_usage, extract_usage_from_slice, StreamTracker, Usage};
use crate::policy::model::OnInvalid;
use crate::protect::RawPass;
use crate::tls::client::BoxError;
use crate::toolcalls::StreamToolCheck;
use crate::App;

/// Largest upstream error body read for normalization.
const MAX_ERROR_BODY: usize = 1024 * 1024;
/// Largest JSON body kept for usage accounting (larger ones pass uncounted).
const MAX_TEE: usize = 8 * 1024 * 1024;
/// Largest JSON body buffered for tool-call validation.
const MAX_VALIDATE_BODY: usize = 64 * 1024 * 1024;

/// Accounting for one exchange, run once when its body ends.
pub struct Account {
    /// The app (metrics, audit).
    pub app: Arc<App>,
    /// Provider label.
    pub provider: crate::policy::compile::Label,
    /// Bounded model label.
    pub model: crate::policy::compile::Label,
    /// Pricing.
    pub price: Option<crate::openai::usage::Price>,
    /// Prompt characters (per-character pricing).
    pub prompt_chars: u64,
    /// The `allowed` audit line to write at the end (when `log_allowed`).
    pub allowed: Option<AuditEvent>,
}

// === impl Account ===

impl Account {
    /// Records usage, cost and the allowed line.
    pub fn finish(self, usage: Option<Usage>, completion_chars: u64) {
        let mut detail = serde_json::Map::new();
        if let Some(u) = usage {
            let cost = self.price.as_ref().map(|p| {
                crate::openai::usage::cost(
                    p,
                    u.prompt_tokens,
                    u.completion_tokens,
                    self.prompt_chars,
                    completion_chars,
                )
            });
            self.app.metrics.usage(
                &self.provider,
                &self.model,
                u.prompt_tokens,
                u.completion_tokens,
                cost,
            );
            if self.allowed.is_some() {
                detail.insert("prompt_tokens".into(), u.prompt_tokens.into());
                detail.insert("completion_tokens".into(), u.completion_tokens.into());
                if let Some(c) = cost {
                    detail.insert("cost".into(), c.into());
                }
            }
        }
        if let Some(mut ev) = self.allowed {
            detail.insert("provider".into(), self.provider.as_ref().into());
            ev.detail = Some(serde_json::Value::Object(detail));
            self.app.auditor.record(ev);
        }
    }
}

/// Processes the upstream response for the client. Generic over the upstream's body, so
/// that the common case (a JSON answer read for usage as it passes) boxes it once, inside
/// its [`Tee`].
pub async fn respond<B>(
    app: &Arc<App>,
    ex: Exchange,
    tool_check: Option<(Arc<Vec<crate::openai::request::ToolDecl>>, OnInvalid)>,
    protector: Option<Arc<crate::protect::Protector>>,
    account: Account,
    // Made by the caller whenever tool calls are checked or allowed requests logged.
    audit_base: Option<AuditEvent>,
    resp: Response<B>,
) -> Result<Response<RespBody>, ProxyError>
where
    B: IntoRespBody,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = resp.into_parts();
    super::headers::strip_hop_by_hop(&mut parts.headers);
    let Some(route) = ex.route else {
        account.finish(None, 0);
        return Ok(Response::from_parts(parts, body.into_resp_body()));
    };
    let ctype = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    let ctype_is = |prefix: &str| {
        ctype
            .get(..prefix.len())
            .is_some_and(|c| c.eq_ignore_ascii_case(prefix.as_bytes()))
    };
    let (sse, json) = (ctype_is("text/event-stream"), ctype_is("application/json"));
    let encoded = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() != b"identity");
    if !parts.status.is_success() {
        let raw = collect_limited(body, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        let raw = if encoded {
            decompress(&raw).unwrap_or(raw)
        } else {
            raw
        };
        let ctype = String::from_utf8_lossy(ctype).to_ascii_lowercase();
        let normalized = normalize_error(parts.status.as_u16(), Some(&ctype), &raw);
        let bytes = Bytes::from(serde_json::to_vec(&normalized).unwrap_or_default());
        parts.headers.remove(header::CONTENT_ENCODING);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        account.finish(None, 0);
        return Ok(Response::from_parts(parts, full(bytes)));
    }
    if encoded {
        // The upstream ignored `Accept-Encoding: identity`: pass it on uncounted.
        account.finish(None, 0);
        return Ok(Response::from_parts(parts, body.into_resp_body()));
    }
    if sse {
        let checker = tool_check.map(|(d, mode)| {
            let c = StreamToolCheck::new(d, app.tool_schemas.clone());
            if mode == OnInvalid::Log {
                let (aud, base) = (app.auditor.clone(), audit_base.clone().unwrap_or_default());
                c.log_only(Box::new(move |msg: &str| {
                    aud.record(AuditEvent {
                        event: EventKind::ToolCallInvalid,
                        reason: Some(Code::ToolCallInvalid.as_str().into()),
                        detail: Some(serde_json::json!({ "error": msg, "action": "logged" })),
                        ..base.clone()
                    });
                }))
            } else {
                c
            }
        });
        let app2 = app.clone();
        let on_end = Box::new(
            move |usage: Option<Usage>, end: StreamEnd, restore_failed: u64| {
                if restore_failed > 0 {
                    app2.metrics.event("restore_failed");
                }
                match &end {
                    StreamEnd::Cut => app2.metrics.event("cut"),
                    StreamEnd::ToolCallInvalid(msg) => {
                        app2.metrics.event("tool_call_invalid");
                        app2.auditor.record(AuditEvent {
                            event: EventKind::ToolCallInvalid,
                            reason: Some(Code::ToolCallInvalid.as_str().into()),
                            detail: Some(serde_json::json!({ "error": msg })),
                            ..audit_base.unwrap_or_default()
                        });
                    }
                    StreamEnd::Complete => {}
                }
                account.finish(usage, 0);
            },
        );
        parts.headers.remove(header::CONTENT_LENGTH);
        let restore = protector.map(super::sse_restore::SseRestore::new);
        let body = SseBody::new(
            body.into_resp_body(),
            StreamTracker::new(route),
            ex.injected_usage,
            checker,
            restore,
            on_end,
        );
        return Ok(Response::from_parts(parts, body.boxed_unsync()));
    }
    if !json {
        account.finish(None, 0);
        return Ok(Response::from_parts(parts, body.into_resp_body()));
    }
    let decls =
        tool_check.filter(|_| matches!(route, ApiRoute::ChatCompletions | ApiRoute::Responses));
    if decls.is_some() || protector.is_some() {
        let raw = collect_limited(body, MAX_VALIDATE_BODY)
            .await
            .map_err(|_| {
                ProxyError::new(
                    Code::UpstreamStreamCut,
                    "the upstream response could not be read",
                )
            })?;
        if let (None, Some(p)) = (&decls, &protector) {
            // Nothing to validate: an answer that cannot hold a token passes as it came, any
            // other is restored on its raw bytes when they suit.
            let pass = match crate::protect::Protector::may_hold_tokens(&raw) {
                true => p.restore_response_raw(&raw),
                false => RawPass::Unchanged(Default::default()),
            };
            match pass {
                RawPass::Unchanged(_) => {
                    account.finish(extract_usage_from_slice(&raw), 0);
                    return Ok(Response::from_parts(parts, full(raw)));
                }
                RawPass::Rewritten(out, st) => {
                    count_restore(app, st);
                    let usage = extract_usage_from_slice(&raw);
                    return Ok(json_answer(parts, Bytes::from(out), usage, account));
                }
                RawPass::Fallback => {}
            }
        }
        let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&raw) else {
            account.finish(None, 0);
            return Ok(Response::from_parts(parts, full(raw)));
        };
        if let Some((decls, mode)) = decls {
            if let Err(msg) = app.tool_schemas.check_response(&decls, &v) {
                let logged = mode == OnInvalid::Log;
                app.auditor.record(AuditEvent {
                    event: EventKind::ToolCallInvalid,
                    reason: Some(Code::ToolCallInvalid.as_str().into()),
                    detail: Some(serde_json::json!({ "error": msg, "action": if logged { "logged" } else { "rejected" } })),
                    ..audit_base.unwrap_or_default()
                });
                if !logged {
                    account.finish(extract_usage(&v), 0);
                    return Err(ProxyError::new(
                        Code::ToolCallInvalid,
                        format!("tool call rejected: {msg}"),
                    ));
                }
            }
        }
        let usage = extract_usage(&v);
        let out = match protector {
            Some(p) => {
                count_restore(app, p.restore_response(&mut v));
                Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
            }
            None => raw,
        };
        return Ok(json_answer(parts, out, usage, account));
    }
    let tee = Tee {
        inner: body,
        kept: Kept::default(),
        overflow: false,
        account: Some(account),
    };
    Ok(Response::from_parts(parts, tee.boxed_unsync()))
}

/// A whole JSON answer the proxy may have rewritten: its length, its usage counted.
fn json_answer(
    mut parts: http::response::Parts,
    out: Bytes,
    usage: Option<Usage>,
    account: Account,
) -> Response<RespBody> {
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    account.finish(usage, 0);
    Response::from_parts(parts, full(out))
}

fn count_restore(app: &App, st: crate::protect::RestoreStats) {
    if st.failed > 0 {
        app.metrics.event("restore_failed");
    }
}

/// Reads a whole body of at most `limit` bytes.
async fn collect_limited<B>(body: B, limit: usize) -> Result<Bytes, ()>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    super::body::collect(body, limit).await.map_err(|_| ())
}

/// An upstream answer's body that [`respond`] can pass on as a response body: an upstream
/// body is boxed, a routed answer (already one) is not boxed again.
pub trait IntoRespBody: Body<Data = Bytes> + Send + Unpin + 'static {
    /// The response body.
    fn into_resp_body(self) -> RespBody;
}

impl IntoRespBody for RespBody {
    fn into_resp_body(self) -> RespBody {
        self
    }
}

impl IntoRespBody for crate::tls::client::UpBody {
    fn into_resp_body(self) -> RespBody {
        self.map_err(BoxError::from).boxed_unsync()
    }
}

fn full(b: Bytes) -> RespBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

fn decompress(raw: &[u8]) -> Option<Bytes> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(raw)
        .take(MAX_ERROR_BODY as u64)
        .read_to_end(&mut out)
        .ok()?;
    Some(Bytes::from(out))
}

/// Passes a JSON body through while keeping a copy; reads usage when it ends.
struct Tee<B> {
    inner: B,
    /// The pieces so far (a one-piece answer is kept by reference, not copied).
    kept: Kept,
    overflow: bool,
    account: Option<Account>,
}

impl<B> Tee<B> {
    fn end(&mut self) {
        if let Some(a) = self.account.take() {
            let usage = if self.overflow {
                None
            } else {
                extract_usage_from_slice(self.kept.as_slice())
            };
            a.finish(usage, 0);
        }
    }
}

impl<B> Drop for Tee<B> {
    fn drop(&mut self) {
        self.end();
    }
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    if this.kept.len() + d.len() <= MAX_TEE {
                        this.kept.push(d.clone());
                    } else {
                        this.overflow = true;
                    }
                }
                // hyper stops polling once the body says it has ended (Content-Length):
                // account now rather than waiting for a poll that will not come.
                if this.inner.is_end_stream() {
                    this.end();
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.overflow = true;
                this.end();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.end();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
