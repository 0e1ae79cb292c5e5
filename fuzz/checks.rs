//! The invariants the fuzz targets check, shared with `tests/it/fuzz_corpus.rs` (which
//! replays the corpus on stable): both include this file with `#[path]`, so a corpus file
//! is checked by exactly the code that fuzzes.
//!
//! Each check panics when an invariant breaks, which is how libFuzzer and `cargo test`
//! both notice.
#![allow(dead_code)]

use llm_egress::openai::errors::{is_retryable_upstream, normalize_error, MAX_UPSTREAM_COPY};
use llm_egress::openai::request::{parse_request, ApiRoute, ParsedRequest};
use llm_egress::openai::sse::{encode_data, encode_event, SseDecoder, SseFrame, SseTail};
use llm_egress::openai::usage::{
    extract_usage, extract_usage_from_slice, is_usage_only_chunk, StreamTracker,
};
use llm_egress::policy::load::{load_bytes, LoadedPolicy};
use llm_egress::policy::validate::validate_loaded;
use llm_egress::policy::PolicyError;
use llm_egress::protect::{
    ChannelKind, ProtectConfig, ProtectStats, Protector, RawPass, RestoreStats, DETECTORS,
    MAX_SPAN, MAX_TOKEN_LEN, TOKEN_PREFIX,
};
use llm_egress::proxy::connect::parse_target;
use llm_egress::proxy::url::{normalize_host, normalize_path, under_prefix};
use serde_json::Value;
use std::path::Path;
use std::sync::OnceLock;

/// Every route, for checks that try each.
const ROUTES: [ApiRoute; 5] = [
    ApiRoute::ChatCompletions,
    ApiRoute::Completions,
    ApiRoute::Embeddings,
    ApiRoute::Responses,
    ApiRoute::Models,
];

/// Decoder output: frames, then what `finish` reported.
type Decoded = (Vec<SseFrame>, Vec<SseTail>);

/// SSE decoding: raw bytes are preserved, chunk boundaries do not matter, decoded events
/// re-encode to themselves, and nothing downstream panics on the payloads.
pub fn check_sse_decode(data: &[u8]) {
    let whole = decode(data, &[]);
    assert_eq!(
        raw_of(&whole),
        data,
        "frames' raw bytes differ from the input"
    );
    assert_eq!(
        decode(data, &cut_points(data)),
        whole,
        "a chunked decode differs"
    );
    if data.len() <= 4096 {
        let every: Vec<usize> = (1..data.len()).collect();
        assert_eq!(decode(data, &every), whole, "a byte-by-byte decode differs");
    }
    let mut chat = StreamTracker::new(ApiRoute::ChatCompletions);
    let mut responses = StreamTracker::new(ApiRoute::Responses);
    let tail_frames = whole.1.iter().filter_map(|t| match t {
        SseTail::Frame(frame) => Some(frame),
        SseTail::Incomplete { .. } => None,
    });
    for frame in whole.0.iter().chain(tail_frames) {
        let Some(event) = frame.event() else { continue };
        let again = decode(&encode_event(event), &[]);
        assert_eq!(again.0.len(), 1, "re-encoded event is not one frame");
        assert_eq!(again.0[0].event(), Some(event), "re-encoded event differs");
        let Some(payload) = event.data_str() else {
            continue;
        };
        let again = decode(&encode_data(payload.as_bytes()), &[]);
        assert_eq!(
            again.0[0].data_str(),
            Some(payload),
            "encode_data round trip"
        );
        chat.observe(payload);
        responses.observe(payload);
        if let Ok(json) = serde_json::from_str::<Value>(payload) {
            assert_eq!(
                extract_usage_from_slice(payload.as_bytes()),
                extract_usage(&json),
                "skimmed usage differs from the parsed document's"
            );
            let _ = is_usage_only_chunk(&json);
            chat.observe_value(&json);
        }
    }
    let _ = (
        chat.is_complete(),
        responses.is_complete(),
        chat.saw_error(),
    );
}

