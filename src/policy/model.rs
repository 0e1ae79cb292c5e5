//! The policy file format, as plain data (PRODUCT.md §4).
//!
//! Every struct denies unknown keys so a typo is an error, never a silently ignored
//! setting. Durations and sizes are strings (`"250ms"`, `"32MiB"`) parsed by the
//! newtypes at the bottom of this file. Cross-references (a provider covered by an
//! `[[allow]]`, a route naming a known provider, ...) are checked by `validate.rs`,
//! not here: this file only describes shapes.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One policy file, or the merge of a directory of them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Listener settings; command-line flags win over these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySection>,
    /// The base-URL allowlist. Anything not covered is denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AllowEntry>,
    /// How upstream connections are made and trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamSection>,
    /// Providers that routes can send requests to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provider: Vec<ProviderEntry>,
    /// Routing rules, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteEntry>,
    /// Default circuit-breaker settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerSection>,
    /// Prompt protection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protect: Option<ProtectSection>,
    /// Tool-call validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<ToolCallsSection>,
    /// Audit log settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSection>,
    /// Resource limits and timeouts (PRODUCT.md §9.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSection>,
}

/// `[proxy]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// Proxy listen address, e.g. `127.0.0.1:8480`.
    pub listen: Option<String>,
    /// Admin listen address, e.g. `127.0.0.1:8481`.
    pub admin: Option<String>,
    /// Largest request body a step may buffer (e.g. `"32MiB"`).
    pub max_request_body: Option<ByteSize>,
}

/// How an allowed endpoint is handled after `CONNECT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Terminate TLS with a minted leaf and apply the full pipeline.
    #[default]
    Inspect,
    /// Splice bytes after a host-level check; nothing inside is seen.
    Tunnel,
}

/// `[[allow]]`: one allowed base URL.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    /// Unique name, used in audit lines as `rule`.
    pub name: String,
    /// `scheme://host[:port][/path-prefix]`.
    pub base_url: String,
    /// Allowed methods; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// `inspect` (default) or `tunnel`.
    #[serde(default)]
    pub mode: Mode,
    /// SPKI pins (`sha256//BASE64`); the verified chain must contain one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pins: Option<Vec<String>>,
    /// Extra PEM trust roots for this endpoint (paths relative to the policy file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roots: Option<Vec<String>>,
}

/// `[upstream]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// Extra PEM trust roots beside the Mozilla set.
    #[serde(default)]
    pub extra_roots: Vec<String>,
    /// `host:port` → `address:port`, like curl's `--connect-to`.
    #[serde(default)]
    pub resolve: BTreeMap<String, String>,
    /// Allow DNS answers in private, loopback, link-local or CGNAT ranges.
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// Offer HTTP/2 to upstreams (ALPN) and multiplex requests over one connection per
    /// host and worker when the upstream accepts it. Off: HTTP/1.1 keep-alive pools.
    #[serde(default)]
    pub http2: bool,
}

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, untagged)]
pub enum SecretSource {
    /// An environment variable.
    Env {
        /// Variable name.
        env: String,
    },
    /// A file (path relative to the policy file).
    File {
        /// File path.
        file: String,
    },
}

/// `[[provider]]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    /// Unique provider name.
    pub name: String,
    /// The provider's base URL; must be covered by an `[[allow]]`.
    pub base_url: String,
    /// The key that replaces the client's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretSource>,
    /// How this provider bills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
    /// Timeouts for this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Breaker settings overriding `[breaker]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerSection>,
    /// Whether the provider accepts `stream_options.include_usage` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_usage: Option<bool>,
}

/// Pricing of one provider, in currency units.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// Price per million input tokens.
    pub input_per_mtok: Option<f64>,
    /// Price per million output tokens.
    pub output_per_mtok: Option<f64>,
    /// Price per million input characters.
    pub input_per_mchar: Option<f64>,
    /// Price per million output characters.
    pub output_per_mchar: Option<f64>,
    /// Tiers by prompt size; the highest tier whose threshold the prompt exceeds applies.
    #[serde(default)]
    pub tiers: Vec<PricingTier>,
    /// A committed-volume discount the operator states (0.0 to 1.0 off list price).
    pub committed_discount: Option<f64>,
}

/// A prompt-size tier (long-context surcharge).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PricingTier {
    /// Applies when the prompt has more than this many tokens.
    pub above_prompt_tokens: u64,
    /// Price per million input tokens in this tier.
    pub input_per_mtok: Option<f64>,
    /// Price per million output tokens in this tier.
    pub output_per_mtok: Option<f64>,
}

/// Upstream timeouts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Option<Dur>,
    /// Time to the first byte of the response.
    pub first_byte: Option<Dur>,
    /// Longest silence inside a response body.
    pub idle: Option<Dur>,
}

