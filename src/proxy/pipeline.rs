//! The fixed order of steps every request inside the proxy goes through
//! (PRODUCT.md §5): authority check → normalize → allowlist → forward → stream back.
//! Later steps (parse, protect, route, validate) slot in between without reordering.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::exchange::{self, Exchange};
use super::headers::{conflicting_framing, strip_control, strip_hop_by_hop};
use super::response::{self, Account};
use super::routing;
use super::url::{normalize_host, normalize_path};
use crate::audit::{AuditEvent, EventKind};
use crate::error::{Code, ProxyError};
use crate::openai::request::ApiRoute;
use crate::policy::compile::Label;
use crate::policy::{Policy, Verdict};
use crate::tls::client::{find_connect_error, BoxError, ConnectError, ReqBody};
use crate::App;

/// Body type of responses to clients.
pub type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// How the request reached the proxy.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Inside an inspected `CONNECT host:port` tunnel.
    Inspect {
        /// Normalized CONNECT host.
        host: String,
        /// CONNECT port.
        port: u16,
    },
    /// A plain-HTTP proxy request in absolute form (`GET http://host/...`).
    Absolute,
    /// An origin-form request on the proxy port (gateway mode).
    Gateway,
}

/// Per-connection context.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The client's address.
    pub peer: SocketAddr,
    /// How it arrived.
    pub origin: Origin,
}

/// `x-request-id`, as a header name built once (a `&str` key is copied per insert).
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What is known about a request so far, for audit lines. Borrows what it can from the
/// connection and the policy: the strings of an audit event are only made when one is.
#[derive(Default)]
struct Info<'a> {
    method: Method,
    url: Option<AuditUrl<'a>>,
    host: Option<Cow<'a, str>>,
    port: Option<u16>,
    rule: Option<&'a str>,
}

/// The URL an audit line names, in pieces: written out only when a line is.
struct AuditUrl<'a> {
    /// `https://`, `http://`, or `gateway:` (then without an authority).
    prefix: &'static str,
    authority: Cow<'a, str>,
    path: AuditPath,
}

/// The normalized path of a request.
enum AuditPath {
    /// The client's own path was already normal: shared with the request, not copied.
    Client(PathAndQuery),
    /// Normalization changed it.
    Normalized(String),
}

// === impl AuditUrl ===

impl AuditUrl<'_> {
    fn new<'a>(
        prefix: &'static str,
        authority: Cow<'a, str>,
        path: &str,
        uri: &Uri,
    ) -> AuditUrl<'a> {
        let path = match uri.path_and_query() {
            Some(pq) if pq.path() == path => AuditPath::Client(pq.clone()),
            _ => AuditPath::Normalized(path.to_owned()),
        };
        AuditUrl {
            prefix,
            authority,
            path,
        }
    }

    fn render(&self) -> String {
        let path = match &self.path {
            AuditPath::Client(pq) => pq.path(),
            AuditPath::Normalized(p) => p,
        };
        [self.prefix, &self.authority, path].concat()
    }
}

/// Handles one request end to end; never fails (errors become OpenAI-shaped responses).
pub async fn handle(
    app: Arc<App>,
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let rid_value = request_id(&req);
    let rid = rid_value.to_str().unwrap_or("invalid");
    let policy = app.policy.load_full();
    let mut info = Info {
        method: req.method().clone(),
        ..Info::default()
    };
    let result = forward(&app, &policy, &ctx, req, &rid_value, &mut info).await;
    let resp = match result {
        Ok(mut resp) => {
            resp.headers_mut()
                .insert(X_REQUEST_ID.clone(), rid_value.clone());
            app.metrics.request(resp.status().as_u16());
            resp
        }
        Err(e) => {
            app.metrics.refused(e.code);
            if e.code == Code::ProtectFailed {
                app.auditor.record(event(
                    EventKind::ProtectError,
                    Some(e.code),
                    &ctx,
                    &info,
                    rid,
                    None,
                ));
            } else if e.code.is_block() {
                app.auditor.record(event(
                    EventKind::Blocked,
                    Some(e.code),
                    &ctx,
                    &info,
                    rid,
                    e.detail.as_deref().cloned(),
                ));
            }
            tracing::info!(code = e.code.as_str(), request_id = %rid, host = info.host.as_deref().unwrap_or(""), "refused: {}", e.message);
            e.response::<Full<Bytes>>(rid)
                .map(|b| b.map_err(|never| match never {}).boxed_unsync())
        }
    };
    Ok(resp)
}

