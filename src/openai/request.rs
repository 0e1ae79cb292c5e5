//! Request parsing for the OpenAI routes the proxy understands.
//!
//! Every body is validated in one pass that keeps only the top-level fields each request
//! needs (model, streaming, usage opt-in, output caps); the messages are skipped, not
//! built. A step that needs more (protection, a rewrite, prompt estimates, tool
//! declarations) gets the body as a `serde_json` map, built on first use, that keeps key
//! order and every unknown field, so a request the proxy changes (usage opt-in, model
//! rewrite) is re-serialized with nothing lost, and a request it does not change is
//! forwarded as the original bytes (see [`ParsedRequest::is_modified`]).

mod prompt;
mod skim;

use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::{Map, Value};

pub use prompt::{estimate_tokens_heuristic, REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE};

/// A known OpenAI API route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiRoute {
    /// `POST /chat/completions`
    ChatCompletions,
    /// `POST /completions` (legacy text completions)
    Completions,
    /// `POST /embeddings`
    Embeddings,
    /// `POST /responses`
    Responses,
    /// `GET /models`
    Models,
}

/// A declared tool: a chat `tools[].function`, a responses-API function tool, or a legacy
/// chat `functions[]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolDecl {
    /// The function name the model calls it by.
    pub name: String,
    /// The JSON Schema of its arguments, when declared.
    pub parameters: Option<Value>,
}

/// A request body that is not a JSON object, with the position serde_json reports.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at line {line} column {column}: {message}")]
pub struct RequestJsonError {
    /// 1-based line of the error.
    pub line: usize,
    /// 1-based column of the error (0 when the input ended before any byte of a value).
    pub column: usize,
    /// What was wrong, without the position.
    pub message: String,
}

/// A parsed request body and the fields later steps need.
#[derive(Clone, Debug)]
pub struct ParsedRequest {
    route: ApiRoute,
    /// The original bytes; empty for a bodiless `GET /models`.
    raw: Bytes,
    /// The body as a map, built on first use; `None` inside for a bodiless request.
    body: OnceLock<Option<Map<String, Value>>>,
    model: Option<skim::Text>,
    stream: bool,
    client_include_usage: Option<bool>,
    include_usage: Option<bool>,
    max_output_tokens: Option<u64>,
    /// A `tools` or `functions` key is present (otherwise there is nothing to declare).
    declares_tools: bool,
    /// The declared tools, read on first use.
    tools: OnceLock<Vec<ToolDecl>>,
    modified: bool,
    /// Where the `model` value lies in `raw` while it can be spliced (one `model` key,
    /// the map not built).
    model_span: Option<(usize, usize)>,
}

impl PartialEq for ParsedRequest {
    /// Equal when they hold the same body and fields, whether or not either has built its
    /// map yet.
    fn eq(&self, other: &Self) -> bool {
        self.route == other.route
            && self.body() == other.body()
            && self.model() == other.model()
            && self.stream == other.stream
            && self.client_include_usage == other.client_include_usage
            && self.include_usage == other.include_usage
            && self.max_output_tokens == other.max_output_tokens
            && self.modified == other.modified
    }
}

// === impl ApiRoute ===

impl ApiRoute {
    /// Recognizes a route from the request path left after the proxy stripped the matched
    /// base URL.
    ///
    /// Matching is on the trailing path segments, so whatever prefix is left (`/v1`,
    /// `/openai/v1`, `/v1beta/openai`, Azure's `/openai/deployments/<name>`) is accepted.
    /// A query string and one trailing slash are ignored. A route segment that follows
    /// `models` is a model id (`/v1/models/embeddings`), not a route, and sub-resources
    /// such as `/responses/<id>` or `/models/<id>` are not routes either: the proxy passes
    /// those through unparsed.
    pub fn from_path(path_suffix: &str) -> Option<Self> {
        let path = path_suffix.split(['?', '#']).next().unwrap_or_default();
        let path = path.strip_suffix('/').unwrap_or(path);
        let mut segments = path.rsplit('/');
        let last = segments.next()?;
        let prev = segments.next();
        let (route, before) = match last {
            "completions" if prev == Some("chat") => (Self::ChatCompletions, segments.next()),
            "completions" => (Self::Completions, prev),
            "embeddings" => (Self::Embeddings, prev),
            "responses" => (Self::Responses, prev),
            "models" => (Self::Models, prev),
            _ => return None,
        };
        (before != Some("models")).then_some(route)
    }

