//! Prometheus metrics (admin `/metrics`). Labels are low-cardinality by construction:
//! status classes, error codes, and names that come from the policy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::Code;

type Labels = [(&'static str, &'static str); 1];
type UsageLabels = [(&'static str, String); 3];
type CostLabels = [(&'static str, String); 2];

/// All process metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    /// The series of `requests` by status class (1xx … 5xx), looked up once each: a
    /// response then costs an atomic add, not a lock and a hash of its label set.
    by_status: [OnceLock<Counter>; 5],
    refused: Family<Labels, Counter>,
    upstream_latency: Histogram,
    reloads: Family<Labels, Counter>,
    tokens: Family<UsageLabels, Counter>,
    cost: Family<CostLabels, Counter<f64, AtomicU64>>,
    events: Family<Labels, Counter>,
    protected: Family<[(&'static str, String); 1], Counter>,
    /// The usage series by provider, then model: a request finds its counters by `&str`
    /// instead of building the owned label set of each series.
    usage_series: RwLock<HashMap<String, HashMap<String, UsageSeries>>>,
    total: AtomicU64,
}

/// The counters of one `(provider, model)`: handles to the series in the families.
struct UsageSeries {
    prompt: Counter,
    completion: Counter,
    /// Made on the first cost, so a provider without prices shows no cost series.
    cost: OnceLock<Counter<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Metrics ===

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("llm_egress");
        let requests = Family::<Labels, Counter>::default();
        let refused = Family::<Labels, Counter>::default();
        let reloads = Family::<Labels, Counter>::default();
        let upstream_latency = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 120.0,
        ]);
        registry.register(
            "requests",
            "Requests answered from upstream, by status class",
            requests.clone(),
        );
        registry.register(
            "refused",
            "Requests and connections refused, by reason",
            refused.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Time from forwarding to upstream response headers",
            upstream_latency.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy reloads by result",
            reloads.clone(),
        );
        let tokens = Family::<UsageLabels, Counter>::default();
        let cost = Family::<CostLabels, Counter<f64, AtomicU64>>::default();
        let events = Family::<Labels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens by provider, model and kind (prompt, completion)",
            tokens.clone(),
        );
        registry.register(
            "cost",
            "Cost in pricing units by provider and model",
            cost.clone(),
        );
        registry.register(
            "stream_events",
            "Stream incidents (cut, usage_injected, usage_dropped, tool_call_invalid)",
            events.clone(),
        );
        let protected = Family::<[(&'static str, String); 1], Counter>::default();
        registry.register(
            "protected_spans",
            "Sensitive spans protected before leaving, by detector",
            protected.clone(),
        );
        Metrics {
            protected,
            registry,
            requests,
            by_status: Default::default(),
            refused,
            upstream_latency,
            reloads,
            tokens,
            cost,
            events,
            usage_series: RwLock::default(),
            total: AtomicU64::new(0),
        }
    }

    /// A response came back from upstream.
    pub fn request(&self, status: u16) {
        const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let i = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        self.by_status[i]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&[("status", CLASSES[i])])
                    .clone()
            })
            .inc();
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// The proxy refused something with `code`.
    pub fn refused(&self, code: Code) {
        self.refused
            .get_or_create(&[("reason", code.as_str())])
            .inc();
    }

    /// Time to upstream response headers.
    pub fn upstream_latency(&self, d: Duration) {
        self.upstream_latency.observe(d.as_secs_f64());
    }

    /// A reload finished with `result` (`loaded`, `rejected`, `unchanged`).
    pub fn reload(&self, result: &'static str) {
        self.reloads.get_or_create(&[("result", result)]).inc();
    }

    /// Usage of one response: tokens, and cost when the provider has pricing.
    pub fn usage(
        &self,
        provider: &str,
        model: &str,
        prompt: u64,
        completion: u64,
        cost: Option<f64>,
    ) {
        self.with_usage_series(provider, model, |s| {
            s.prompt.inc_by(prompt);
            s.completion.inc_by(completion);
            if let Some(c) = cost {
                s.cost
                    .get_or_init(|| {
                        self.cost
                            .get_or_create(&[
                                ("provider", provider.to_owned()),
                                ("model", model.to_owned()),
                            ])
                            .clone()
                    })
                    .inc_by(c);
            }
        });
    }

    /// Runs `f` on the counters of `(provider, model)`, made on first use. Both labels are
    /// bounded by the policy (provider and rule names, the models it names or `other`).
    fn with_usage_series(&self, provider: &str, model: &str, f: impl FnOnce(&UsageSeries)) {
        {
            let read = self.usage_series.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = read.get(provider).and_then(|m| m.get(model)) {
                return f(s);
            }
        }
        let token = |kind: &str| {
            self.tokens
                .get_or_create(&[
                    ("provider", provider.to_owned()),
                    ("model", model.to_owned()),
                    ("kind", kind.to_owned()),
                ])
                .clone()
        };
        let mut write = self.usage_series.write().unwrap_or_else(|e| e.into_inner());
        let s = write
            .entry(provider.to_owned())
            .or_default()
            .entry(model.to_owned())
            .or_insert_with(|| UsageSeries {
                prompt: token("prompt"),
                completion: token("completion"),
                cost: OnceLock::new(),
            });
        f(s)
    }

    /// Spans protected by a detector.
    pub fn protected(&self, detector: &str, n: u64) {
        self.protected
            .get_or_create(&[("detector", detector.to_owned())])
            .inc_by(n);
    }

    /// Counts a stream incident.
    pub fn event(&self, what: &'static str) {
        self.events.get_or_create(&[("event", what)]).inc();
    }

    /// Number of refusals with `code` so far.
    pub fn refused_count(&self, code: Code) -> u64 {
        self.refused
            .get_or_create(&[("reason", code.as_str())])
            .get()
    }

    /// Prometheus text, with `extra` lines (already formatted) before the end marker.
    pub fn render(&self, extra: &str) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        match out.rfind("# EOF") {
            Some(i) => out.insert_str(i, extra),
            None => out.push_str(extra),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str, labels: &[&str]) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
    }

    #[test]
    fn usage_adds_up_per_provider_and_model() {
        let m = Metrics::new();
        m.usage("a", "gpt-x", 3, 5, None);
        m.usage("a", "gpt-x", 10, 20, Some(0.5));
        m.usage("a", "other", 1, 1, None);
        m.usage("b", "gpt-x", 7, 0, Some(0.25));
        let t = m.render("");
        let tok = |p: &str, model: &str, kind: &str| {
            let l = line(
                &t,
                "llm_egress_tokens_total{",
                &[
                    &format!("provider=\"{p}\""),
                    &format!("model=\"{model}\""),
                    &format!("kind=\"{kind}\""),
                ],
            )
            .unwrap_or_else(|| panic!("no series {p} {model} {kind} in\n{t}"));
            l.rsplit(' ').next().unwrap().to_owned()
        };
        assert_eq!(tok("a", "gpt-x", "prompt"), "13");
        assert_eq!(tok("a", "gpt-x", "completion"), "25");
        assert_eq!(tok("a", "other", "prompt"), "1");
        assert_eq!(tok("b", "gpt-x", "prompt"), "7");
        let cost = |p: &str, model: &str| {
            line(
                &t,
                "llm_egress_cost_total{",
                &[&format!("provider=\"{p}\""), &format!("model=\"{model}\"")],
            )
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
        };
        assert_eq!(cost("a", "gpt-x").as_deref(), Some("0.5"));
        assert_eq!(cost("b", "gpt-x").as_deref(), Some("0.25"));
        // No price, no cost series.
        assert_eq!(cost("a", "other"), None);
    }

    #[test]
    fn responses_count_by_status_class_and_only_classes_seen_show() {
        let m = Metrics::new();
        for status in [200, 201, 204, 404, 503, 200] {
            m.request(status);
        }
        let t = m.render("");
        let count = |class: &str| {
            line(
                &t,
                "llm_egress_requests_total{",
                &[&format!("status=\"{class}\"")],
            )
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
        };
        assert_eq!(count("2xx").as_deref(), Some("4"));
        assert_eq!(count("4xx").as_deref(), Some("1"));
        assert_eq!(count("5xx").as_deref(), Some("1"));
        assert_eq!(count("1xx"), None);
        assert_eq!(count("3xx"), None);
    }
}
