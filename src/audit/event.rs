//! What callers report ([`AuditEvent`]) and how the writer lays it out as one JSON line.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What happened. Serialized in snake_case (`"blocked"`, `"policy_loaded"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A request or tunnel was refused (`reason` says why).
    #[default]
    Blocked,
    /// A policy was loaded (at start-up or on reload).
    PolicyLoaded,
    /// A policy failed to load; the last good one stays active.
    PolicyRejected,
    /// A request moved on to another target.
    Failover,
    /// A provider's circuit breaker opened.
    CircuitOpened,
    /// A provider's circuit breaker closed again.
    CircuitClosed,
    /// An endpoint's handshake or header timing departed from its baseline.
    TimingAnomaly,
    /// A tool call did not validate against the request's schema.
    ToolCallInvalid,
    /// Prompt protection failed; the request was refused.
    ProtectError,
    /// Security events were lost (written by the writer itself).
    AuditGap,
    /// An allowed request (only when `log_allowed` is on). The only non-security kind.
    Allowed,
}

// === impl EventKind ===

impl EventKind {
    /// Every kind except [`EventKind::Allowed`]: these are never dropped silently.
    pub fn is_security(&self) -> bool {
        !matches!(self, EventKind::Allowed)
    }

    /// The name used in the log, e.g. `"policy_loaded"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Blocked => "blocked",
            EventKind::PolicyLoaded => "policy_loaded",
            EventKind::PolicyRejected => "policy_rejected",
            EventKind::Failover => "failover",
            EventKind::CircuitOpened => "circuit_opened",
            EventKind::CircuitClosed => "circuit_closed",
            EventKind::TimingAnomaly => "timing_anomaly",
            EventKind::ToolCallInvalid => "tool_call_invalid",
            EventKind::ProtectError => "protect_error",
            EventKind::AuditGap => "audit_gap",
            EventKind::Allowed => "allowed",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event as the proxy reports it. The writer adds `ts`, `seq`, `policy`, `prev` and
/// `hash`, and adds nothing else: callers must never put prompt content, keys or
/// credentials in any field (`detail` included).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditEvent {
    /// What happened.
    pub event: EventKind,
    /// An error code such as `"endpoint_not_allowed"`.
    pub reason: Option<String>,
    /// The client's address, e.g. `"127.0.0.1:53422"`.
    pub client: Option<String>,
    /// The HTTP method (or `"CONNECT"`).
    pub method: Option<String>,
    /// The request URL. The writer strips any query string or fragment.
    pub url: Option<String>,
    /// The target host.
    pub host: Option<String>,
    /// The target port.
    pub port: Option<u16>,
    /// The policy rule concerned (an `[[allow]]`, `[[route]]` or provider name).
    pub rule: Option<String>,
    /// The request's `x-request-id`.
    pub request_id: Option<String>,
    /// Structured extra facts, e.g. the observed pins of a pin mismatch.
    pub detail: Option<serde_json::Value>,
}

// === impl AuditEvent ===

impl AuditEvent {
    /// An event of `kind` with no fields set; fill the rest with struct update syntax.
    pub fn new(kind: EventKind) -> Self {
        AuditEvent {
            event: kind,
            ..AuditEvent::default()
        }
    }
}