    /// The route's canonical path, without a version prefix.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
            Self::Responses => "/responses",
            Self::Models => "/models",
        }
    }

    /// Whether a streamed response can be asked for a usage chunk with
    /// `stream_options.include_usage` (the responses API always reports usage).
    pub fn supports_stream_usage(self) -> bool {
        matches!(self, Self::ChatCompletions | Self::Completions)
    }
}

// === impl ParsedRequest ===

/// Parses a request body for `route` (copying it; the proxy uses [`parse_request_bytes`]).
///
/// The body must be a JSON object; `GET /models` may have an empty (or blank) body.
///
/// # Errors
///
/// [`RequestJsonError`] when the body is not valid JSON or not an object; the proxy
/// answers `400 invalid_request_json` with it.
pub fn parse_request(route: ApiRoute, body: &[u8]) -> Result<ParsedRequest, RequestJsonError> {
    parse_request_bytes(route, Bytes::copy_from_slice(body))
}

/// [`parse_request`] of a body the request keeps (no copy): validates it and reads the
/// top-level fields without building the messages.
///
/// # Errors
///
/// As [`parse_request`].
pub fn parse_request_bytes(
    route: ApiRoute,
    body: Bytes,
) -> Result<ParsedRequest, RequestJsonError> {
    if route == ApiRoute::Models && body.trim_ascii().is_empty() {
        return Ok(ParsedRequest::new(route, Bytes::new(), None));
    }
    if let Some(skim) = skim::Skim::of(&body) {
        return Ok(ParsedRequest::new(route, body, Some(skim)));
    }
    // Not an object, or not JSON: the full parse names what is wrong and where.
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => {
            // Unreachable while the skim accepts what a `Value` accepts; if they ever
            // disagree, build the fields from the map rather than refuse the request.
            let mut req = ParsedRequest::new(route, body, None);
            req.fill_from_map(map);
            Ok(req)
        }
        Ok(other) => Err(not_an_object(&body, &other)),
        Err(err) => Err(RequestJsonError::from(err)),
    }
}

impl ParsedRequest {
    fn new(route: ApiRoute, raw: Bytes, skim: Option<skim::Skim>) -> Self {
        let skim = skim.unwrap_or_default();
        let max_output_tokens = skim.max_output_tokens();
        Self {
            route,
            raw,
            body: OnceLock::new(),
            model: skim.model,
            stream: skim.stream.unwrap_or(false),
            client_include_usage: skim.include_usage,
            include_usage: skim.include_usage,
            max_output_tokens,
            declares_tools: skim.declares_tools,
            tools: OnceLock::new(),
            modified: false,
            model_span: skim.model_span,
        }
    }