/// Request parsing on every route: errors carry a position; a parsed body re-serializes
/// to one that parses to the same fields; the usage opt-in keeps the rest. The same bytes
/// also go through upstream error normalization and route matching.
pub fn check_request_parse(data: &[u8]) {
    for route in ROUTES {
        match parse_request(route, data) {
            Ok(req) => check_parsed(route, req),
            Err(err) => {
                assert!(err.line >= 1, "error line must be 1-based: {err:?}");
                assert!(err.to_string().starts_with("invalid JSON at line "));
            }
        }
    }
    // A JSON body is kept whole under `upstream` (or passed through); others are cut.
    let is_json = serde_json::from_str::<Value>(String::from_utf8_lossy(data).trim()).is_ok();
    for status in [200, 429, 502] {
        for content_type in [None, Some("text/html")] {
            let normalized = normalize_error(status, content_type, data);
            let error = &normalized["error"];
            assert!(error["message"].is_string(), "no message: {normalized}");
            if let (false, Some(copy)) = (is_json, error["upstream"].as_str()) {
                assert!(copy.len() <= MAX_UPSTREAM_COPY, "upstream copy too long");
            }
            let retryable = is_retryable_upstream(status, &normalized);
            assert!(status == 200 || retryable, "429 and 5xx are retryable");
        }
    }
    let _ = ApiRoute::from_path(&String::from_utf8_lossy(data));
}

fn check_parsed(route: ApiRoute, mut req: ParsedRequest) {
    let again = reparse(route, &req);
    assert_same_fields(&req, &again);
    let _ = (req.estimated_prompt_tokens(), req.prompt_chars());
    if req.set_include_usage() {
        let with_usage = reparse(route, &req);
        assert_eq!(with_usage.stream_options_include_usage(), Some(true));
        assert_same_fields(&req, &with_usage);
    }
}

fn reparse(route: ApiRoute, req: &ParsedRequest) -> ParsedRequest {
    match parse_request(route, &req.to_bytes()) {
        Ok(again) => again,
        Err(err) => panic!("re-serialized body does not parse: {err}"),
    }
}

/// The extracted fields (float-free, so serde_json's float round trip cannot differ).
fn assert_same_fields(a: &ParsedRequest, b: &ParsedRequest) {
    assert_eq!(a.model(), b.model());
    assert_eq!(a.stream(), b.stream());
    assert_eq!(a.max_output_tokens(), b.max_output_tokens());
    let names = |r: &ParsedRequest| r.tools().iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b));
    assert_eq!(a.prompt_texts(), b.prompt_texts());
    assert_eq!(a.prompt_messages(), b.prompt_messages());
}

/// Decodes `input` fed in chunks cut at `cuts` (sorted positions inside `input`).
fn decode(input: &[u8], cuts: &[usize]) -> Decoded {
    let mut decoder = SseDecoder::new();
    let mut frames = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([&input.len()]) {
        frames.extend(decoder.feed(&input[start..cut]));
        start = cut;
    }
    let mut tail = Vec::new();
    while let Some(item) = decoder.finish() {
        let last = item.is_incomplete();
        tail.push(item);
        if last {
            break;
        }
    }
    (frames, tail)
}

fn raw_of((frames, tail): &Decoded) -> Vec<u8> {
    let mut out: Vec<u8> = frames.iter().flat_map(|f| f.raw.to_vec()).collect();
    for item in tail {
        out.extend_from_slice(item.raw());
    }
    out
}

/// Cut points derived from the input: right after every CR (inside a CRLF, the hard
/// case) and a few pseudo-random ones, sorted and deduplicated.
fn cut_points(data: &[u8]) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..data.len())
        .filter(|&i| data[i] == b'\r')
        .map(|i| i + 1)
        .collect();
    // FNV-1a of the input seeds an xorshift generator: deterministic per input.
    let mut state = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    for _ in 0..16 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        cuts.push((state % (data.len() as u64 + 1)) as usize);
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Where the policy inputs claim to come from: a directory that does not exist, so a
/// relative file path inside resolves to a file that cannot be read, whatever the machine.
const POLICY_TOML: &str = "/nonexistent-llm-egress-fuzz/policy.toml";
const POLICY_JSON: &str = "/nonexistent-llm-egress-fuzz/policy.json";

