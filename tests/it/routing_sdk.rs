//! Routing and failover end to end with the official `openai` Python SDK, through both
//! modes: the forward proxy (HTTPS_PROXY; the client addresses provider `a`) and the gateway
//! (`OPENAI_BASE_URL=http://PROXY/v1`). One Python process per mode runs every scenario
//! (`tests/python/routing_sdk.py`) against two mock providers with faults injected per
//! request; this side checks what the SDK saw, the audit log, and what the mocks received:
//! swapped credentials, rewritten models, no client key at any provider.

use std::collections::HashMap;

use crate::common::*;
use serde_json::Value;

/// Which mock provider process a provider's host resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Primary,
    Secondary,
}

/// A `[[provider]]`: host `<name>.mock.test`, key `sk-<name>-key`, targeted with `model`.
struct Provider {
    name: &'static str,
    side: Side,
    model: &'static str,
    extra: &'static str,
}

use Side::{Primary, Secondary};

const fn p(name: &'static str, side: Side, model: &'static str, extra: &'static str) -> Provider {
    Provider {
        name,
        side,
        model,
        extra,
    }
}

/// Each scenario has its own providers, so one scenario's breakers and latencies never
/// steer another's requests.
const PROVIDERS: [Provider; 19] = [
    p(
        "a",
        Primary,
        "m-a",
        "pricing = { input_per_mtok = 5.0, output_per_mtok = 15.0 }",
    ),
    p("fo-a", Primary, "m-fo-a", ""),
    p("fo-b", Secondary, "m-fo-b", ""),
    p("ra-a", Primary, "m-ra-a", ""),
    p(
        "slow-a",
        Primary,
        "m-slow-a",
        r#"breaker = { p99_latency = "20ms", min_requests = 1000, open_for = "1500ms" }"#,
    ),
    p("slow-b", Secondary, "m-slow-b", ""),
    p("cut-a", Primary, "m-cut-a", ""),
    p("cut-b", Secondary, "m-cut-b", ""),
    p(
        "ch-b",
        Secondary,
        "m-ch-b",
        "pricing = { input_per_mtok = 0.5, output_per_mtok = 1.5 }",
    ),
    p("w-a", Primary, "m-w-a", ""),
    p("w-b", Secondary, "m-w-b", ""),
    p("ctx-a", Primary, "long-context", ""),
    p("ctx-b", Secondary, "short-model", ""),
    p("dn-a", Primary, "m-dn-a", ""),
    p("dn-b", Secondary, "m-dn-b", ""),
    p(
        "tok",
        Primary,
        "m-tok",
        "pricing = { input_per_mtok = 1.0, output_per_mtok = 1.0 }",
    ),
    p(
        "chr",
        Secondary,
        "m-chr",
        "pricing = { input_per_mchar = 0.2, output_per_mchar = 2.0 }",
    ),
    p(
        "flat",
        Primary,
        "m-flat",
        "pricing = { input_per_mtok = 1.0, output_per_mtok = 1.0 }",
    ),
    p(
        "tier",
        Secondary,
        "m-tier",
        "pricing = { input_per_mtok = 0.5, output_per_mtok = 0.5, tiers = [{ above_prompt_tokens = 100, input_per_mtok = 10.0, output_per_mtok = 10.0 }] }",
    ),
];

const ROUTES: &str = r#"
[[route]]
name = "fo"
match = { model = ["fo"] }
targets = [{ provider = "fo-a", model = "m-fo-a" }, { provider = "fo-b", model = "m-fo-b" }]

[[route]]
name = "ra"
match = { model = ["ra"] }
targets = [{ provider = "ra-a", model = "m-ra-a" }]
retry = { attempts = 2, backoff = "10ms" }

[[route]]
name = "slow"
match = { model = ["slow"] }
targets = [{ provider = "slow-a", model = "m-slow-a" }, { provider = "slow-b", model = "m-slow-b" }]

