//! Routing and failover end to end: two mock providers behind one route, in forward-proxy
//! and gateway mode, with injected faults.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const HOSTS: [&str; 3] = ["api.mock.test", "primary.mock.test", "secondary.mock.test"];

struct Two {
    pki: Pki,
    primary: Mock,
    secondary: Mock,
}

fn two(primary_faults: &[&str], secondary_faults: &[&str]) -> Two {
    let pki = Pki::new(&HOSTS);
    let mut a = vec!["--name", "primary"];
    a.extend_from_slice(primary_faults);
    let mut b = vec!["--name", "secondary"];
    b.extend_from_slice(secondary_faults);
    let primary = Mock::start_tls(&pki.chain, &pki.key, &a);
    let secondary = Mock::start_tls(&pki.chain, &pki.key, &b);
    Two {
        pki,
        primary,
        secondary,
    }
}

fn policy(t: &Two, routes: &str) -> String {
    format!(
        r#"
[upstream]
extra_roots = ["{root}"]
resolve = {{ "api.mock.test:443" = "{p}", "primary.mock.test:443" = "{p}", "secondary.mock.test:443" = "{s}" }}

[[allow]]
name = "app"
base_url = "https://api.mock.test/v1"

[[allow]]
name = "primary"
base_url = "https://primary.mock.test/v1"

[[allow]]
name = "secondary"
base_url = "https://secondary.mock.test/v1"

[[provider]]
name = "primary"
base_url = "https://primary.mock.test/v1"
api_key = {{ env = "PRIMARY_KEY" }}
pricing = {{ input_per_mtok = 5.0, output_per_mtok = 15.0 }}

[[provider]]
name = "secondary"
base_url = "https://secondary.mock.test/v1"
api_key = {{ env = "SECONDARY_KEY" }}
pricing = {{ input_per_mtok = 0.5, output_per_mtok = 1.5 }}

[breaker]
consecutive_failures = 3
open_for = "30s"

{routes}
"#,
        root = t.pki.root_pem.display(),
        p = t.primary.addr,
        s = t.secondary.addr,
    )
}

const FALLBACK: &str = r#"
[[route]]
name = "smart"
match = { model = ["smart"] }
strategy = "fallback"
targets = [{ provider = "primary", model = "p-model" }, { provider = "secondary", model = "s-model" }]
retry = { attempts = 4, backoff = "10ms", max_backoff = "50ms" }
"#;

fn start(t: &Two, routes: &str) -> Proxy {
    Proxy::start_with_env(
        &policy(t, routes),
        &[
            ("PRIMARY_KEY", "sk-primary-key"),
            ("SECONDARY_KEY", "sk-secondary-key"),
        ],
    )
}

async fn chat(
    c: &reqwest::Client,
    base: &str,
    model: &str,
    stream: bool,
    fault: Option<&str>,
) -> reqwest::Response {
    let mut r = c
        .post(format!("{base}/chat/completions"))
        .bearer_auth("sk-client-own-key")
        .header("openai-organization", "org-client")
        .json(&serde_json::json!({ "model": model, "stream": stream, "messages": [{"role": "user", "content": "route me please"}] }));
    if let Some(f) = fault {
        r = r.header("x-mock-fault", f);
    }
    r.send().await.expect("send")
}

/// Asserts `/metrics` has token counts under `provider` and `model`.
fn assert_tokens_counted(proxy: &Proxy, provider: &str, model: &str) {
    let (_, m) = proxy.admin_get("/metrics");
    let (p, md) = (
        format!("provider=\"{provider}\""),
        format!("model=\"{model}\""),
    );
    assert!(
        m.lines().any(|l| l.starts_with("llm_egress_tokens_total{")
            && l.contains(&p)
            && l.contains(&md)),
        "no tokens under {provider}/{model}:\n{m}"
    );
}