    /// Takes the fields from an already built map (the fallback of
    /// [`parse_request_bytes`]).
    fn fill_from_map(&mut self, map: Map<String, Value>) {
        self.model = map
            .get("model")
            .and_then(Value::as_str)
            .map(|m| skim::Text::Owned(m.to_owned()));
        self.stream = map.get("stream").and_then(Value::as_bool).unwrap_or(false);
        self.include_usage = map
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool);
        self.client_include_usage = self.include_usage;
        self.max_output_tokens = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|key| map.get(*key).and_then(Value::as_u64));
        self.declares_tools = map.contains_key("tools") || map.contains_key("functions");
        self.body = OnceLock::from(Some(map));
    }

    /// The route this body was parsed for.
    pub fn route(&self) -> ApiRoute {
        self.route
    }

    /// The `model` field, if it is a string.
    pub fn model(&self) -> Option<&str> {
        match self.model.as_ref()? {
            skim::Text::At(start, end) => std::str::from_utf8(self.raw.get(*start..*end)?).ok(),
            skim::Text::Owned(m) => Some(m),
        }
    }

    /// Whether the client asked for a streamed response (`"stream": true`).
    pub fn stream(&self) -> bool {
        self.stream
    }

    /// The current `stream_options.include_usage`, if it is a boolean.
    pub fn stream_options_include_usage(&self) -> Option<bool> {
        self.include_usage
    }

    /// Whether the client itself asked for the usage chunk; when it did not and the proxy
    /// asked for it ([`ParsedRequest::set_include_usage`]), the proxy drops that chunk.
    pub fn client_requested_usage(&self) -> bool {
        self.client_include_usage == Some(true)
    }

    /// The output cap: `max_completion_tokens`, else `max_tokens`, else
    /// `max_output_tokens` (responses API), when a non-negative integer.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_output_tokens
    }

    /// The function tools the request declares, in order (read from the body on first
    /// use, and only when it has a `tools` or `functions` key).
    pub fn tools(&self) -> &[ToolDecl] {
        if !self.declares_tools {
            return &[];
        }
        self.tools
            .get_or_init(|| self.body().map(tool_decls).unwrap_or_default())
    }

    /// The parsed body (`None` for a bodiless `GET /models`), built on first use.
    pub fn body(&self) -> Option<&Map<String, Value>> {
        self.body
            .get_or_init(|| {
                if !self.has_body() {
                    return None;
                }
                // The skim accepted these bytes, so they parse into a map: the skim takes
                // exactly what a `Value` takes.
                serde_json::from_slice::<Map<String, Value>>(&self.raw).ok()
            })
            .as_ref()
    }

    /// The body, for a step that rewrites content. Marks the request modified; the
    /// extracted fields above keep the values they were parsed with (use
    /// [`ParsedRequest::set_model`] to change the model).
    pub fn body_mut(&mut self) -> Option<&mut Map<String, Value>> {
        self.modified = true;
        self.map_mut()
    }

    /// The body map, built first if need be (does not mark the request modified).
    fn map_mut(&mut self) -> Option<&mut Map<String, Value>> {
        self.body();
        self.body.get_mut().and_then(Option::as_mut)
    }

    /// Swaps in a body whose text fields a step rewrote in the raw bytes (prompt
    /// protection): the fields read at parse time (model, stream, options, tools) must be
    /// unchanged by the rewrite. Only before the map was changed; returns false (and
    /// changes nothing) after.
    pub fn replace_raw(&mut self, raw: Bytes) -> bool {
        if self.modified {
            return false;
        }
        // The rewrite may have moved the model's bytes.
        self.model = self.model().map(|m| skim::Text::Owned(m.to_owned()));
        self.raw = raw;
        self.body = OnceLock::new();
        self.model_span = None;
        true
    }

    /// Whether the request came with a body (a bodiless `GET /models` does not). A step
    /// that must see the content fails closed when this is true and [`Self::body`] is
    /// `None`.
    pub fn has_body(&self) -> bool {
        !self.raw.is_empty()
    }

    /// Whether the body map was changed since parsing; if not, [`Self::to_bytes`] gives the
    /// bytes as read (or with only the model's value spliced in, see [`Self::set_model`]).
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    /// Replaces the `model` (keeping its position among the keys). While the body is still
    /// the bytes as read, only the model's value is spliced in them: the rest goes out
    /// byte for byte, and no map is built.
    pub fn set_model(&mut self, model: &str) {
        if let (Some((start, end)), false, None) = (self.model_span, self.modified, self.body.get())
        {
            // A string's JSON encoding cannot fail.
            let quoted = serde_json::to_string(model).unwrap_or_default();
            let mut out = Vec::with_capacity(self.raw.len() - (end - start) + quoted.len());
            out.extend_from_slice(&self.raw[..start]);
            out.extend_from_slice(quoted.as_bytes());
            out.extend_from_slice(&self.raw[end..]);
            self.raw = Bytes::from(out);
            self.model_span = Some((start, start + quoted.len()));
            self.model = Some(skim::Text::Owned(model.to_owned()));
            return;
        }
        if let Some(body) = self.map_mut() {
            body.insert("model".to_owned(), Value::String(model.to_owned()));
            self.model = Some(skim::Text::Owned(model.to_owned()));
            self.modified = true;
        }
    }

    /// Asks a streamed chat or text completion for the final usage chunk by merging
    /// `"include_usage": true` into the client's `stream_options` (other keys are kept; a
    /// missing or `null` `stream_options` becomes an object).
    ///
    /// Returns whether the request now asks for usage. A non-streamed request, a route
    /// without the option and a `stream_options` that is not an object are left alone
    /// (upstreams reject `stream_options` on non-streamed requests).
    pub fn set_include_usage(&mut self) -> bool {
        if self.include_usage == Some(true) {
            return true;
        }
        if !self.stream || !self.route.supports_stream_usage() {
            return false;
        }
        let Some(body) = self.map_mut() else {
            return false;
        };
        let options = body
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if options.is_null() {
            *options = Value::Object(Map::new());
        }
        let Some(options) = options.as_object_mut() else {
            return false;
        };
        options.insert("include_usage".to_owned(), Value::Bool(true));
        self.include_usage = Some(true);
        self.modified = true;
        true
    }

    /// The body to send: the original bytes while nothing changed it, else re-serialized
    /// (compact; key order and unknown fields as parsed). Empty for a bodiless request.
    pub fn to_bytes(&self) -> Bytes {
        if !self.modified {
            return self.raw.clone();
        }
        match self.body() {
            // Serializing a map of `Value`s into a `Vec` cannot fail: keys are strings and
            // numbers are finite.
            Some(body) => serde_json::to_vec(body)
                .map(Bytes::from)
                .unwrap_or_default(),
            None => Bytes::new(),
        }
    }
}

