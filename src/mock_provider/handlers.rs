//! One request, in a fixed order: control paths → read body → pick the fault → record →
//! route → latency / disconnect → answer (or the fault's error) → pace, cut and gzip → count.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, VARY};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, LengthLimitError, Limited, StreamBody};
use hyper::body::Incoming;
use serde::Serialize;

use super::body::{accepts_gzip, full, gzip_all, MockBody};
use super::connection::ConnectionSettings;
use super::errors::{error_reply, openai_error, ErrorReply};
use super::faults::{FaultSpec, Stop, Triggers};
use super::record::{Record, Recorder};
use super::sse::{EventStream, Pacing, Source};
use super::wire::{unix_micros, unix_secs, Meta};
use super::{chat, completions, control, embeddings, responses, MockOptions};

/// The request header that picks a fault for one request (overriding `--faults`).
pub(crate) const FAULT_HEADER: &str = "x-mock-fault";
/// Request bodies larger than this are refused with 413.
const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;

/// What every connection of one mock shares.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) recorder: Recorder,
    pub(crate) name: HeaderValue,
    /// Handshake delay and keep-alive of new connections.
    pub(crate) connections: ConnectionSettings,
    triggers: Triggers,
    faults: Option<FaultSpec>,
    chunk_delay: Duration,
    fingerprint: Arc<str>,
    serial: AtomicU64,
}

/// An endpoint's answer, before faults, pacing and headers.
pub(crate) enum Reply {
    /// A 200 JSON body.
    Json(Bytes),
    /// A 200 `text/event-stream` body.
    Stream(Source),
    /// An error body.
    Error(ErrorReply),
}

/// The service error that makes hyper drop the connection (HTTP/1.1) or reset the stream
/// (HTTP/2) without a response: the `disconnect` fault.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by the mock provider's disconnect fault")]
pub(crate) struct Disconnect;

/// The OpenAI endpoints, matched on the path's ending so any base path works
/// (`/v1/...`, `/openai/v1/...`, `/v1beta/openai/...`).
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Models,
    Model(String),
}

// === impl State ===

impl State {
    /// Shared state for `opts`; fails if the name is not a valid header value.
    pub(crate) fn new(opts: MockOptions) -> io::Result<Self> {
        let name = HeaderValue::from_str(&opts.name).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("mock name {:?} is not a valid header value", opts.name),
            )
        })?;
        Ok(Self {
            recorder: Recorder::new(opts.record, opts.record_limit),
            name,
            connections: ConnectionSettings::new(opts.handshake_delay, opts.keep_alive),
            triggers: Triggers::default(),
            faults: opts.faults.filter(|spec| !spec.is_noop()),
            chunk_delay: opts.stream_chunk_delay,
            fingerprint: Arc::from(opts.name),
            serial: AtomicU64::new(1),
        })
    }

    /// Identity of a new response: `<prefix><N>`, now, the model and the mock's name.
    pub(crate) fn meta(&self, prefix: &str, model: &str) -> Meta {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        Meta {
            serial,
            id: format!("{prefix}{serial}"),
            created: unix_secs(),
            model: model.to_owned(),
            fingerprint: Arc::clone(&self.fingerprint),
        }
    }
}

// === impl Reply ===

impl Reply {
    /// A 200 JSON reply.
    pub(crate) fn json<T: Serialize>(value: &T) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply::Json(Bytes::from(body)),
            Err(err) => Reply::Error(openai_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("mock provider: cannot serialize the response: {err}"),
            )),
        }
    }
}

/// The 400 for a request body that is not the JSON an endpoint expects.
pub(crate) fn bad_json(err: &serde_json::Error) -> Reply {
    let message = format!("We could not parse the JSON body of your request: {err}");
    Reply::Error(openai_error(StatusCode::BAD_REQUEST, &message))
}

/// Serves one request.
pub(crate) async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, Disconnect> {
    if request.uri().path().starts_with("/__mock/") {
        return Ok(control::handle(&state, request.method(), request.uri()));
    }
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            let (status, message) = if err.downcast_ref::<LengthLimitError>().is_some() {
                (StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
            } else {
                (StatusCode::BAD_REQUEST, "cannot read the request body")
            };
            let reply = Reply::Error(openai_error(status, message));
            return Ok(respond(&state, parts.uri.path(), reply, None, false));
        }
    };

    let header_fault = parts
        .headers
        .get(FAULT_HEADER)
        .map(|value| match value.to_str() {
            Ok(text) => text.parse::<FaultSpec>().map_err(|err| err.to_string()),
            Err(_) => Err(format!("{FAULT_HEADER} is not valid UTF-8")),
        });
    let accepts_gzip = accepts_gzip(&parts.headers);
    let uri = parts.uri;
    if state.recorder.enabled() {
        state.recorder.record(Record {
            index: 0,
            ts_us: unix_micros(),
            method: parts.method.clone(),
            uri: uri.clone(),
            version: parts.version,
            headers: parts.headers,
            body: body.clone(),
        });
    }
    let path = uri.path();

    let name = &*state.fingerprint;
    let spec = match &header_fault {
        Some(Ok(spec)) if spec.aimed_at(name) => Some(spec),
        // Aimed at another mock (`mock=NAME`): as if the header were absent.
        Some(Ok(_)) | None => state.faults.as_ref(),
        Some(Err(message)) => {
            let reply = Reply::Error(openai_error(StatusCode::BAD_REQUEST, message));
            return Ok(respond(&state, path, reply, None, false));
        }
    };
    let fault =
        spec.filter(|spec| !spec.is_noop() && spec.aimed_at(name) && state.triggers.fires(spec));
    if let Some(latency) = fault.and_then(|f| f.latency) {
        tokio::time::sleep(latency).await;
    }
    if fault.is_some_and(|f| f.disconnect) {
        state.recorder.count(path, None);
        return Err(Disconnect);
    }
    let reply = match fault.filter(|f| f.is_error()) {
        Some(f) => {
            let status =
                StatusCode::from_u16(f.error_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = format!("mock provider fault: status {}", status.as_u16());
            Reply::Error(error_reply(f.error_shape(), status, &message))
        }
        None => answer(&state, &parts.method, path, &body),
    };
    let gzip = accepts_gzip && fault.is_some_and(|f| f.gzip);
    Ok(respond(&state, path, reply, fault, gzip))
}