#[tokio::test]
async fn a_target_without_a_model_gets_the_clients_model_and_usage_names_the_sent_model() {
    let t = two(&["--faults", "status=500"], &[]);
    let proxy = start(
        &t,
        r#"
[[route]]
name = "keep"
match = { model = ["smart"] }
strategy = "fallback"
targets = [{ provider = "primary", model = "p-model" }, { provider = "secondary" }]
"#,
    );
    let c = proxy.client();
    let r = chat(&c, "https://api.mock.test/v1", "smart", false, None).await;
    assert_eq!(r.status(), 200);
    let sent = |m: &Mock| -> Vec<String> {
        m.requests(&t.pki.root_pem)
            .iter()
            .map(|rec| {
                let b: serde_json::Value =
                    serde_json::from_str(rec["body"].as_str().expect("body")).expect("json");
                b["model"].as_str().unwrap_or_default().to_owned()
            })
            .collect()
    };
    assert_eq!(sent(&t.primary), ["p-model"]);
    // Not the primary's model carried over from the failed attempt.
    assert_eq!(sent(&t.secondary), ["smart"]);
    assert_tokens_counted(&proxy, "secondary", "smart");

    // With a model on the answering target, usage is counted under that model.
    let proxy = start(&t, FALLBACK);
    let r = chat(
        &proxy.client(),
        "https://api.mock.test/v1",
        "smart",
        false,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_tokens_counted(&proxy, "secondary", "s-model");
}

#[tokio::test]
async fn primary_500_is_answered_by_the_secondary_with_swapped_credentials_and_model() {
    let t = two(&["--faults", "status=500"], &[]);
    let proxy = start(&t, FALLBACK);
    let c = proxy.client();
    let r = chat(&c, "https://api.mock.test/v1", "smart", false, None).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["system_fingerprint"], "secondary", "{v}");
    let p = t.primary.requests(&t.pki.root_pem);
    let s = t.secondary.requests(&t.pki.root_pem);
    assert!(!p.is_empty() && s.len() == 1);
    assert_eq!(
        record_header(&p[0], "authorization"),
        Some("Bearer sk-primary-key")
    );
    assert_eq!(
        record_header(&s[0], "authorization"),
        Some("Bearer sk-secondary-key")
    );
    assert!(
        record_header(&s[0], "openai-organization").is_none(),
        "provider headers dropped when crossing"
    );
    let body: serde_json::Value =
        serde_json::from_str(s[0]["body"].as_str().expect("body")).expect("json");
    assert_eq!(body["model"], "s-model");
    for rec in p.iter().chain(s.iter()) {
        assert!(
            !rec.to_string().contains("sk-client-own-key"),
            "the client's key never reaches another provider"
        );
    }
    let fo = proxy.audit_lines(1, |v| v["event"] == "failover");
    assert_eq!(fo[0]["detail"]["to"], "secondary");
    assert!(!proxy.proc.output().contains("sk-secondary-key"));
}

#[tokio::test]
async fn all_targets_down_is_503_with_retry_after_and_breaker_opens() {
    let t = two(&["--faults", "status=503"], &["--faults", "status=502"]);
    let proxy = start(&t, FALLBACK);
    let c = proxy.client();
    let r = chat(&c, "https://api.mock.test/v1", "smart", false, None).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "all_targets_unavailable");
    assert!(v["error"]["upstream"]["provider"].is_string(), "{v}");
    // Two more failing requests: three consecutive failures open both circuits.
    for _ in 0..2 {
        let _ = chat(&c, "https://api.mock.test/v1", "smart", false, None).await;
    }
    let opened = proxy.audit_lines(2, |v| v["event"] == "circuit_opened");
    assert!(opened.len() >= 2, "{opened:?}");
    let before = t.primary.requests(&t.pki.root_pem).len();
    let r = chat(&c, "https://api.mock.test/v1", "smart", false, None).await;
    assert_eq!(r.status(), 503, "open circuits are skipped");
    assert_eq!(
        t.primary.requests(&t.pki.root_pem).len(),
        before,
        "no request to an open circuit"
    );
}