/// The environment the policy checks see: one provider key, one protection key.
fn policy_env(name: &str) -> Option<String> {
    match name {
        "FUZZ_PROVIDER_KEY" => Some("sk-fuzz-provider-key".into()),
        // base64 of 32 bytes of 0x01
        "FUZZ_PROTECT_KEY" => Some("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into()),
        _ => None,
    }
}

/// What parsing and validating one policy file gave: the model (as its `Debug`, which also
/// compares NaN floats) and hash, or the errors.
type PolicyOutcome = Result<(String, String), Vec<PolicyError>>;

/// Policy files, read as TOML and as JSON: parsing and validating never panic, every
/// error names the file and a 1-based line and column inside the input (a UTF-8 error:
/// exactly where the first bad byte is), and the same bytes give the same outcome twice.
pub fn check_policy_file(data: &[u8]) {
    // Positions are in the text after a leading BOM, which editors do not show.
    let body = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let text = String::from_utf8_lossy(body);
    let lines: Vec<&str> = text.split('\n').collect();
    let utf8_error_at = std::str::from_utf8(body).err().map(|e| {
        let valid = String::from_utf8_lossy(&body[..e.valid_up_to()]);
        let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
        (
            valid.matches('\n').count() + 1,
            valid[line_start..].chars().count() + 1,
        )
    });
    for name in [POLICY_TOML, POLICY_JSON] {
        let file = Path::new(name);
        let first = policy_outcome(file, data);
        if let Err(errors) = &first {
            assert!(!errors.is_empty(), "an empty error list");
            for e in errors {
                assert_eq!(e.file, file, "error names another file: {e}");
                assert!(!e.message.is_empty(), "error without a message: {e:?}");
                assert!(
                    e.line >= 1 && e.line <= lines.len(),
                    "line {} outside the input's {} line(s): {e}",
                    e.line,
                    lines.len()
                );
                let width = lines[e.line - 1].chars().count();
                assert!(
                    e.column >= 1 && e.column <= width + 1,
                    "column {} outside line {} ({width} characters): {e}",
                    e.column,
                    e.line
                );
                assert!(e
                    .to_string()
                    .starts_with(&format!("{name}:{}:{}: ", e.line, e.column)));
            }
            if let Some(at) = utf8_error_at {
                assert_eq!(
                    (errors[0].line, errors[0].column),
                    at,
                    "UTF-8 error position"
                );
            }
        }
        assert!(
            utf8_error_at.is_none() || first.is_err(),
            "invalid UTF-8 accepted"
        );
        assert_eq!(policy_outcome(file, data), first, "a second parse differs");
    }
}

fn policy_outcome(file: &Path, data: &[u8]) -> PolicyOutcome {
    let summary = |p: LoadedPolicy| (format!("{:?}", p.model), p.hash);
    let loaded = load_bytes(file, data).map_err(|e| e.0)?;
    validate_loaded(loaded, &policy_env)
        .map(summary)
        .map_err(|e| e.0)
}

/// Allowlist prefixes the path checks always try, besides one taken from the input.
const PREFIXES: [&str; 5] = ["/", "/v1", "/v1/chat", "/api/v1", "/openai/v1"];

/// Paths, hosts and CONNECT targets. Each of the input's first 8 lines is tried as a
/// path, a host and a `host:port`, and, normalized like an `[[allow]]` base URL's path, as
/// one more prefix for the others. Normalizing a path is idempotent and leaves no dot
/// segments, no escape of an unreserved character, no lower-case escape and no raw
/// character that must be escaped; prefix matching holds only on a segment boundary
/// (`/v1x` is not under `/v1`), and a path written under a prefix without `..` stays
/// under it. A normalized host is lower case, bracket- and trailing-dot-free and
/// normalizes to itself; a parsed `host:port` parses back to itself.
pub fn check_url(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').take(8).collect();
    let mut prefixes: Vec<String> = PREFIXES.iter().map(|p| (*p).to_owned()).collect();
    for line in &lines {
        if let Ok(mut p) = normalize_path(line).map(std::borrow::Cow::into_owned) {
            // As compile.rs does for a base URL's path.
            while p.len() > 1 && p.ends_with('/') {
                p.pop();
            }
            prefixes.push(p);
        }
    }
    for line in lines {
        check_path(line, &prefixes);
        check_host(line);
        check_target(line);
    }
}

fn check_path(raw: &str, prefixes: &[String]) {
    let Ok(norm) = normalize_path(raw) else {
        return;
    };
    assert!(norm.starts_with('/'), "{norm:?} is not absolute");
    assert_eq!(
        normalize_path(&norm).as_deref(),
        Ok(&*norm),
        "normalizing {raw:?} twice differs from once"
    );
    assert!(
        !norm.split('/').any(|s| s == "." || s == ".."),
        "dot segment left in {norm:?}"
    );
    let b = norm.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        assert!(
            c > 0x20 && c < 0x7f && c != b'\\' && c != b'#',
            "raw byte {c:#x} in {norm:?}"
        );
        if c == b'%' {
            let (Some(h), Some(l)) = (upper_hex(b.get(i + 1)), upper_hex(b.get(i + 2))) else {
                panic!("bad or lower-case escape at {i} in {norm:?}");
            };
            let d = h * 16 + l;
            assert!(
                !(d.is_ascii_alphanumeric() || matches!(d, b'-' | b'.' | b'_' | b'~')),
                "escaped unreserved character at {i} in {norm:?}"
            );
            assert!(d != b'/' && d != b'\\', "escaped slash in {norm:?}");
        }
    }
    let _ = ApiRoute::from_path(&norm);
    for prefix in prefixes {
        let on_boundary = prefix == "/"
            || norm == *prefix
            || norm
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        assert_eq!(
            under_prefix(&norm, prefix),
            on_boundary,
            "under_prefix({norm:?}, {prefix:?})"
        );
        // Written under the prefix, with no way up: it stays under it.
        let written_under = raw
            .strip_prefix(prefix.as_str())
            .is_some_and(|rest| prefix == "/" || rest.is_empty() || rest.starts_with('/'));
        if written_under && !raw.split('/').any(|s| s == "..") {
            assert!(
                under_prefix(&norm, prefix),
                "{raw:?} -> {norm:?} left {prefix:?}"
            );
        }
    }
    let sibling = format!("{}x", norm.trim_end_matches('/'));
    if norm != "/" {
        assert!(!under_prefix(&sibling, &norm), "{sibling:?} under {norm:?}");
    }
}

