//! Step 5 (route) and the attempt loop (PRODUCT.md §7): pick the route's targets in
//! strategy order, skip open circuits, and try them within `retry.attempts` and the
//! deadline. Each attempt rewrites host, path prefix, model and credentials, passes the
//! allowlist again, and uses that endpoint's pooled client and pins. A stream may fail
//! over only until its first content reaches the client: frames before it are held.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full};

use super::pipeline::RespBody;
use crate::audit::{AuditEvent, EventKind};
use crate::error::{Code, ProxyError};
use crate::openai::errors::normalize_error;
use crate::openai::request::{ApiRoute, ParsedRequest};
use crate::policy::compile::Label;
use crate::policy::model::{OnInvalid, RouteEntry, Strategy};
use crate::policy::{Policy, Verdict};
use crate::proxy::response::IntoRespBody;
use crate::route::{
    expected_cost, expected_output_tokens, rank, reprobe, AttemptPlan, Candidate, Outcome,
    RetryPolicy, Transition, REPROBE_AFTER,
};
use crate::tls::client::BoxError;
use crate::App;

/// Headers that belong to one provider's account and never cross to another.
const PROVIDER_HEADERS: [&str; 6] = [
    "openai-organization",
    "openai-project",
    "openai-beta",
    "x-api-key",
    "anthropic-version",
    "api-key",
];

/// One routed request, ready for attempts.
pub struct Routed<'a> {
    /// The route.
    pub route: &'a RouteEntry,
    /// The API route (its canonical path is appended to each provider's base URL).
    pub api: ApiRoute,
    /// Method.
    pub method: Method,
    /// Query string, if any.
    pub query: Option<String>,
    /// Request headers, hop-by-hop and control headers already removed.
    pub headers: HeaderMap,
    /// The host the client addressed (None in gateway mode).
    pub client_host: Option<String>,
    /// The stream to fail over on?
    pub stream: bool,
    /// Request id.
    pub rid: String,
}

/// The upstream response of the winning attempt, with any held stream frames.
pub struct Won {
    /// The response (body already includes held frames).
    pub resp: Response<RespBody>,
    /// The provider that answered.
    pub provider: Label,
    /// Its pricing.
    pub price: Option<crate::openai::usage::Price>,
}