[[route]]
name = "cut"
match = { model = ["cut"] }
targets = [{ provider = "cut-a", model = "m-cut-a" }, { provider = "cut-b", model = "m-cut-b" }]

[[route]]
name = "cheap"
match = { model = ["cheap"] }
strategy = "cheapest"
min_quality = 2
targets = [{ provider = "a", model = "m-a", quality = 3 }, { provider = "ch-b", model = "m-ch-b", quality = 2 }]

[[route]]
name = "good"
match = { model = ["good"] }
strategy = "cheapest"
min_quality = 3
targets = [{ provider = "a", model = "m-a", quality = 3 }, { provider = "ch-b", model = "m-ch-b", quality = 2 }]

[[route]]
name = "w"
match = { model = ["w"] }
strategy = "weighted"
targets = [{ provider = "w-a", model = "m-w-a", weight = 1 }, { provider = "w-b", model = "m-w-b", weight = 3 }]

[[route]]
name = "ctx-short"
match = { model = ["ctx"], max_prompt_tokens = 100 }
targets = [{ provider = "ctx-b", model = "short-model" }]

[[route]]
name = "ctx-long"
match = { model = ["ctx"] }
targets = [{ provider = "ctx-a", model = "long-context" }]

[[route]]
name = "dn"
match = { model = ["dn"] }
targets = [{ provider = "dn-a", model = "m-dn-a" }, { provider = "dn-b", model = "m-dn-b" }]

[[route]]
name = "bychar"
match = { model = ["bychar"] }
strategy = "cheapest"
targets = [{ provider = "tok", model = "m-tok" }, { provider = "chr", model = "m-chr" }]

[[route]]
name = "tiered"
match = { model = ["tiered"] }
strategy = "cheapest"
targets = [{ provider = "flat", model = "m-flat" }, { provider = "tier", model = "m-tier" }]
"#;

const CLIENT_KEY: &str = "sk-client-own-key";

fn host(p: &Provider) -> String {
    format!("{}.mock.test", p.name)
}

fn key(p: &Provider) -> String {
    format!("sk-{}-key", p.name)
}

fn key_var(p: &Provider) -> String {
    format!("KEY_{}", p.name.to_ascii_uppercase().replace('-', "_"))
}

/// Two mocks ("primary", "secondary") and a proxy with every provider and route.
struct Setup {
    pki: Pki,
    primary: Mock,
    secondary: Mock,
    proxy: Proxy,
}

fn setup() -> Setup {
    let mut hosts: Vec<String> = vec!["api.mock.test".into()];
    hosts.extend(PROVIDERS.iter().map(host));
    let pki = Pki::new(&hosts.iter().map(String::as_str).collect::<Vec<_>>());
    let primary = Mock::start_tls(&pki.chain, &pki.key, &["--name", "primary"]);
    let secondary = Mock::start_tls(&pki.chain, &pki.key, &["--name", "secondary"]);
    let mut policy = format!(
        "[upstream]\nextra_roots = [\"{}\"]\nresolve = {{ ",
        pki.root_pem.display()
    );
    let resolve: Vec<String> = PROVIDERS
        .iter()
        .map(|p| {
            let addr = match p.side {
                Primary => primary.addr,
                Secondary => secondary.addr,
            };
            format!("\"{}:443\" = \"{addr}\"", host(p))
        })
        .collect();
    policy += &resolve.join(", ");
    policy += " }\n";
    for p in &PROVIDERS {
        policy += &format!(
            "\n[[allow]]\nname = \"{n}\"\nbase_url = \"https://{h}/v1\"\n\n[[provider]]\nname = \"{n}\"\nbase_url = \"https://{h}/v1\"\napi_key = {{ env = \"{v}\" }}\n{extra}\n",
            n = p.name,
            h = host(p),
            v = key_var(p),
            extra = p.extra,
        );
    }
    policy += ROUTES;
    let env: Vec<(String, String)> = PROVIDERS.iter().map(|p| (key_var(p), key(p))).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let proxy = Proxy::start_with_env(&policy, &env);
    Setup {
        pki,
        primary,
        secondary,
        proxy,
    }
}