/// `[[route]]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    /// Unique route name.
    pub name: String,
    /// What requests this route takes.
    #[serde(rename = "match", default)]
    pub matcher: RouteMatch,
    /// `fallback` | `weighted` | `cheapest` | `fastest`.
    #[serde(default)]
    pub strategy: Strategy,
    /// Quality floor for `cheapest`.
    pub min_quality: Option<u32>,
    /// Under `fastest`: how old a target's latency average may grow before one request
    /// measures it again (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprobe_after: Option<Dur>,
    /// Candidate targets.
    pub targets: Vec<RouteTarget>,
    /// Retry settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// What a route matches.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Model names or aliases.
    pub model: Option<Vec<String>>,
    /// Largest prompt-token estimate this route takes.
    pub max_prompt_tokens: Option<u64>,
    /// Smallest prompt-token estimate this route takes.
    pub min_prompt_tokens: Option<u64>,
    /// Request path suffixes, e.g. `/chat/completions`.
    pub path: Option<Vec<String>>,
    /// Value of the `x-llm-egress-route` request header.
    pub header: Option<String>,
}

/// Routing strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// In order.
    #[default]
    Fallback,
    /// Random by weight.
    Weighted,
    /// Lowest expected cost at or above `min_quality`.
    Cheapest,
    /// Lowest recent latency.
    Fastest,
}

/// One target of a route.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTarget {
    /// Provider name.
    pub provider: String,
    /// Model name sent to the provider.
    pub model: Option<String>,
    /// Quality score, compared with `min_quality`.
    pub quality: Option<u32>,
    /// Weight under `weighted`.
    pub weight: Option<u32>,
}

/// Retry settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts in total across all targets.
    pub attempts: Option<u32>,
    /// Statuses that count as failures.
    pub on: Option<Vec<u16>>,
    /// First backoff.
    pub backoff: Option<Dur>,
    /// Backoff cap.
    pub max_backoff: Option<Dur>,
    /// Overall deadline for all attempts.
    pub deadline: Option<Dur>,
}

/// `[breaker]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerSection {
    /// Open after this many consecutive failures.
    pub consecutive_failures: Option<u32>,
    /// Open when the window's failure rate passes this (0.0 to 1.0).
    pub failure_rate: Option<f64>,
    /// Smallest window for the failure-rate rule.
    pub min_requests: Option<u32>,
    /// Sliding window length.
    pub window: Option<Dur>,
    /// Open when the window's p99 time to first byte passes this.
    pub p99_latency: Option<Dur>,
    /// How long the circuit stays open before half-open probes.
    pub open_for: Option<Dur>,
}

/// `[protect]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtectSection {
    /// `off` | `tokenize`.
    #[serde(default)]
    pub mode: ProtectMode,
    /// Keys; the first encrypts, all decrypt.
    #[serde(default)]
    pub keys: Vec<ProtectKey>,
    /// Built-in detectors to run.
    #[serde(default)]
    pub detectors: Vec<String>,
    /// Custom regex detectors.
    #[serde(default)]
    pub patterns: Vec<ProtectPattern>,
}

/// Protection mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProtectMode {
    /// No protection.
    #[default]
    Off,
    /// Deterministic tokens for sensitive spans.
    Tokenize,
}

/// A protection key.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtectKey {
    /// Key id, `[a-z0-9]{1,16}`.
    pub id: String,
    /// Key file (base64 of 32 bytes on one line, mode 0600).
    pub file: Option<String>,
    /// Environment variable holding the same base64 string.
    pub env: Option<String>,
}

/// A custom regex detector.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtectPattern {
    /// Detector name, shown in counters.
    pub name: String,
    /// The regex.
    pub regex: String,
}

/// `[tool_calls]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolCallsSection {
    /// Validate tool calls against the request's declared tools.
    #[serde(default)]
    pub validate: bool,
    /// `reject` | `retry` | `log`.
    #[serde(default)]
    pub on_invalid: OnInvalid,
}

/// What to do with an invalid tool call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// 502 `tool_call_invalid`.
    #[default]
    Reject,
    /// Next target, if nothing was sent yet.
    Retry,
    /// Pass and audit.
    Log,
}

/// `[audit]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Audit file; the `--audit` flag wins.
    pub path: Option<String>,
    /// One line per allowed request too (no content).
    #[serde(default)]
    pub log_allowed: bool,
}

/// `[limits]`: resource limits and timeouts against slow or abusive clients.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Most concurrent client connections (default 4096).
    pub max_connections: Option<u32>,
    /// Largest request head (default 64KiB).
    pub max_header_size: Option<ByteSize>,
    /// TLS handshake deadline (default 10s).
    pub handshake_timeout: Option<Dur>,
    /// Deadline to read a request head (default 30s).
    pub header_read_timeout: Option<Dur>,
    /// Idle keep-alive connection lifetime (default 120s).
    pub idle_timeout: Option<Dur>,
    /// Idle tunnel lifetime (default 600s).
    pub tunnel_idle_timeout: Option<Dur>,
    /// HTTP/2 concurrent streams per connection (default 256).
    pub h2_max_concurrent_streams: Option<u32>,
    /// HTTP/2 header list size (default 64KiB).
    pub h2_max_header_list_size: Option<ByteSize>,
}