fn event(
    kind: EventKind,
    code: Option<Code>,
    ctx: &Ctx,
    info: &Info,
    rid: &str,
    detail: Option<serde_json::Value>,
) -> AuditEvent {
    AuditEvent {
        event: kind,
        reason: code.map(|c| c.as_str().to_owned()),
        client: Some(ctx.peer.to_string()),
        method: Some(info.method.to_string()),
        url: info.url.as_ref().map(AuditUrl::render),
        host: info.host.as_deref().map(str::to_owned),
        port: info.port,
        rule: info.rule.map(str::to_owned),
        request_id: Some(rid.to_owned()),
        detail,
    }
}

/// The client's `x-request-id` if it is a sane token, else a new one (`req_` and 32 hex
/// digits). A header value, so that it goes into the upstream request and the answer
/// without being copied again; always visible ASCII, so `to_str` cannot fail.
fn request_id<B>(req: &Request<B>) -> HeaderValue {
    if let Some(v) = req.headers().get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(u8::is_ascii_graphic) {
            return v.clone();
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let r: u128 = rand::random();
    let mut id = *b"req_00000000000000000000000000000000";
    for (i, d) in id[4..].iter_mut().enumerate() {
        *d = HEX[((r >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("invalid"))
}

async fn forward<'a>(
    app: &Arc<App>,
    policy: &'a Policy,
    ctx: &'a Ctx,
    req: Request<Incoming>,
    rid_value: &HeaderValue,
    info: &mut Info<'a>,
) -> Result<Response<RespBody>, ProxyError> {
    let rid = rid_value.to_str().unwrap_or("invalid");
    let (mut parts, body) = req.into_parts();
    let gateway = matches!(ctx.origin, Origin::Gateway);
    // Step 2 (first half): normalize the path; refuse ambiguous framing.
    let path = normalize_path(parts.uri.path())
        .map_err(|e| ProxyError::new(Code::InvalidUrl, e.to_string()))?;
    if conflicting_framing(&parts.headers) {
        return Err(ProxyError::new(
            Code::BadRequest,
            "conflicting Content-Length / Transfer-Encoding",
        ));
    }
    let route_header = parts
        .headers
        .get("x-llm-egress-route")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    strip_hop_by_hop(&mut parts.headers);
    strip_control(&mut parts.headers);
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), rid_value.clone());
    let api = ApiRoute::from_path(&path);
    let mut ex = Exchange::default();
    // Step 1 + 2: where the client sent it, and whether that is allowed. In gateway mode
    // the route decides, and each target is checked in the attempt loop.
    let direct = if gateway {
        info.url = Some(AuditUrl::new(
            "gateway:",
            Cow::Borrowed(""),
            &path,
            &parts.uri,
        ));
        if parts.method == http::Method::GET && path.ends_with("/models") {
            return Ok(models_list(policy));
        }
        if api.is_none() {
            return Err(no_route(&path));
        }
        static GATEWAY: std::sync::LazyLock<Label> = std::sync::LazyLock::new(|| "gateway".into());
        ex.provider = Some(GATEWAY.clone());
        parts.headers.remove(header::HOST);
        None
    } else {
        let (https, host, port) = target(ctx, &parts.uri, &parts.headers)?;
        parts.headers.remove(header::HOST);
        info.host = Some(host.clone());
        info.port = Some(port);
        let (scheme, prefix) = match https {
            true => ("https", "https://"),
            false => ("http", "http://"),
        };
        let verdict = policy.check(https, &host, port, &path, &parts.method);
        // An allowed host's authority was made when the policy was compiled.
        let authority = match &verdict {
            Verdict::Allowed(_, rule) => Cow::Borrowed(rule.authority.as_str()),
            _ => Cow::Owned(super::url::authority(https, &host, port)),
        };
        let url = info
            .url
            .insert(AuditUrl::new(prefix, authority, &path, &parts.uri));
        let (endpoint, rule) = match verdict {
            Verdict::Allowed(e, r) => (e, r),
            Verdict::MethodNotAllowed(e) => {
                info.rule = Some(&e.name);
                return Err(ProxyError::new(
                    Code::MethodNotAllowed,
                    format!("{} is not allowed for {}", parts.method, e.name),
                ));
            }
            Verdict::NotAllowed => {
                return Err(ProxyError::new(
                    Code::EndpointNotAllowed,
                    format!("{} is not on the allowlist", url.render()),
                ))
            }
        };
        info.rule = Some(&endpoint.name);
        Some((https, host, port, scheme, rule, endpoint))
    };
    // Step 3 + 4: parse the body of known OpenAI routes and protect it.
    let provider = direct
        .as_ref()
        .and_then(|(https, host, port, ..)| policy.provider_for(*https, host, *port, &path));
    // Metrics label: the provider's name (set by the parse step), else the allow rule's.
    if let (None, Some((.., endpoint))) = (provider, &direct) {
        ex.provider = Some(endpoint.name.clone());
    }
    let (body, mut parsed) = exchange::parse(
        policy.protector.as_deref(),
        &parts.method,
        &mut parts.headers,
        body,
        api,
        provider,
        policy.limits.max_request_body,
        &mut ex,
    )
    .await?;
    ex.model = Some(policy.model_label(parsed.as_ref().and_then(|p| p.model())));
    // Step 5: route (the prompt is estimated only when a route matches on its size).
    let routes = &policy.model.route;
    if let (Some(p), Some(api), false) = (parsed.as_mut(), api, routes.is_empty()) {
        let sized = policy.routes_match_prompt_size;
        let found = crate::route::find_route(
            routes,
            &crate::route::RouteRequest {
                model: p.model(),
                prompt_tokens: sized.then(|| crate::tokens::estimate(p)),
                path_suffix: &path,
                route_header: route_header.as_deref(),
            },
        );
        if let Some((_, route)) = found {
            info.rule = Some(&route.name);
            let routed = routing::Routed {
                route,
                api,
                method: parts.method.clone(),
                query: parts.uri.query().map(str::to_owned),
                headers: parts.headers.clone(),
                client_host: direct.as_ref().map(|d| d.1.to_string()),
                stream: ex.stream,
                rid: rid.to_owned(),
            };
            let won = routing::attempt(app, policy, routed, p).await?;
            // Usage is counted under the model the answering provider was asked for.
            ex.model = Some(policy.model_label(p.model()));
            ex.provider = Some(won.provider);
            ex.price = won.price;
            return respond(app, policy, ctx, info, rid, ex, won.resp).await;
        }
    }
    let Some((_, host, _, scheme, rule, _)) = direct else {
        return Err(no_route(&path));
    };
    // Step 6: forward the normalized URL over the pooled client. A path that was already
    // normal goes out as the client's own bytes (shared, not copied).
    let bad_url = |e: &dyn std::fmt::Display| ProxyError::new(Code::InvalidUrl, e.to_string());
    let pq = match path {
        Cow::Borrowed(_) => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or(PathAndQuery::from_static("/")),
        Cow::Owned(p) => PathAndQuery::try_from(match parts.uri.query() {
            Some(q) => format!("{p}?{q}"),
            None => p,
        })
        .map_err(|e| bad_url(&e))?,
    };
    parts.uri = Uri::builder()
        .scheme(scheme)
        .authority(rule.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|e| bad_url(&e))?;
    // What the client library would set from the URI, made once per host.
    if let Some(h) = &rule.host_header {
        parts.headers.insert(header::HOST, h.clone());
    }
    parts.version = Version::HTTP_11;
    let up_body = match body {
        exchange::Body::Stream(b) => ReqBody::Stream(b),
        exchange::Body::Bytes(b) => ReqBody::full(b),
    };
    let up_req = Request::from_parts(parts, up_body);
    let t0 = Instant::now();
    let fut = rule.client.request(up_req);
    let resp = match tokio::time::timeout(policy.limits.first_byte_timeout, fut).await {
        Err(_) => {
            return Err(ProxyError::new(
                Code::UpstreamTimeout,
                format!("{host} did not answer in time"),
            ))
        }
        Ok(Err(e)) => return Err(upstream_error(&host, &e)),
        Ok(Ok(r)) => r,
    };
    app.metrics.upstream_latency(t0.elapsed());
    respond(app, policy, ctx, info, rid, ex, resp).await
}

/// Step 7: the response, streamed back.
async fn respond<B>(
    app: &Arc<App>,
    policy: &Policy,
    ctx: &Ctx,
    info: &Info<'_>,
    rid: &str,
    mut ex: Exchange,
    resp: Response<B>,
) -> Result<Response<RespBody>, ProxyError>
where
    B: response::IntoRespBody,
    B::Error: Into<BoxError>,
{
    // The fields of an audit line are made only when this exchange may write one: an
    // `allowed` line (`log_allowed`) or a tool-call refusal.
    let base = (policy.log_allowed || policy.tool_calls.is_some())
        .then(|| event(EventKind::Allowed, None, ctx, info, rid, None));
    let tool_check = policy
        .tool_calls
        .as_ref()
        .map(|t| (Arc::new(std::mem::take(&mut ex.tools)), t.on_invalid));
    let account = Account {
        app: app.clone(),
        // Every path that gets here set it; `other` should one ever not.
        provider: ex
            .provider
            .take()
            .unwrap_or_else(|| policy.model_label(None)),
        model: ex.model.take().unwrap_or_else(|| policy.model_label(None)),
        price: ex.price.take(),
        prompt_chars: ex.prompt_chars,
        allowed: base.as_ref().filter(|_| policy.log_allowed).cloned(),
    };
    for (d, n) in &ex.protected {
        app.metrics.protected(d, *n);
    }
    response::respond(
        app,
        ex,
        tool_check,
        policy.protector.clone(),
        account,
        base,
        resp,
    )
    .await
}

fn no_route(path: &str) -> ProxyError {
    ProxyError::new(
        Code::NoRoute,
        format!("no [[route]] takes {path}; in gateway mode every request needs a route (or use HTTPS_PROXY)"),
    )
}

/// `GET /v1/models` in gateway mode: the model names and aliases the routes accept.
fn models_list(policy: &Policy) -> Response<RespBody> {
    let mut ids: Vec<&str> = policy
        .model
        .route
        .iter()
        .flat_map(|r| r.matcher.model.iter().flatten())
        .map(String::as_str)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let data: Vec<_> = ids
        .iter()
        .map(|id| serde_json::json!({ "id": id, "object": "model", "created": 0, "owned_by": "llm-egress" }))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "object": "list", "data": data }))
        .unwrap_or_default();
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Works out `(https, host, port)` and enforces CONNECT / Host / `:authority` agreement.
fn target<'a>(
    ctx: &'a Ctx,
    uri: &Uri,
    headers: &http::HeaderMap,
) -> Result<(bool, Cow<'a, str>, u16), ProxyError> {
    match &ctx.origin {
        Origin::Inspect { host, port } => {
            // The common case first: the client names the CONNECT host exactly as it was
            // normalized, so there is nothing to parse or lower-case.
            let stated = match uri.authority() {
                Some(a) => Some(a.as_str()),
                None => headers.get(header::HOST).and_then(|v| v.to_str().ok()),
            };
            if stated.is_some_and(|s| names_exactly(s, host, *port)) {
                return Ok((true, Cow::Borrowed(host), *port));
            }
            // HTTP/2 carries :authority in the URI; HTTP/1.1 carries Host.
            let (h, p) = match uri.authority() {
                Some(a) => (a.host().to_owned(), a.port_u16()),
                None => {
                    let raw = headers
                        .get(header::HOST)
                        .and_then(|v| v.to_str().ok())
                        .ok_or_else(|| {
                            ProxyError::new(Code::HostMismatch, "request has no Host header")
                        })?;
                    split_host_port(raw)?
                }
            };
            let h = normalize_host(&h)
                .map_err(|_| ProxyError::new(Code::HostMismatch, "malformed Host"))?;
            if &h != host || p.unwrap_or(443) != *port {
                return Err(ProxyError::new(
                    Code::HostMismatch,
                    format!("request authority {h} does not match the CONNECT host {host}:{port}"),
                ));
            }
            Ok((true, Cow::Borrowed(host), *port))
        }
        Origin::Absolute => {
            let https = match uri.scheme_str() {
                Some("http") => false,
                Some("https") => true,
                _ => return Err(ProxyError::new(Code::InvalidUrl, "unsupported scheme")),
            };
            let a = uri
                .authority()
                .ok_or_else(|| ProxyError::new(Code::InvalidUrl, "no authority"))?;
            let h = normalize_host(a.host())
                .map_err(|e| ProxyError::new(Code::InvalidUrl, e.to_string()))?;
            Ok((
                https,
                Cow::Owned(h),
                a.port_u16().unwrap_or(if https { 443 } else { 80 }),
            ))
        }
        Origin::Gateway => Err(no_route(uri.path())),
    }
}