#[tokio::test]
async fn a_stream_cut_before_content_fails_over_invisibly_after_content_it_is_an_error() {
    let t = two(&["--faults", "cut_after=0"], &[]);
    let proxy = start(&t, FALLBACK);
    let c = proxy.client();
    // Cut before any content: the client sees one clean stream from the secondary.
    let r = chat(&c, "https://api.mock.test/v1", "smart", true, None).await;
    let text = r.text().await.expect("body");
    assert!(
        text.contains("\"system_fingerprint\":\"secondary\"") || text.contains("secondary"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(!text.contains("upstream_stream_cut"));
    assert_eq!(t.secondary.requests(&t.pki.root_pem).len(), 1);
    drop(proxy);
    let t = two(&["--faults", "cut_after=2"], &[]);
    let proxy = start(&t, FALLBACK);
    let c = proxy.client();
    let r = chat(&c, "https://api.mock.test/v1", "smart", true, None).await;
    let text = r.text().await.expect("body");
    assert!(text.contains("upstream_stream_cut"), "{text}");
    assert!(
        t.secondary.requests(&t.pki.root_pem).is_empty(),
        "no second completion once content was sent"
    );
}

#[tokio::test]
async fn cheapest_respects_the_quality_floor_and_long_prompts_take_their_route() {
    let t = two(&[], &[]);
    let routes = r#"
[[route]]
name = "long"
match = { model = ["auto"], min_prompt_tokens = 50 }
targets = [{ provider = "primary", model = "long-context" }]

[[route]]
name = "cheap"
match = { model = ["auto"] }
strategy = "cheapest"
min_quality = 2
targets = [{ provider = "primary", model = "p", quality = 3 }, { provider = "secondary", model = "s", quality = 2 }]

[[route]]
name = "good"
match = { model = ["good"] }
strategy = "cheapest"
min_quality = 3
targets = [{ provider = "primary", model = "p", quality = 3 }, { provider = "secondary", model = "s", quality = 2 }]
"#;
    let proxy = start(&t, routes);
    let c = proxy.client();
    let v: serde_json::Value = chat(&c, "https://api.mock.test/v1", "auto", false, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        v["system_fingerprint"], "secondary",
        "cheapest at quality >= 2"
    );
    let v: serde_json::Value = chat(&c, "https://api.mock.test/v1", "good", false, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        v["system_fingerprint"], "primary",
        "only primary meets quality 3"
    );
    let long = "word ".repeat(400);
    let v: serde_json::Value = c
        .post("https://api.mock.test/v1/chat/completions")
        .json(
            &serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": long}]}),
        )
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["system_fingerprint"], "primary");
    let p = t.primary.requests(&t.pki.root_pem);
    let last: serde_json::Value =
        serde_json::from_str(p.last().expect("rec")["body"].as_str().expect("body")).expect("json");
    assert_eq!(last["model"], "long-context");
}

#[test]
fn gateway_mode_with_the_openai_sdk() {
    let t = two(&["--faults", "status=500"], &[]);
    let proxy = start(&t, FALLBACK);
    let py = python();
    let script = r#"
import json, os, openai
c = openai.OpenAI(api_key="sk-client-own-key", base_url=os.environ["OPENAI_BASE_URL"], max_retries=0)
out = {"models": sorted(m.id for m in c.models.list())}
r = c.chat.completions.create(model="smart", messages=[{"role": "user", "content": "gateway hello"}])
out["answer"] = r.choices[0].message.content
out["by"] = r.system_fingerprint
text = ""
for ch in c.chat.completions.create(model="smart", messages=[{"role": "user", "content": "gateway stream"}], stream=True):
    for ck in ch.choices:
        text += ck.delta.content or ""
out["stream"] = text
try:
    c.chat.completions.create(model="unknown-model", messages=[{"role": "user", "content": "x"}])
except openai.NotFoundError as e:
    out["unknown"] = e.code
print(json.dumps(out))
"#;
    let out = Command::new(py)
        .args(["-c", script])
        .env("OPENAI_BASE_URL", format!("http://{}/v1", proxy.addr))
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.proc.output()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["models"], serde_json::json!(["smart"]));
    assert!(v["answer"]
        .as_str()
        .unwrap_or_default()
        .contains("gateway hello"));
    assert_eq!(v["by"], "secondary");
    assert!(
        v["stream"]
            .as_str()
            .unwrap_or_default()
            .contains("gateway stream"),
        "{v}"
    );
    assert_eq!(v["unknown"], "no_route");
    let s = t.secondary.requests(&t.pki.root_pem);
    assert!(s
        .iter()
        .all(|r| record_header(r, "authorization") == Some("Bearer sk-secondary-key")));
    let _: SocketAddr = proxy.addr;
}