/// Runs the attempt loop. `parsed` is rewritten per target (model).
pub async fn attempt(
    app: &Arc<App>,
    policy: &Policy,
    r: Routed<'_>,
    parsed: &mut ParsedRequest,
) -> Result<Won, ProxyError> {
    let client_model = parsed.model().map(str::to_owned);
    // The prompt is estimated (a walk of the messages, a tokenizer when one is loaded) only
    // for a route with a priced target: nothing else reads the estimate.
    let mut estimate = None;
    let mut prompt_estimate = || {
        *estimate.get_or_insert_with(|| {
            (
                crate::tokens::estimate(parsed),
                parsed.prompt_chars() as u64,
                expected_output_tokens(parsed.max_output_tokens()),
            )
        })
    };
    let now = tokio::time::Instant::now();
    let providers: Vec<_> = r
        .route
        .targets
        .iter()
        .map(|t| policy.providers.iter().find(|p| *p.name == *t.provider))
        .collect();
    let breakers: Vec<_> = providers
        .iter()
        .map(|p| p.map(|p| app.breakers.get_or_create(&p.name, p.breaker.clone())))
        .collect();
    let candidates: Vec<Candidate<'_>> = r
        .route
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let cost = providers[i].and_then(|p| p.price.as_ref()).map(|p| {
                let (tokens, chars, out_tokens) = prompt_estimate();
                expected_cost(p, tokens, chars, out_tokens)
            });
            let open = breakers[i].as_ref().is_none_or(|b| !b.admits(now));
            Candidate::for_target(t, open, cost, app.latency.get(&t.provider))
        })
        .collect();
    let mut order = rank(r.route, &candidates, &mut rand::rng());
    if r.route.strategy == Strategy::Fastest {
        let after = r.route.reprobe_after.map_or(REPROBE_AFTER, |d| d.0);
        let targets = &r.route.targets;
        reprobe(&mut order, |i| {
            app.latency.claim_probe(&targets[i].provider, now, after)
        });
    }
    let retry = RetryPolicy::from_model(r.route.retry.as_ref());
    let mut plan = AttemptPlan::new(order, &retry);
    let mut last: Option<(Label, serde_json::Value)> = None;
    let mut retry_after = None;
    let mut prev_provider: Option<Label> = None;
    while let Some((ti, wait)) = plan.next() {
        if let Some(w) = wait {
            tokio::time::sleep(w).await;
        }
        let (Some(p), Some(breaker)) = (providers[ti], breakers[ti].clone()) else {
            plan.mark_unavailable();
            continue;
        };
        let Some(permit) = breaker.try_acquire(tokio::time::Instant::now()) else {
            plan.mark_unavailable();
            continue;
        };
        if let Some(prev) = prev_provider.replace(p.name.clone()) {
            app.auditor.record(AuditEvent {
                event: EventKind::Failover,
                rule: Some(r.route.name.clone()),
                request_id: Some(r.rid.clone()),
                detail: Some(serde_json::json!({ "from": &*prev, "to": &*p.name, "after": last.as_ref().map(|l| &*l.0) })),
                ..AuditEvent::default()
            });
        }
        // A target without a model gets the client's, not the one an earlier target set.
        let target = &r.route.targets[ti];
        if let Some(m) = target.model.as_deref().or(client_model.as_deref()) {
            if parsed.model() != Some(m) {
                parsed.set_model(m);
            }
        }
        let body = parsed.to_bytes();
        let path = format!(
            "{}{}",
            if p.prefix == "/" {
                ""
            } else {
                p.prefix.as_str()
            },
            r.api.path()
        );
        let rule = match policy.check(p.https, &p.host, p.port, &path, &r.method) {
            Verdict::Allowed(_, rule) => rule,
            _ => {
                drop(permit);
                plan.mark_unavailable();
                last = Some((
                    p.name.clone(),
                    serde_json::json!({ "message": "target not on the allowlist" }),
                ));
                continue;
            }
        };
        let pq = match &r.query {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        let uri = Uri::builder()
            .scheme(if p.https { "https" } else { "http" })
            // Made when the policy was compiled (the allowlist entry of this host and port).
            .authority(rule.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| ProxyError::new(Code::InternalError, e.to_string()))?;
        let mut headers = r.headers.clone();
        let crossing = r.client_host.as_deref() != Some(p.host.as_str());
        if crossing {
            headers.remove(header::AUTHORIZATION);
            for h in PROVIDER_HEADERS {
                headers.remove(h);
            }
        }
        if let Some(auth) = &p.auth {
            headers.insert(header::AUTHORIZATION, auth.0.clone());
        } else if crossing {
            return Err(ProxyError::new(
                Code::InternalError,
                format!(
                    "provider {} has no api_key; credentials never cross providers",
                    p.name
                ),
            ));
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let mut req = Request::new(crate::tls::client::ReqBody::full(body));
        *req.method_mut() = r.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        let t0 = Instant::now();
        let limit = policy.limits.first_byte_timeout.min(plan.remaining());
        let result = tokio::time::timeout(limit, rule.client.request(req)).await;
        let record = |outcome: Outcome, permit| {
            if let Some(t) = breaker.record(permit, outcome, tokio::time::Instant::now()) {
                audit_transition(app, &p.name, t);
            }
        };
        let resp = match result {
            Err(_) => {
                record(Outcome::Failure { ttfb: None }, permit);
                last = Some((
                    p.name.clone(),
                    serde_json::json!({ "message": "timed out waiting for the response" }),
                ));
                continue;
            }
            Ok(Err(e)) => {
                record(Outcome::Failure { ttfb: None }, permit);
                last = Some((
                    p.name.clone(),
                    serde_json::json!({ "message": format!("connection failed: {}", crate::tls::client::find_connect_error(&e).map_or_else(|| e.to_string(), |c| c.to_string())) }),
                ));
                continue;
            }
            Ok(Ok(resp)) => resp,
        };
        let headers_at = t0.elapsed();
        app.timing.observe(
            &p.host,
            p.port,
            crate::route::Metric::ResponseHeaders,
            headers_at,
        );
        let status = resp.status().as_u16();
        if retry.is_retryable_status(status) {
            if let Some(ra) = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            {
                plan.note_retry_after(Duration::from_secs(ra));
                retry_after = Some(ra);
            }
            let ct = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let raw = resp
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            record(
                Outcome::Failure {
                    ttfb: Some(headers_at),
                },
                permit,
            );
            last = Some((p.name.clone(), normalize_error(status, ct.as_deref(), &raw)));
            continue;
        }
        if resp.status().is_client_error() {
            record(Outcome::ClientError, permit);
            return Ok(won(resp, p));
        }
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if r.stream && is_sse {
            let (parts, mut body) = resp.into_parts();
            let hold = policy
                .tool_calls
                .as_ref()
                .filter(|t| t.on_invalid == OnInvalid::Retry)
                .map(|_| {
                    crate::toolcalls::StreamToolCheck::new(
                        Arc::new(parsed.tools().to_vec()),
                        app.tool_schemas.clone(),
                    )
                });
            match preread(&mut body, plan.remaining(), hold).await {
                Ok((held, first)) => {
                    record(
                        Outcome::Success {
                            ttfb: first.duration_since(t0),
                        },
                        permit,
                    );
                    app.latency.observe(&p.name, first.duration_since(t0));
                    let body = Prefixed {
                        held: held.into(),
                        inner: body,
                    };
                    return Ok(Won {
                        resp: Response::from_parts(parts, body.boxed_unsync()),
                        provider: p.name.clone(),
                        price: p.price.clone(),
                    });
                }
                Err(Preread::ToolInvalid(msg)) => {
                    record(Outcome::ClientError, permit);
                    last = Some(tool_retried(app, &r, &p.name, &msg));
                    continue;
                }
                Err(Preread::Failed(why)) => {
                    record(Outcome::Failure { ttfb: None }, permit);
                    last = Some((p.name.clone(), serde_json::json!({ "message": why })));
                    continue;
                }
            }
        }
        let retry_tools = policy
            .tool_calls
            .as_ref()
            .is_some_and(|t| t.on_invalid == OnInvalid::Retry);
        if retry_tools && !r.stream {
            // on_invalid = "retry": validate before anything reaches the client; an invalid
            // call moves on to the next target (neutral for the breaker).
            let (parts, body) = resp.into_parts();
            let raw = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let v: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
            if let Err(msg) = app.tool_schemas.check_response(parsed.tools(), &v) {
                record(Outcome::ClientError, permit);
                last = Some(tool_retried(app, &r, &p.name, &msg));
                continue;
            }
            record(Outcome::Success { ttfb: headers_at }, permit);
            app.latency.observe(&p.name, headers_at);
            return Ok(Won {
                resp: Response::from_parts(
                    parts,
                    Full::new(raw)
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                ),
                provider: p.name.clone(),
                price: p.price.clone(),
            });
        }
        record(Outcome::Success { ttfb: headers_at }, permit);
        app.latency.observe(&p.name, headers_at);
        return Ok(won(resp, p));
    }
    let mut e = ProxyError::new(
        Code::AllTargetsUnavailable,
        format!(
            "every target of route {} failed or has an open circuit",
            r.route.name
        ),
    );
    e.retry_after = Some(retry_after.unwrap_or(1));
    if let Some((provider, up)) = last {
        e.upstream = Some(Box::new(
            serde_json::json!({ "provider": &*provider, "error": up }),
        ));
    }
    Err(e)
}

fn won(
    resp: Response<crate::tls::client::UpBody>,
    p: &crate::policy::compile::ProviderInfo,
) -> Won {
    Won {
        resp: resp.map(IntoRespBody::into_resp_body),
        provider: p.name.clone(),
        price: p.price.clone(),
    }
}

/// Audits a tool call rejected in retry mode; returns the error to keep as the last one.
fn tool_retried(
    app: &App,
    r: &Routed<'_>,
    provider: &Label,
    msg: &str,
) -> (Label, serde_json::Value) {
    app.auditor.record(AuditEvent {
        event: EventKind::ToolCallInvalid,
        reason: Some(Code::ToolCallInvalid.as_str().into()),
        rule: Some(r.route.name.clone()),
        request_id: Some(r.rid.clone()),
        detail: Some(
            serde_json::json!({ "error": msg, "action": "retried", "provider": &**provider }),
        ),
        ..AuditEvent::default()
    });
    (
        provider.clone(),
        serde_json::json!({ "message": format!("tool call rejected: {msg}") }),
    )
}

fn audit_transition(app: &App, provider: &str, t: Transition) {
    let (event, reason) = match t {
        Transition::Opened { reason } => {
            (EventKind::CircuitOpened, Some(reason.as_str().to_owned()))
        }
        Transition::Closed => (EventKind::CircuitClosed, None),
        Transition::HalfOpened => return,
    };
    tracing::warn!(provider, "circuit {:?}", event);
    app.auditor.record(AuditEvent {
        event,
        reason,
        rule: Some(provider.to_owned()),
        detail: Some(serde_json::json!({ "provider": provider })),
        ..AuditEvent::default()
    });
}

/// Reads stream frames until the first content (a delta with text or tool calls, a
/// finish_reason, `[DONE]`, or a responses-API delta). Returns the held bytes and when
/// the first event arrived; an error when the stream failed or ended before content.
/// Why a stream could not be committed to before its first content.
enum Preread {
    /// The upstream failed or ended early.
    Failed(String),
    /// `on_invalid = "retry"`: a tool call failed validation before anything was sent.
    ToolInvalid(String),
}

/// Reads stream frames until the first content (a delta with text, a finish_reason,
/// `[DONE]`, or a responses-API delta). With `hold` (tool validation in retry mode), tool
/// calls count as content only once they are complete and valid. Returns the held bytes
/// and when the first event arrived.
async fn preread(
    body: &mut crate::tls::client::UpBody,
    within: Duration,
    mut hold: Option<crate::toolcalls::StreamToolCheck>,
) -> Result<(Vec<Bytes>, Instant), Preread> {
    let mut held = Vec::new();
    let mut dec = crate::openai::sse::SseDecoder::new();
    let mut first = None;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(Preread::Failed("no content before the deadline".into())),
            Ok(None) => {
                return Err(Preread::Failed(
                    "the stream ended before any content".into(),
                ))
            }
            Ok(Some(Err(e))) => {
                return Err(Preread::Failed(format!(
                    "the stream failed before any content: {e}"
                )))
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        first.get_or_insert_with(Instant::now);
        held.push(data.clone());
        for f in dec.feed(&data) {
            let done = || Ok((held.clone(), first.unwrap_or_else(Instant::now)));
            if f.is_done() {
                if let Some(h) = hold.as_mut() {
                    h.flush().map_err(Preread::ToolInvalid)?;
                }
                return done();
            }
            let Some(j) = f.json_str() else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(j) else {
                continue;
            };
            if let Some(h) = hold.as_mut() {
                let text = v["choices"].as_array().into_iter().flatten().any(|c| {
                    c["delta"]["content"]
                        .as_str()
                        .is_some_and(|s| !s.is_empty())
                });
                if !text {
                    let finished = v["choices"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| !c["finish_reason"].is_null());
                    h.observe(&v, Bytes::new()).map_err(Preread::ToolInvalid)?;
                    if finished {
                        return done();
                    }
                    continue;
                }
            }
            if is_content(&v) {
                return done();
            }
        }
    }
}

fn is_content(v: &serde_json::Value) -> bool {
    if v.get("error").is_some() {
        return true;
    }
    if v["type"]
        .as_str()
        .is_some_and(|t| t.ends_with(".delta") || t == "response.completed")
    {
        return true;
    }
    v["choices"].as_array().into_iter().flatten().any(|c| {
        c["delta"]["content"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
            || c["delta"]["tool_calls"].is_array()
            || !c["finish_reason"].is_null()
            || c["text"].as_str().is_some_and(|s| !s.is_empty())
    })
}

/// A body that replays held frames, then continues with the upstream.
struct Prefixed {
    held: std::collections::VecDeque<Bytes>,
    inner: crate::tls::client::UpBody,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if let Some(b) = self.held.pop_front() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(b))));
        }
        std::pin::Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(|e| -> BoxError { Box::new(e) })
    }
}