/// The value of an upper-case hex digit.
fn upper_hex(c: Option<&u8>) -> Option<u8> {
    match *c? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn check_host(raw: &str) {
    let Ok(host) = normalize_host(raw) else {
        return;
    };
    assert!(!host.is_empty(), "empty host from {raw:?}");
    assert!(
        host.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-.:_".contains(&c)),
        "host {host:?} from {raw:?} has other characters"
    );
    assert!(
        !host.ends_with('.'),
        "host {host:?} from {raw:?} ends with a dot"
    );
    assert_eq!(
        normalize_host(&host).as_deref(),
        Ok(host.as_str()),
        "normalizing host {raw:?} twice differs from once"
    );
}

fn check_target(raw: &str) {
    let Some((host, port)) = parse_target(raw) else {
        return;
    };
    assert_eq!(
        normalize_host(&host).as_deref(),
        Ok(host.as_str()),
        "target {raw:?} gave a host that is not normalized"
    );
    let again = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    assert_eq!(
        parse_target(&again),
        Some((host, port)),
        "target {raw:?} does not parse back from {again:?}"
    );
}

/// Test keys: `k1` seals, `k2` only opens (tokens an earlier key made).
const PROTECT_KEYS: [(&str, [u8; 32]); 2] = [("k1", [1; 32]), ("k2", [2; 32])];

/// Two protectors under the test keys: every detector plus two patterns, and e-mail only.
fn protectors() -> &'static (Protector, Protector) {
    static P: OnceLock<(Protector, Protector)> = OnceLock::new();
    P.get_or_init(|| {
        let keys: Vec<(String, [u8; 32])> = PROTECT_KEYS
            .iter()
            .map(|(id, k)| ((*id).to_owned(), *k))
            .collect();
        let build = |cfg: &ProtectConfig| {
            Protector::new(cfg).unwrap_or_else(|e| panic!("test protector: {e}"))
        };
        let full = build(&ProtectConfig {
            keys: keys.clone(),
            detectors: DETECTORS.iter().map(|d| (*d).to_owned()).collect(),
            patterns: vec![
                ("customer_id".into(), "CUST-[0-9]{8}".into()),
                ("quoted".into(), "<<[^>]{1,40}>>".into()),
            ],
        });
        let email = build(&ProtectConfig {
            keys,
            detectors: vec!["email".into()],
            patterns: Vec::new(),
        });
        (full, email)
    })
}