/// The host a recorded request addressed (HTTP/2 `:authority` or `Host`), without port.
fn host_of(rec: &Value) -> String {
    let authority = rec["authority"]
        .as_str()
        .or_else(|| record_header(rec, "host"))
        .unwrap_or_default();
    authority.trim_end_matches(":443").to_owned()
}

/// One mode's run: what the SDK saw and what the mocks received.
struct Run<'a> {
    mode: &'a str,
    proxy: &'a Proxy,
    /// The script's JSON.
    v: Value,
    /// Every request the mocks recorded, with the mock that received it.
    all: Vec<(Side, Value)>,
}

impl Run<'_> {
    /// The text a scenario put in its prompts.
    fn tag(&self, scenario: &str) -> String {
        format!("{scenario} {}", self.mode)
    }

    /// The records whose prompt carries the scenario's tag (the primary's first, each
    /// mock's in arrival order).
    fn tagged(&self, scenario: &str) -> Vec<&Value> {
        let tag = self.tag(scenario);
        self.all
            .iter()
            .map(|(_, r)| r)
            .filter(|r| r["body"].as_str().is_some_and(|b| b.contains(&tag)))
            .collect()
    }

    /// The hosts the scenario's requests reached.
    fn hosts(&self, scenario: &str) -> Vec<String> {
        self.tagged(scenario).into_iter().map(host_of).collect()
    }
}

/// Runs the script in `mode` and checks every scenario. `client_host` is the host the
/// client addressed (forward-proxy mode) or None (gateway).
fn scenarios(mode: &str, client_host: Option<&str>) {
    let s = setup();
    let started = std::time::Instant::now();
    let v = match client_host {
        Some(h) => run_sdk(
            &s.proxy,
            "routing_sdk.py",
            &[
                ("MODE", mode),
                ("OPENAI_BASE_URL", &format!("https://{h}/v1")),
            ],
        ),
        None => run_sdk_gateway(&s.proxy, "routing_sdk.py", &[("MODE", mode)]),
    };
    eprintln!(
        "{mode}: the SDK run took {:?}; seconds per scenario: {}",
        started.elapsed(),
        v["seconds"]
    );
    let mut all = Vec::new();
    for (side, mock) in [(Primary, &s.primary), (Secondary, &s.secondary)] {
        let records = mock.requests(&s.pki.root_pem);
        all.extend(records.into_iter().map(|r| (side, r)));
    }
    let run = Run {
        mode,
        proxy: &s.proxy,
        v,
        all,
    };
    failover(&run);
    retry_after(&run);
    slow_primary(&run);
    cut_streams(&run);
    cheapest_and_weighted(&run);
    long_context_and_all_down(&run);
    pricing_flips(&run);
    credentials(&run, client_host);
}

/// A 500 from the primary: the secondary answers, JSON and streamed.
fn failover(run: &Run<'_>) {
    let v = &run.v;
    assert_eq!(v["failover"]["by"], "secondary", "{}", v["failover"]);
    assert_eq!(
        v["failover"]["content"],
        format!("echo: {}", run.tag("failover json"))
    );
    let fs = &v["failover_stream"];
    assert!(fs["error"].is_null(), "{fs}");
    assert_eq!(fs["by"], "secondary", "{fs}");
    assert_eq!(fs["text"], format!("echo: {}", run.tag("failover stream")));
    for t in ["failover json", "failover stream"] {
        assert_eq!(run.hosts(t), ["fo-a.mock.test", "fo-b.mock.test"]);
    }
}