/// `url` without its query string and fragment: query strings may carry keys or prompt
/// fragments, so the log never holds them whatever the caller passed.
pub(crate) fn strip_query(url: &str) -> &str {
    match url.find(['?', '#']) {
        Some(i) => &url[..i],
        None => url,
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-24T13:05:01.123Z`. Infallible by
/// construction (unlike a format description, which could fail on exotic years).
pub(crate) fn format_ts(ts: OffsetDateTime) -> String {
    let ts = ts.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        ts.year(),
        u8::from(ts.month()),
        ts.day(),
        ts.hour(),
        ts.minute(),
        ts.second(),
        ts.millisecond()
    )
}

/// The writer's stamp on one line: everything but the event's own fields and the hash.
pub(crate) struct Stamp<'a> {
    /// When the event was recorded.
    pub ts: OffsetDateTime,
    /// Its sequence number.
    pub seq: u64,
    /// The active policy's hash when it was recorded.
    pub policy: Option<&'a str>,
    /// The previous line's hash.
    pub prev: &'a str,
}

/// The line without `hash`, fields in the documented order. Borrowed, so serializing a line
/// allocates nothing but the timestamp.
#[derive(Serialize)]
struct UnsealedLine<'a> {
    ts: &'a str,
    seq: u64,
    event: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a serde_json::Value>,
    prev: &'a str,
}

/// Appends the compact JSON object for `ev` (without `hash`, ending in `}`) to `buf`.
/// On error `buf` is left as it was.
pub(crate) fn write_unsealed(
    buf: &mut Vec<u8>,
    ev: &AuditEvent,
    stamp: &Stamp<'_>,
) -> Result<(), serde_json::Error> {
    let ts = format_ts(stamp.ts);
    let line = UnsealedLine {
        ts: &ts,
        seq: stamp.seq,
        event: ev.event,
        reason: ev.reason.as_deref(),
        client: ev.client.as_deref(),
        method: ev.method.as_deref(),
        url: ev.url.as_deref().map(strip_query),
        host: ev.host.as_deref(),
        port: ev.port,
        rule: ev.rule.as_deref(),
        policy: stamp.policy,
        request_id: ev.request_id.as_deref(),
        detail: ev.detail.as_ref(),
        prev: stamp.prev,
    };
    let start = buf.len();
    serde_json::to_writer(&mut *buf, &line).inspect_err(|_| buf.truncate(start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn security_is_everything_but_allowed() {
        assert!(EventKind::Blocked.is_security());
        assert!(EventKind::AuditGap.is_security());
        assert!(!EventKind::Allowed.is_security());
    }

    #[test]
    fn kinds_serialize_snake_case() {
        for kind in [
            EventKind::PolicyLoaded,
            EventKind::ToolCallInvalid,
            EventKind::CircuitOpened,
            EventKind::Allowed,
        ] {
            let json = serde_json::to_string(&kind).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }

    #[test]
    fn strips_query_and_fragment() {
        assert_eq!(strip_query("https://a/v1/x?key=sk-1"), "https://a/v1/x");
        assert_eq!(strip_query("https://a/v1/x#frag?x"), "https://a/v1/x");
        assert_eq!(strip_query("https://a/v1/x"), "https://a/v1/x");
    }

    #[test]
    fn timestamp_has_milliseconds_and_z() {
        let ts = datetime!(2026-11-24 13:05:01.123456 UTC);
        assert_eq!(format_ts(ts), "2026-11-24T13:05:01.123Z");
    }

    #[test]
    fn fields_in_order_and_query_stripped() {
        let ev = AuditEvent {
            event: EventKind::Blocked,
            reason: Some("endpoint_not_allowed".into()),
            url: Some("https://evil.example/v1/chat?api_key=secret".into()),
            host: Some("evil.example".into()),
            port: Some(443),
            detail: Some(serde_json::json!({"b": 1, "a": 2})),
            ..AuditEvent::default()
        };
        let stamp = Stamp {
            ts: datetime!(2026-01-02 03:04:05.006 UTC),
            seq: 7,
            policy: Some("p1"),
            prev: "00",
        };
        let mut buf = b"xx".to_vec();
        assert!(write_unsealed(&mut buf, &ev, &stamp).is_ok());
        let text = String::from_utf8_lossy(&buf[2..]).into_owned();
        assert_eq!(
            text,
            r#"{"ts":"2026-01-02T03:04:05.006Z","seq":7,"event":"blocked","reason":"endpoint_not_allowed","url":"https://evil.example/v1/chat","host":"evil.example","port":443,"policy":"p1","detail":{"b":1,"a":2},"prev":"00"}"#
        );
        assert!(!text.contains("secret"));
    }
}