#[tokio::test]
async fn a_slow_primary_opens_on_p99_then_recovers_through_half_open() {
    let t = two(&["--faults", "latency=40ms"], &[]);
    let routes = r#"
[[route]]
name = "smart"
match = { model = ["smart"] }
targets = [{ provider = "primary" }, { provider = "secondary" }]
"#;
    let p = policy(&t, routes).replace(
        "[breaker]\nconsecutive_failures = 3\nopen_for = \"30s\"",
        "[breaker]\nconsecutive_failures = 3\np99_latency = \"20ms\"\nmin_requests = 1000\nopen_for = \"1s\"",
    );
    let proxy = Proxy::start_with_env(
        &p,
        &[
            ("PRIMARY_KEY", "sk-primary-key"),
            ("SECONDARY_KEY", "sk-secondary-key"),
        ],
    );
    let c = proxy.client();
    // 100+ slow answers fill the window; then the p99 rule opens the circuit.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..14 {
                let _ = chat(&c, "https://api.mock.test/v1", "smart", false, None).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    let opened = proxy.audit_lines(1, |v| v["event"] == "circuit_opened");
    assert_eq!(opened[0]["reason"], "p99_latency", "{opened:?}");
    let v: serde_json::Value = chat(&c, "https://api.mock.test/v1", "smart", false, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["system_fingerprint"], "secondary", "traffic moved");
    let (_, status) = proxy.admin_get("/api/status");
    assert!(status.contains("\"state\": \"open\""), "{status}");
    // The primary becomes fast again; after open_for, half-open probes close the circuit.
    let addr = t.primary.addr.to_string();
    let Two {
        pki,
        primary,
        secondary,
    } = t;
    drop(primary);
    let _fast = Mock::start_tls_at(&pki.chain, &pki.key, &addr, &["--name", "primary"]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut by = Vec::new();
    for _ in 0..4 {
        by.push(answered_by(&c, "smart", None).await);
    }
    assert_eq!(by.last().map(String::as_str), Some("primary"), "{by:?}");
    let closed = proxy.audit_lines(1, |v| v["event"] == "circuit_closed");
    assert_eq!(closed.len(), 1);
    drop(secondary);
}

#[tokio::test]
async fn retry_after_on_429_is_honoured_before_retrying_the_same_target() {
    let t = two(&["--faults", "status=429;retry_after=1;every=2"], &[]);
    let routes = r#"
[[route]]
name = "only"
match = { model = ["only"] }
targets = [{ provider = "primary" }]
retry = { attempts = 2, backoff = "10ms" }
"#;
    let proxy = start(&t, routes);
    let c = proxy.client();
    assert_eq!(
        chat(&c, "https://api.mock.test/v1", "only", false, None)
            .await
            .status(),
        200
    );
    let started = std::time::Instant::now();
    let r = chat(&c, "https://api.mock.test/v1", "only", false, None).await;
    assert_eq!(r.status(), 200, "the second attempt succeeds");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "waited for Retry-After: {:?}",
        started.elapsed()
    );
    assert_eq!(t.primary.requests(&t.pki.root_pem).len(), 3);
}

#[tokio::test]
async fn weighted_splits_within_tolerance() {
    let t = two(&[], &[]);
    let routes = r#"
[[route]]
name = "w"
match = { model = ["w"] }
strategy = "weighted"
targets = [{ provider = "primary", weight = 1 }, { provider = "secondary", weight = 3 }]
"#;
    let proxy = start(&t, routes);
    let c = proxy.client();
    let mut primary = 0;
    let n = 200;
    for _ in 0..n {
        let v: serde_json::Value = chat(&c, "https://api.mock.test/v1", "w", false, None)
            .await
            .json()
            .await
            .expect("json");
        if v["system_fingerprint"] == "primary" {
            primary += 1;
        }
    }
    // Expected 25 %; 200 draws give a standard deviation of ~3 points: allow ±10.
    let share = primary as f64 / n as f64;
    assert!((0.15..=0.35).contains(&share), "primary share {share}");
}

/// One route, `only`, to the primary: the timing tests watch that endpoint alone.
const ONLY_PRIMARY: &str = r#"
[[route]]
name = "only"
match = { model = ["only"] }
targets = [{ provider = "primary" }]
"#;