/// Retry-After: 1 honoured before re-trying the same target.
fn retry_after(run: &Run<'_>) {
    let ra = run.v["retry_after"].as_array().expect("list");
    assert!(ra.iter().all(|r| r["by"] == "primary"), "{ra:?}");
    assert!(ra[1]["seconds"].as_f64().unwrap_or(0.0) >= 1.0, "{ra:?}");
    let ts: Vec<u64> = run
        .tagged("retry-after")
        .iter()
        .map(|r| r["ts_us"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        ts.len(),
        3,
        "one request, then the 429'd one and its re-try"
    );
    assert!(
        ts[2] - ts[1] >= 1_000_000,
        "the re-try waited for Retry-After: {ts:?}"
    );
}

/// A slow primary opens on p99, traffic moves, half-open probes close it again.
fn slow_primary(run: &Run<'_>) {
    let v = &run.v;
    let load = v["slow_load"].as_array().expect("list");
    assert_eq!(load.len(), 112);
    let by_primary = load.iter().filter(|b| *b == "primary").count();
    assert!(
        by_primary >= 100,
        "100 latency samples before the p99 rule judges: {by_primary}"
    );
    let by_secondary = load.iter().filter(|b| *b == "secondary").count();
    assert_eq!(by_primary + by_secondary, load.len());
    assert!(by_secondary > 0, "requests started after the trip moved");
    assert_eq!(v["slow_moved"], "secondary", "traffic moved");
    assert_eq!(
        v["slow_recovered"],
        serde_json::json!(["primary", "primary", "primary", "primary"])
    );
    let opened = run.proxy.audit_lines(1, |l| l["event"] == "circuit_opened");
    assert_eq!(opened.len(), 1, "only the slow primary opened: {opened:?}");
    assert_eq!(opened[0]["reason"], "p99_latency");
    assert_eq!(opened[0]["detail"]["provider"], "slow-a");
    let closed = run.proxy.audit_lines(1, |l| l["event"] == "circuit_closed");
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0]["detail"]["provider"], "slow-a");
}

/// A stream cut before content fails over invisibly; after content it is an error, and
/// there was exactly one upstream completion.
fn cut_streams(run: &Run<'_>) {
    let early = &run.v["cut_early"];
    assert!(early["error"].is_null(), "{early}");
    assert_eq!(early["by"], "secondary");
    assert_eq!(
        early["text"],
        format!("echo: {} one two three", run.tag("cut early"))
    );
    assert_eq!(
        run.hosts("cut early"),
        ["cut-a.mock.test", "cut-b.mock.test"]
    );
    let late = &run.v["cut_late"];
    assert_eq!(late["error"]["code"], "upstream_stream_cut", "{late}");
    assert_eq!(late["by"], "primary", "{late}");
    let text = late["text"].as_str().unwrap_or_default();
    let whole = format!("echo: {} one two three four five", run.tag("cut late"));
    assert!(
        !text.is_empty() && text.len() < whole.len() && whole.starts_with(text),
        "a strict prefix of the answer: {late}"
    );
    assert_eq!(run.hosts("cut late"), ["cut-a.mock.test"]);
}

/// Cheapest at or above the quality floor; weighted 1:3.
fn cheapest_and_weighted(run: &Run<'_>) {
    let v = &run.v;
    assert_eq!(v["cheap"], "secondary");
    assert_eq!(v["good"], "primary", "only `a` meets quality 3");
    assert_eq!(run.hosts("good"), ["a.mock.test"]);
    // The primary's share of 200 is binomial (n = 200, p = 0.25, σ ≈ 3.1 points):
    // ±12.5 points is 4 σ, a false failure in under 1 run of 10,000.
    let w = v["weighted"].as_array().expect("list");
    assert_eq!(w.len(), 200);
    let primary = w.iter().filter(|b| *b == "primary").count();
    let share = primary as f64 / w.len() as f64;
    assert!((0.125..=0.375).contains(&share), "primary share {share}");
    let hosts = run.hosts("weighted");
    let at = |h: &str| hosts.iter().filter(|x| *x == h).count();
    assert_eq!(
        (at("w-a.mock.test"), at("w-b.mock.test")),
        (primary, 200 - primary)
    );
}