/// The function tools of a chat or responses request, and legacy chat `functions`.
fn tool_decls(body: &Map<String, Value>) -> Vec<ToolDecl> {
    let decl = |def: &Value| {
        let name = def.get("name")?.as_str()?.to_owned();
        let parameters = def.get("parameters").cloned();
        Some(ToolDecl { name, parameters })
    };
    let tools = body.get("tools").and_then(Value::as_array);
    let functions = body.get("functions").and_then(Value::as_array);
    let tools = tools.into_iter().flatten().filter_map(|tool| {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return None;
        }
        // Chat nests the definition under `function`; the responses API does not.
        decl(tool.get("function").unwrap_or(tool))
    });
    tools
        .chain(functions.into_iter().flatten().filter_map(decl))
        .collect()
}

// === impl RequestJsonError ===

impl From<serde_json::Error> for RequestJsonError {
    fn from(err: serde_json::Error) -> Self {
        let (line, column) = (err.line(), err.column());
        let full = err.to_string();
        let suffix = format!(" at line {line} column {column}");
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
        Self {
            line,
            column,
            message,
        }
    }
}

/// The error for a body that is valid JSON but not an object, positioned at its first byte.
fn not_an_object(body: &[u8], value: &Value) -> RequestJsonError {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or_default();
    let before = &body[..start];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let column = 1 + before.iter().rev().take_while(|&&b| b != b'\n').count();
    let found = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    RequestJsonError {
        line,
        column,
        message: format!("expected an object at the top level, found {found}"),
    }
}

#[cfg(test)]
mod tests;