#[tokio::test]
async fn an_endpoint_that_suddenly_answers_300ms_slower_is_a_timing_anomaly() {
    let t = two(&[], &[]);
    let proxy = start(&t, ONLY_PRIMARY);
    let c = proxy.client();
    for _ in 0..45 {
        assert_eq!(
            chat(&c, "https://api.mock.test/v1", "only", false, None)
                .await
                .status(),
            200
        );
    }
    assert!(
        proxy
            .audit_lines(0, |v| v["event"] == "timing_anomaly")
            .is_empty(),
        "steady traffic is not an anomaly"
    );
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            chat(
                &c,
                "https://api.mock.test/v1",
                "only",
                false,
                Some("latency=300ms"),
            )
            .await
            .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), 200);
    }
    let lines = proxy.audit_lines(1, |v| v["event"] == "timing_anomaly");
    assert_eq!(lines.len(), 1, "reported once: {lines:?}");
    assert_eq!(lines[0]["host"], "primary.mock.test");
    assert_eq!(lines[0]["detail"]["metric"], "response_headers");
    let d = &lines[0]["detail"];
    let (recent, base) = (
        d["recent_ms"].as_f64().unwrap_or(0.0),
        d["baseline_ms"].as_f64().unwrap_or(0.0),
    );
    assert!(recent > base + 50.0, "{d}");
    let (_, status) = proxy.admin_get("/api/status");
    assert!(status.contains("primary.mock.test:443"), "{status}");
}

#[tokio::test]
async fn an_endpoint_whose_handshakes_turn_300ms_slower_is_a_timing_anomaly() {
    // No keep-alive: every request opens a new connection, so every request is one TLS
    // handshake for the watch.
    let t = two(&["--no-keep-alive"], &[]);
    let proxy = start(&t, ONLY_PRIMARY);
    let c = proxy.client();
    let handshakes = |proxy: &Proxy| -> serde_json::Value {
        let (_, status) = proxy.admin_get("/api/status");
        let v: serde_json::Value = serde_json::from_str(&status).expect("status json");
        v["timing"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["endpoint"] == "primary.mock.test:443" && s["metric"] == "tls_handshake")
            .cloned()
            .unwrap_or_default()
    };
    // The rule judges once the baseline holds 20 samples besides the recent 20.
    for _ in 0..45 {
        let r = chat(&c, "https://api.mock.test/v1", "only", false, None).await;
        assert_eq!(r.status(), 200);
    }
    let steady = handshakes(&proxy);
    assert_eq!(steady["samples"], 45, "one handshake per request: {steady}");
    assert_eq!(steady["anomalous"], false, "{steady}");
    assert!(
        proxy
            .audit_lines(0, |v| v["event"] == "timing_anomaly")
            .is_empty(),
        "steady handshakes are not an anomaly"
    );
    // From now on every handshake with the primary takes 300 ms longer.
    let set = t.primary.control(
        &t.pki.root_pem,
        "PUT",
        "/__mock/connections?handshake_delay=300ms",
    );
    assert_eq!(set["handshake_delay_ms"], 300.0, "{set}");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            chat(&c, "https://api.mock.test/v1", "only", false, None)
                .await
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), 200);
    }
    let is_handshake = |v: &serde_json::Value| {
        v["event"] == "timing_anomaly" && v["detail"]["metric"] == "tls_handshake"
    };
    let lines = proxy.audit_lines(1, is_handshake);
    assert_eq!(lines.len(), 1, "reported once: {lines:?}");
    let line = &lines[0];
    assert_eq!(line["host"], "primary.mock.test");
    assert_eq!(line["port"], 443);
    assert_eq!(line["reason"], "tls_handshake_slower");
    let d = &line["detail"];
    assert_eq!(d["endpoint"], "primary.mock.test:443");
    let ms = |k: &str| d[k].as_f64().unwrap_or(f64::NAN);
    assert!(ms("threshold_ms") >= 50.0, "{d}");
    assert!(
        ms("recent_ms") - ms("baseline_ms") > ms("threshold_ms"),
        "{d}"
    );
    // Reported once about half the recent 20 are slow: their median is then about
    // halfway between the old and the new level.
    assert!(
        ms("recent_ms") - ms("baseline_ms") > 100.0,
        "a step, not noise: {d}"
    );
    // Audit lines never carry credentials.
    let audit = std::fs::read_to_string(&proxy.audit).expect("audit");
    for secret in [
        "sk-primary-key",
        "sk-secondary-key",
        "sk-client-own-key",
        "Bearer",
    ] {
        assert!(!audit.contains(secret), "{secret} in the audit log");
    }
    // The admin API shows the anomaly while it lasts.
    let now = handshakes(&proxy);
    assert_eq!(now["samples"], 65, "{now}");
    assert_eq!(now["anomalous"], true, "{now}");
    assert!(now["recent_ms"].as_f64().unwrap_or(0.0) >= 250.0, "{now}");
    assert!(
        now["baseline_ms"].as_f64().unwrap_or(f64::MAX) < 150.0,
        "{now}"
    );
}