/// Routes to an endpoint and answers it.
fn answer(state: &State, method: &Method, path: &str, body: &[u8]) -> Reply {
    let endpoint = match route(path) {
        Some(endpoint) => endpoint,
        None => {
            let message = format!("Invalid URL ({method} {path})");
            return Reply::Error(openai_error(StatusCode::NOT_FOUND, &message));
        }
    };
    let expected = match endpoint {
        Endpoint::Models | Endpoint::Model(_) => Method::GET,
        _ => Method::POST,
    };
    if method != expected {
        let message = format!("Method {method} not allowed for {path} (use {expected})");
        return Reply::Error(openai_error(StatusCode::METHOD_NOT_ALLOWED, &message));
    }
    match endpoint {
        Endpoint::Chat => chat::chat(state, body),
        Endpoint::Completions => completions::completion(state, body),
        Endpoint::Embeddings => embeddings::embeddings(body),
        Endpoint::Responses => responses::responses(state, body),
        Endpoint::Models => Reply::Json(Bytes::from_static(embeddings::MODELS)),
        Endpoint::Model(id) => embeddings::model(&id),
    }
}

fn route(path: &str) -> Option<Endpoint> {
    let path = path.trim_end_matches('/');
    if path.ends_with("/chat/completions") {
        Some(Endpoint::Chat)
    } else if path.ends_with("/completions") {
        Some(Endpoint::Completions)
    } else if path.ends_with("/embeddings") {
        Some(Endpoint::Embeddings)
    } else if path.ends_with("/responses") {
        Some(Endpoint::Responses)
    } else if path.ends_with("/models") {
        Some(Endpoint::Models)
    } else {
        let (_, id) = path.split_once("/models/")?;
        Some(Endpoint::Model(id.to_owned()))
    }
}

/// Turns a reply into a response: faults that shape the body, gzip, headers; counts it.
fn respond(
    state: &State,
    path: &str,
    reply: Reply,
    fault: Option<&FaultSpec>,
    gzip: bool,
) -> Response<MockBody> {
    let pacing = Pacing {
        delay: fault
            .and_then(|f| f.chunk_delay)
            .unwrap_or(state.chunk_delay),
        first_byte: fault.and_then(|f| f.first_byte).unwrap_or_default(),
        stop: fault.and_then(|f| f.stop),
        gzip,
    };
    let (status, content_type, body) = match reply {
        Reply::Json(body) => (StatusCode::OK, Some("application/json"), body),
        Reply::Error(error) => (error.status, error.content_type, error.body),
        Reply::Stream(source) => {
            let stream = EventStream::new(source, pacing);
            let body = Either::Right(StreamBody::new(stream));
            return with_headers(state, path, StatusCode::OK, Some(SSE), body, fault, gzip);
        }
    };
    let stream = |body: Bytes| {
        Either::Right(StreamBody::new(EventStream::new(
            Source::Static(body),
            pacing,
        )))
    };
    let (body, gzip) = match pacing.stop {
        // A JSON body cut or ended early after N bytes, sent as a (chunked) stream.
        Some(Stop::CutAfter(n) | Stop::EndAfter(n)) => {
            (stream(body.slice(..n.min(body.len()))), gzip)
        }
        None if !pacing.first_byte.is_zero() => (stream(body), gzip),
        None if gzip && !body.is_empty() => match gzip_all(&body) {
            Ok(compressed) => (full(compressed), true),
            Err(_) => (full(body), false),
        },
        None => (full(body), false),
    };
    with_headers(state, path, status, content_type, body, fault, gzip)
}

const SSE: &str = "text/event-stream";

/// Counts the response and sets its status and headers (`content-type`, `content-encoding`,
/// `retry-after`, `x-mock-name`).
fn with_headers(
    state: &State,
    path: &str,
    status: StatusCode,
    content_type: Option<&'static str>,
    body: MockBody,
    fault: Option<&FaultSpec>,
    gzip: bool,
) -> Response<MockBody> {
    state.recorder.count(path, Some(status.as_u16()));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(content_type) = content_type {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if content_type == SSE {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
    }
    if gzip {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    }
    if let Some(seconds) = fault.and_then(|f| f.retry_after) {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    headers.insert("x-mock-name", state.name.clone());
    response
}

/// A JSON response for the control paths.
pub(crate) fn json_response(
    state: &State,
    status: StatusCode,
    body: Vec<u8>,
) -> Response<MockBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-mock-name", state.name.clone());
    response
}