/// Token restore, on the input as answer text and as an answer JSON body. Restoring never
/// panics; text without `PII.` comes back unchanged and uncounted, and text in which no
/// token was restored comes back unchanged; a stream cut at arbitrary points (after every
/// `P` and `.`, pseudo-random, and every character) restores to the same text and counts
/// as the whole, never holding a whole token's length; tool-argument restore keeps valid
/// JSON valid. A JSON answer in which nothing was restored is left as it was. Protecting
/// then restoring gives the text back: with e-mail addresses inserted, and with every
/// detector when no span is a secret or too long to tokenize (both redact).
pub fn check_token_restore(data: &[u8]) {
    let (full, email) = protectors();
    let text = String::from_utf8_lossy(data);
    let cuts = token_cuts(&text);
    for kind in [ChannelKind::Content, ChannelKind::ToolArguments] {
        let mut stats = RestoreStats::default();
        let whole = full.restore_text_as(&text, kind, &mut stats);
        if !text.contains(TOKEN_PREFIX) {
            assert_eq!(whole, text, "text without a token prefix changed");
            assert_eq!(stats, RestoreStats::default(), "counted without a prefix");
        }
        if stats.restored == 0 {
            assert_eq!(whole, text, "changed although nothing was restored");
        }
        assert_eq!(
            stream_restore(full, kind, &text, &cuts),
            (whole.clone(), stats),
            "a streamed restore differs from the whole"
        );
        if text.len() <= 4096 {
            let every: Vec<usize> = (1..text.len())
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            assert_eq!(
                stream_restore(full, kind, &text, &every),
                (whole.clone(), stats),
                "a character-by-character restore differs from the whole"
            );
        }
        if kind == ChannelKind::ToolArguments && serde_json::from_str::<Value>(&text).is_ok() {
            assert!(
                serde_json::from_str::<Value>(&whole).is_ok(),
                "restored arguments are no longer JSON: {whole:?}"
            );
        }
    }
    if let Ok(answer) = serde_json::from_slice::<Value>(data) {
        for kind in [ChannelKind::Content, ChannelKind::ToolArguments] {
            let mut restored = answer.clone();
            let stats = full.restore_response_as(&mut restored, kind);
            if stats.restored == 0 {
                assert_eq!(
                    restored, answer,
                    "answer changed although nothing was restored"
                );
            }
            if !Protector::may_hold_tokens(data) {
                assert_eq!(
                    stats,
                    RestoreStats::default(),
                    "counted in a token-free answer"
                );
            }
        }
    }
    // Protect, then restore (each skips a text that holds a token of its own).
    let mid = (0..=text.len() / 2)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let with_mail = format!(
        "{} write to jane.doe+x@mail.example.com or ops@example.org, {}",
        &text[..mid],
        &text[mid..]
    );
    round_trip(email, &with_mail, true);
    round_trip(email, &text, false);
    round_trip(full, &text, false);
}