/// `authority` is `host` (port 443) or `host:port`, written exactly so, with `host`
/// already normalized: what the slow path would accept after parsing and normalizing.
fn names_exactly(authority: &str, host: &str, port: u16) -> bool {
    if host.contains(':') {
        // An IPv6 literal: bracketed in the header, so only the slow path can compare it.
        return false;
    }
    match authority.strip_prefix(host) {
        Some("") => port == 443,
        Some(rest) => rest.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse() == Ok(port)
        }),
        None => false,
    }
}

fn split_host_port(raw: &str) -> Result<(String, Option<u16>), ProxyError> {
    let bad = || ProxyError::new(Code::HostMismatch, "malformed Host header");
    let a: http::uri::Authority = raw.parse().map_err(|_| bad())?;
    Ok((a.host().to_owned(), a.port_u16()))
}

fn upstream_error(host: &str, e: &crate::tls::client::UpstreamError) -> ProxyError {
    match find_connect_error(e) {
        Some(ConnectError::PinMismatch(p)) => ProxyError::new(
            Code::CertificatePinMismatch,
            format!("the certificate chain of {host} matches no configured pin"),
        )
        .with_detail(serde_json::json!({ "observed_pins": p.observed })),
        Some(c @ ConnectError::Tls { .. }) => {
            ProxyError::new(Code::UpstreamTlsError, c.to_string())
        }
        Some(c @ ConnectError::PrivateAddress { .. }) => {
            ProxyError::new(Code::PrivateAddress, c.to_string())
        }
        Some(c @ ConnectError::Timeout(_)) => ProxyError::new(Code::UpstreamTimeout, c.to_string()),
        Some(c @ ConnectError::Unreachable { .. }) => {
            ProxyError::new(Code::UpstreamUnreachable, c.to_string())
        }
        None => ProxyError::new(
            Code::UpstreamUnreachable,
            format!("upstream {host} failed: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the slow path of [`target`] accepts for a CONNECT to `host:port`.
    fn slow_accepts(authority: &str, host: &str, port: u16) -> bool {
        split_host_port(authority).is_ok_and(|(h, p)| {
            normalize_host(&h).is_ok_and(|h| h == host) && p.unwrap_or(443) == port
        })
    }

    #[test]
    fn exact_authorities_take_the_fast_path() {
        assert!(names_exactly("api.openai.com", "api.openai.com", 443));
        assert!(names_exactly("api.openai.com:443", "api.openai.com", 443));
        assert!(names_exactly("mock.test:8443", "mock.test", 8443));
        assert!(!names_exactly("api.openai.com", "api.openai.com", 8443));
        assert!(!names_exactly("api.openai.com:8443", "api.openai.com", 443));
        assert!(!names_exactly("api.openai.com.evil", "api.openai.com", 443));
        assert!(!names_exactly("api.openai.com:", "api.openai.com", 443));
        assert!(!names_exactly("api.openai.com:+443", "api.openai.com", 443));
        assert!(!names_exactly("API.openai.com", "api.openai.com", 443));
        assert!(!names_exactly("::1:443", "::1", 443));
        // The slow path still takes what normalizes to the CONNECT host.
        assert!(slow_accepts("API.openai.com.:443", "api.openai.com", 443));
    }

    #[test]
    fn generated_request_ids_are_tokens() {
        let req = Request::new(());
        let a = request_id(&req);
        let b = request_id(&req);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert!(s.starts_with("req_"));
        assert!(s[4..]
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        let mut sent = Request::new(());
        sent.headers_mut()
            .insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&sent), "abc-123");
        sent.headers_mut()
            .insert("x-request-id", HeaderValue::from_static("has space"));
        assert!(request_id(&sent).to_str().unwrap().starts_with("req_"));
    }

    #[test]
    fn audit_url_names_the_normalized_path_without_the_query() {
        let uri: Uri = "https://api.x.test/v1/models?limit=2".parse().unwrap();
        let url = |prefix, authority: &'static str, path: &str| {
            AuditUrl::new(prefix, Cow::Borrowed(authority), path, &uri).render()
        };
        // The client's own path, shared with the request.
        assert_eq!(
            url("https://", "api.x.test", "/v1/models"),
            "https://api.x.test/v1/models"
        );
        // A path normalization changed.
        assert_eq!(
            url("http://", "h:8080", "/v1/chat"),
            "http://h:8080/v1/chat"
        );
        assert_eq!(url("gateway:", "", "/v1/models"), "gateway:/v1/models");
    }

    proptest! {
        /// The fast path never accepts what the slow path would refuse.
        #[test]
        fn fast_path_agrees_with_the_slow_path(
            host in "[a-z0-9.:-]{1,12}",
            port in prop_oneof![Just(443u16), Just(8443u16), any::<u16>()],
            suffix in prop_oneof![
                Just(String::new()),
                Just(":443".to_owned()),
                Just(":8443".to_owned()),
                "[:0-9+]{0,7}",
            ],
            upper in any::<bool>(),
        ) {
            prop_assume!(normalize_host(&host).is_ok_and(|h| h == host));
            let shown = if upper { host.to_ascii_uppercase() } else { host.clone() };
            let authority = format!("{shown}{suffix}");
            if names_exactly(&authority, &host, port) {
                prop_assert!(slow_accepts(&authority, &host, port), "{authority} {host}:{port}");
            }
        }
    }
}