#[tokio::test]
async fn on_invalid_retry_reissues_to_the_next_target_before_anything_is_sent() {
    let t = two(&[], &[]);
    let routes = FALLBACK.replace(
        "retry = { attempts = 4, backoff = \"10ms\", max_backoff = \"50ms\" }\n",
        "",
    ) + "\n[tool_calls]\nvalidate = true\non_invalid = \"retry\"\n";
    let proxy = start(&t, &routes);
    let c = proxy.client();
    let tools = serde_json::json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "required": ["city"]}}}]);
    for stream in [false, true] {
        let r = c
            .post("https://api.mock.test/v1/chat/completions")
            .json(&serde_json::json!({"model": "smart", "stream": stream, "tools": tools, "messages": [{"role": "user", "content": "call get_weather {\"days\": 1}"}]}))
            .send()
            .await
            .expect("send");
        // Both targets answer with the same invalid call: each is tried once, then 503.
        assert_eq!(r.status(), 503, "stream={stream}");
        let v: serde_json::Value = r.json().await.expect("json");
        assert!(
            v["error"]["upstream"]["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("tool call rejected"),
            "{v}"
        );
    }
    assert_eq!(t.primary.requests(&t.pki.root_pem).len(), 2);
    assert_eq!(
        t.secondary.requests(&t.pki.root_pem).len(),
        2,
        "re-issued to the next target"
    );
    let lines = proxy.audit_lines(4, |v| v["event"] == "tool_call_invalid");
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|l| l["detail"]["action"] == "retried"));
}

fn priced_policy(t: &Two, primary_pricing: &str, secondary_pricing: &str) -> String {
    policy(
        t,
        r#"
[[route]]
name = "cheap"
match = { model = ["auto"] }
strategy = "cheapest"
targets = [{ provider = "primary" }, { provider = "secondary" }]
"#,
    )
    .replace(
        "pricing = { input_per_mtok = 5.0, output_per_mtok = 15.0 }",
        primary_pricing,
    )
    .replace(
        "pricing = { input_per_mtok = 0.5, output_per_mtok = 1.5 }",
        secondary_pricing,
    )
}

#[tokio::test]
async fn per_character_and_tiered_pricing_change_cheapests_choice() {
    let t = two(&[], &[]);
    let keys = [
        ("PRIMARY_KEY", "sk-primary-key"),
        ("SECONDARY_KEY", "sk-secondary-key"),
    ];
    let primary = "pricing = { input_per_mtok = 1.0, output_per_mtok = 1.0 }";
    let cases = [
        // Per token 1.0 vs per character 0.5 (~2.0 per token at 4 chars/token): primary wins.
        (
            "pricing = { input_per_mchar = 0.5, output_per_mchar = 0.5 }",
            "primary",
        ),
        // Per character 0.1 (~0.4 per token): now the secondary is cheaper.
        (
            "pricing = { input_per_mchar = 0.1, output_per_mchar = 0.1 }",
            "secondary",
        ),
    ];
    for (secondary, expected) in cases {
        let proxy = Proxy::start_with_env(&priced_policy(&t, primary, secondary), &keys);
        assert_eq!(
            answered_by(&proxy.client(), "auto", None).await,
            expected,
            "{secondary}"
        );
    }
    // A long-context tier: the secondary is cheaper for short prompts, dearer above 100 tokens.
    let p = priced_policy(
        &t,
        primary,
        "pricing = { input_per_mtok = 0.5, output_per_mtok = 0.5, tiers = [{ above_prompt_tokens = 100, input_per_mtok = 10.0, output_per_mtok = 10.0 }] }",
    );
    let proxy = Proxy::start_with_env(&p, &keys);
    let c = proxy.client();
    assert_eq!(answered_by(&c, "auto", None).await, "secondary");
    let long = "word ".repeat(300);
    let v: serde_json::Value = c
        .post("https://api.mock.test/v1/chat/completions")
        .json(
            &serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": long}]}),
        )
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["system_fingerprint"], "primary");
}