/// The raw-byte protection passes (`protect_request_raw`, `restore_response_raw`) on the
/// input as a request and as an answer body, under both test protectors. Never panic;
/// take only a JSON object (anything else falls back); where they take the body, their
/// output parses to exactly the tree the `Value` walkers make of it, with the same counts
/// (or both fail), and an unchanged pass means the walkers changed nothing either. The
/// input is also tried with every detected span's e-mail protected, so answers hold real
/// tokens.
pub fn check_protect_raw(data: &[u8]) {
    let (full, email) = protectors();
    let tokenized = std::str::from_utf8(data).ok().and_then(|text| {
        let mut st = ProtectStats::default();
        email.protect_str(text, &mut st).ok().flatten()
    });
    let inputs = std::iter::once(data).chain(tokenized.as_deref().map(str::as_bytes));
    for input in inputs {
        let tree = serde_json::from_slice::<Value>(input)
            .ok()
            .filter(Value::is_object);
        for p in [full, email] {
            let pass = p.protect_request_raw(input);
            let Some(tree) = &tree else {
                assert!(
                    matches!(pass, Ok(RawPass::Fallback)),
                    "took a body that is not a JSON object: {pass:?}"
                );
                assert_eq!(p.restore_response_raw(input), RawPass::Fallback);
                continue;
            };
            let mut want = tree.clone();
            match (pass, p.protect_request(&mut want)) {
                (Ok(pass), Ok(stats)) => assert_raw_agrees(pass, input, &want, stats),
                (Err(_), Err(_)) => {}
                (got, want) => panic!("raw request pass {got:?}, Value walker {want:?}"),
            }
            let mut want = tree.clone();
            let stats = p.restore_response(&mut want);
            assert_raw_agrees(p.restore_response_raw(input), input, &want, stats);
        }
    }
}

/// `pass` over `input` gives the tree `want` with counts `stats`, unless it fell back.
fn assert_raw_agrees<S: PartialEq + std::fmt::Debug>(
    pass: RawPass<S>,
    input: &[u8],
    want: &Value,
    stats: S,
) {
    let (out, got) = match pass {
        RawPass::Fallback => return,
        RawPass::Unchanged(got) => (input.to_vec(), got),
        RawPass::Rewritten(out, got) => (out, got),
    };
    let tree: Value = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("raw pass output is not JSON ({e}): {out:?}"));
    assert_eq!(&tree, want, "raw pass and Value walker disagree");
    assert_eq!(got, stats, "raw pass and Value walker count differently");
}

/// Protects `text` and restores the result; it must come back as it was, unless a span
/// was redacted (a secret, or longer than a token holds) or the text holds a token of its
/// own. `must_find`: the text holds an
/// e-mail address, so something must have been replaced.
fn round_trip(p: &Protector, text: &str, must_find: bool) {
    let mut own = RestoreStats::default();
    if p.restore_text(text, &mut own) != text || own.restored > 0 {
        return;
    }
    let spans = p.detect(text);
    if spans
        .iter()
        .any(|(r, det)| *det == "secret" || r.len() > MAX_SPAN)
    {
        return;
    }
    let mut found = ProtectStats::default();
    let protected = p
        .protect_text(text, &mut found)
        .unwrap_or_else(|e| panic!("protect failed: {e}"));
    assert_eq!(
        found.total(),
        spans.len() as u64,
        "protect and detect disagree"
    );
    assert!(
        !must_find || found.total() > 0,
        "no e-mail found in {text:?}"
    );
    let mut stats = RestoreStats::default();
    let back = p.restore_text(&protected, &mut stats);
    assert_eq!(
        back, text,
        "protect then restore differs (protected: {protected:?})"
    );
    assert_eq!(stats.restored, found.total(), "restored count");
}

/// Restores `text` fed in pieces cut at `cuts` (sorted char boundaries inside `text`):
/// the concatenated output and the stats.
fn stream_restore(
    p: &Protector,
    kind: ChannelKind,
    text: &str,
    cuts: &[usize],
) -> (String, RestoreStats) {
    let mut r = p.stream_restorer(kind);
    let mut stats = RestoreStats::default();
    let mut out = String::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([&text.len()]) {
        out.push_str(&r.push(&text[start..cut], &mut stats));
        assert!(r.held() < MAX_TOKEN_LEN, "holds {} bytes", r.held());
        start = cut;
    }
    out.push_str(&r.finish(&mut stats));
    assert_eq!(r.held(), 0, "holds bytes after finish");
    (out, stats)
}

/// Cut points for a streamed restore: after every `P` and `.` (inside a token prefix and
/// at its segment ends) and the pseudo-random ones of [`cut_points`], on char boundaries.
fn token_cuts(text: &str) -> Vec<usize> {
    let mut cuts: Vec<usize> = text
        .bytes()
        .enumerate()
        .filter(|&(_, b)| b == b'P' || b == b'.')
        .map(|(i, _)| i + 1)
        .chain(cut_points(text.as_bytes()))
        .filter(|&i| i < text.len() && text.is_char_boundary(i))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}