/// A prompt over the short route's max_prompt_tokens takes the long-context route; all
/// targets down is a 503 all_targets_unavailable with the providers' Retry-After.
fn long_context_and_all_down(run: &Run<'_>) {
    let v = &run.v;
    assert_eq!(v["ctx_short"]["by"], "secondary");
    assert_eq!(v["ctx_long"]["by"], "primary");
    assert_eq!(run.hosts("ctx short"), ["ctx-b.mock.test"]);
    assert_eq!(run.hosts("ctx long"), ["ctx-a.mock.test"]);
    let down = &v["all_down"];
    assert_eq!(down["status"], 503, "{down}");
    assert_eq!(down["code"], "all_targets_unavailable", "{down}");
    assert_eq!(down["retry_after"], "2", "{down}");
    assert_eq!(run.hosts("all down"), ["dn-a.mock.test", "dn-b.mock.test"]);
}

/// Per-character and tiered pricing flip cheapest's choice with the request's shape.
fn pricing_flips(run: &Run<'_>) {
    let v = &run.v;
    assert_eq!(v["bychar_long_prompt"], "secondary", "per character wins");
    assert_eq!(v["bychar_long_answer"], "primary", "per token wins");
    assert_eq!(v["tiered_short"], "secondary", "below the tier");
    assert_eq!(v["tiered_long"], "primary", "the tier's surcharge applies");
}

/// Every request any provider received carries that provider's key and the target's
/// model, never the client's key; account headers only where the client itself was
/// headed. No key appears in the proxy's logs or audit lines.
fn credentials(run: &Run<'_>, client_host: Option<&str>) {
    let by_host: HashMap<String, &Provider> = PROVIDERS.iter().map(|p| (host(p), p)).collect();
    for (side, rec) in &run.all {
        let h = host_of(rec);
        let p = by_host
            .get(&h)
            .unwrap_or_else(|| panic!("a request for {h}: {rec}"));
        assert_eq!(p.side, *side, "{h} resolves to its own mock");
        let expected_auth = format!("Bearer {}", key(p));
        assert_eq!(
            record_header(rec, "authorization"),
            Some(expected_auth.as_str())
        );
        let body: Value =
            serde_json::from_str(rec["body"].as_str().unwrap_or("null")).unwrap_or_default();
        assert_eq!(body["model"], p.model, "model rewritten for {h}");
        assert!(
            !rec.to_string().contains(CLIENT_KEY),
            "the client's key reached {h}"
        );
        let org = record_header(rec, "openai-organization");
        if Some(h.as_str()) == client_host {
            assert_eq!(org, Some("org-client"), "{rec}");
        } else {
            assert!(org.is_none(), "account headers do not cross to {h}");
        }
    }
    // failover 2 × 2, retry-after 3, slow 112 + 1 + 4, cuts 2 + 1, cheapest 2, weighted
    // 200, long context 2, all down 2, pricing flips 4.
    assert_eq!(
        run.all.len(),
        4 + 3 + 117 + 3 + 2 + 200 + 2 + 2 + 4,
        "no request unaccounted for"
    );
    let logs = run.proxy.proc.output();
    let audit = std::fs::read_to_string(&run.proxy.audit).unwrap_or_default();
    for secret in PROVIDERS.iter().map(key).chain([CLIENT_KEY.to_owned()]) {
        assert!(
            !logs.contains(&secret) && !audit.contains(&secret),
            "{secret}"
        );
    }
}

#[test]
fn routing_scenarios_with_the_sdk_through_the_forward_proxy() {
    scenarios("proxy", Some("a.mock.test"));
}

#[test]
fn routing_scenarios_with_the_sdk_through_the_gateway() {
    scenarios("gateway", None);
}