/// A `fastest` route named `fast` over primary and secondary, with `extra` settings.
fn fastest_route(extra: &str) -> String {
    format!(
        r#"
[[route]]
name = "fast"
match = {{ model = ["fast"] }}
strategy = "fastest"
{extra}
targets = [{{ provider = "primary" }}, {{ provider = "secondary" }}]
"#
    )
}

/// Which mock answered one chat for `model` (its `--name`, echoed as `system_fingerprint`).
async fn answered_by(c: &reqwest::Client, model: &str, fault: Option<&str>) -> String {
    let v: serde_json::Value = chat(c, "https://api.mock.test/v1", model, false, fault)
        .await
        .json()
        .await
        .expect("json");
    v["system_fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn fastest_moves_to_the_quicker_provider() {
    // The slow provider is slower by far more than a TLS handshake on a loaded machine
    // takes, so the quick one's first sample (which includes its handshake) stays lower.
    let t = two(&["--faults", "latency=300ms"], &[]);
    let proxy = start(&t, &fastest_route(""));
    let c = proxy.client();
    let mut by = Vec::new();
    for _ in 0..8 {
        by.push(answered_by(&c, "fast", None).await);
    }
    assert!(by[3..].iter().all(|b| b == "secondary"), "{by:?}");
}

#[tokio::test]
async fn fastest_measures_a_provider_that_was_slow_once_again() {
    // primary answers in 60 ms throughout; secondary is fast except for one slow answer.
    let t = two(&["--faults", "latency=60ms"], &[]);
    let proxy = start(&t, &fastest_route("reprobe_after = \"1s\""));
    let c = proxy.client();
    let slow_secondary = Some("latency=600ms;mock=secondary");
    // Unmeasured targets first, in the order written: secondary's first sample is slow.
    assert_eq!(answered_by(&c, "fast", slow_secondary).await, "primary");
    assert_eq!(answered_by(&c, "fast", slow_secondary).await, "secondary");
    // That one sample ranks secondary behind primary; only the leader is tried ...
    for _ in 0..2 {
        assert_eq!(answered_by(&c, "fast", None).await, "primary");
    }
    // ... until secondary's average is older than reprobe_after: one request measures it
    // again, its fast answer replaces the stale average, and secondary leads from then on.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut by = Vec::new();
    for _ in 0..6 {
        by.push(answered_by(&c, "fast", None).await);
    }
    assert!(by[2..].iter().all(|b| b == "secondary"), "{by:?}");
    let secondary_probes = by[..2].iter().filter(|b| *b == "secondary").count();
    assert_eq!(secondary_probes, 1, "{by:?}");
}

#[tokio::test]
async fn breaker_state_survives_a_policy_reload() {
    let t = two(&["--faults", "status=500"], &[]);
    let proxy = start(&t, FALLBACK);
    let c = proxy.client();
    for _ in 0..3 {
        let _ = chat(&c, "https://api.mock.test/v1", "smart", false, None).await;
    }
    assert_eq!(
        proxy
            .audit_lines(1, |v| v["event"] == "circuit_opened")
            .len(),
        1
    );
    let seen = t.primary.requests(&t.pki.root_pem).len();
    // Reload an edited policy (same routes): the open circuit stays open.
    let file = proxy.policy_dir.join("00.toml");
    let text = std::fs::read_to_string(&file).expect("policy") + "\n# edited\n";
    std::fs::write(&file, text).expect("write");
    proxy.audit_lines(2, |v| v["event"] == "policy_loaded");
    let v: serde_json::Value = chat(&c, "https://api.mock.test/v1", "smart", false, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["system_fingerprint"], "secondary");
    assert_eq!(
        t.primary.requests(&t.pki.root_pem).len(),
        seen,
        "no request to the still-open circuit"
    );
    let (_, status) = proxy.admin_get("/api/status");
    assert!(status.contains("\"state\": \"open\""), "{status}");
}