// === impl Dur ===

/// A duration written as a string: `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"1m30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

impl Dur {
    /// Parses `"250ms"`, `"30s"`, `"1m30s"`, `"2h"`, `"500us"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("empty duration; write e.g. \"250ms\" or \"30s\"".into());
        }
        let mut total = Duration::ZERO;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| format!("duration {s:?} lacks a unit (ms, s, m, h)"))?;
            if digits == 0 {
                return Err(format!("duration {s:?} is not a number with a unit"));
            }
            let num: f64 = rest[..digits]
                .parse()
                .map_err(|_| format!("duration {s:?} has a bad number"))?;
            let after = &rest[digits..];
            let unit_len = after
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(after.len());
            let unit = &after[..unit_len];
            let secs = match unit {
                "us" | "µs" => num / 1e6,
                "ms" => num / 1e3,
                "s" => num,
                "m" => num * 60.0,
                "h" => num * 3600.0,
                _ => {
                    return Err(format!(
                        "duration {s:?} has unknown unit {unit:?} (use ms, s, m, h)"
                    ))
                }
            };
            // `from_secs_f64` and `+=` panic on overflow: a typo like "99999999999h" must
            // be an error, never a crash of the reload task.
            total = Duration::try_from_secs_f64(secs)
                .ok()
                .and_then(|d| total.checked_add(d))
                .ok_or_else(|| format!("duration {s:?} is too large"))?;
            rest = &after[unit_len..];
        }
        Ok(Dur(total))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Dur::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(\\.[0-9]+)?(us|ms|s|m|h))+$",
            "description": "A duration such as \"250ms\", \"30s\", \"1m30s\""
        })
    }
}

// === impl ByteSize ===

/// A size written as a string: `"32MiB"`, `"64KiB"`, `"1GiB"`, `"1000"`, `"10MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses a size with an optional unit (B, KB, KiB, MB, MiB, GB, GiB).
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        if split == 0 {
            return Err(format!(
                "size {s:?} must start with a number, e.g. \"32MiB\""
            ));
        }
        let n: u64 = t[..split]
            .parse()
            .map_err(|_| format!("size {s:?} is too large"))?;
        let mult: u64 = match t[split..].trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1000,
            "KiB" => 1024,
            "MB" => 1000 * 1000,
            "MiB" => 1024 * 1024,
            "GB" => 1000 * 1000 * 1000,
            "GiB" => 1024 * 1024 * 1024,
            u => {
                return Err(format!(
                    "size {s:?} has unknown unit {u:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1024 * 1024;
        if self.0 >= MIB && self.0 % MIB == 0 {
            write!(f, "{}MiB", self.0 / MIB)
        } else if self.0 >= 1024 && self.0 % 1024 == 0 {
            write!(f, "{}KiB", self.0 / 1024)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum: an untagged enum would swallow the
        // parse error ("unknown unit") behind "data did not match any variant".
        struct SizeVisitor;
        impl serde::de::Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"32MiB\" or a number of bytes")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size {n} is negative")))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "integer"],
            "pattern": "^[0-9]+ ?(B|KB|kB|KiB|MB|MiB|GB|GiB)?$",
            "description": "A size such as \"32MiB\" or a number of bytes"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(Dur::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(Dur::parse("1m30s").unwrap().0, Duration::from_secs(90));
        assert_eq!(Dur::parse("2h").unwrap().0, Duration::from_secs(7200));
        assert!(Dur::parse("30").is_err());
        assert!(Dur::parse("3 parsecs").is_err());
        assert!(Dur::parse("").is_err());
        assert!(Dur::parse("99999999999999999999999999h").is_err());
        assert!(Dur::parse("18446744073709551615s18446744073709551615s").is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(ByteSize::parse("32MiB").unwrap().0, 32 * 1024 * 1024);
        assert_eq!(ByteSize::parse("10MB").unwrap().0, 10_000_000);
        assert_eq!(ByteSize::parse("123").unwrap().0, 123);
        assert!(ByteSize::parse("12XB").is_err());
        assert!(ByteSize::parse("MiB").is_err());
    }

    #[test]
    fn size_errors_surface_through_serde() {
        #[derive(Deserialize)]
        struct S {
            #[allow(dead_code)]
            s: ByteSize,
        }
        let e = serde_json::from_str::<S>(r#"{"s": "12XB"}"#)
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("unknown unit"));
        let ok = serde_json::from_str::<S>(r#"{"s": 1024}"#).map(|v| v.s.0);
        assert_eq!(ok.ok(), Some(1024));
        assert!(serde_json::from_str::<S>(r#"{"s": -1}"#).is_err());
    }
}
