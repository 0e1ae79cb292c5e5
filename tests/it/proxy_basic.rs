//! End-to-end: real clients through the real binary to the mock provider over real TLS.

use crate::common::*;
use std::process::Command;

fn setup(allow_extra: &str) -> (Pki, Mock, Proxy) {
    let pki = Pki::new(&["api.mock.test", "127.0.0.1"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let proxy = Proxy::start(&mock_policy(&pki, mock.addr, allow_extra));
    (pki, mock, proxy)
}

#[tokio::test]
async fn reqwest_json_and_stream_through_https_proxy() {
    let (_pki, _mock, proxy) = setup("");
    let c = proxy.client();
    let r = c
        .post("https://api.mock.test/v1/chat/completions")
        .bearer_auth("sk-test-abc")
        .json(&chat_body("hello there", false))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .contains("hello there"));

    let r = c
        .post("https://api.mock.test/v1/chat/completions")
        .json(&chat_body("one two three four", true))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/event-stream"));
    let text = r.text().await.expect("body");
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| e.starts_with("data: "))
        .collect();
    assert!(events.len() >= 4, "several events: {text}");
    assert_eq!(events.last().copied(), Some("data: [DONE]"));
    let content: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e[6..]).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(content.contains("one two three four"), "{content}");
}

#[tokio::test]
async fn http2_to_the_proxy_works() {
    let (_pki, _mock, proxy) = setup("");
    install_provider();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(proxy.ca()).expect("ca")).expect("pem");
    let c = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).expect("proxy"))
        .tls_certs_only([ca])
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let r = c
        .get("https://api.mock.test/v1/models")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
}

/// curl (with `flags`) POSTs `body` to the mock's chat completions through `proxy`,
/// trusting the proxy's CA.
fn curl_chat(proxy: &Proxy, flags: &str, body: &serde_json::Value) -> std::process::Output {
    Command::new("curl")
        .args([
            flags,
            "--fail-with-body",
            "-x",
            &proxy.url(),
            "--cacert",
            proxy.ca().to_str().expect("utf8"),
            "-H",
            "content-type: application/json",
            "-d",
            &body.to_string(),
            "https://api.mock.test/v1/chat/completions",
        ])
        .output()
        .expect("curl")
}

#[test]
fn curl_json_and_stream() {
    let (_pki, _mock, proxy) = setup("");
    let out = curl_chat(&proxy, "-sS", &chat_body("curl says hi", false));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .contains("curl says hi"));

    let out = curl_chat(&proxy, "-sSN", &chat_body("streamed by curl", true));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[tokio::test]
async fn unlisted_host_is_refused_at_connect_and_audited_once() {
    let (pki, mock, proxy) = setup("");
    let c = proxy.client();
    let err = c.get("https://evil.example.com/v1/models").send().await;
    assert!(
        err.is_err(),
        "a refused tunnel is a connection error to the client"
    );
    let lines = proxy.audit_lines(1, |v| v["event"] == "blocked");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["reason"], "endpoint_not_allowed");
    assert_eq!(lines[0]["host"], "evil.example.com");
    assert_eq!(lines[0]["port"], 443);
    assert!(
        mock.requests(&pki.root_pem).is_empty(),
        "nothing reached the provider"
    );

    // The raw CONNECT answer is an OpenAI-shaped 403.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-p",
            "-x",
            &proxy.url(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_connect}",
            "https://evil.example.com/",
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
}

/// The status of `GET https://api.mock.test{path}` through the proxy, the path sent as it
/// is written (curl `--path-as-is`: clients normally resolve dot segments themselves).
fn curl_raw_path(proxy: &Proxy, path: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--path-as-is",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            &proxy.url(),
            "--cacert",
            proxy.ca().to_str().expect("utf8"),
            &format!("https://api.mock.test{path}"),
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn allowlist_is_judged_on_the_normalized_url() {
    let (pki, mock, proxy) = setup("");
    let c = proxy.client();
    let cases = [
        (
            "GET",
            "https://api.mock.test/admin",
            403,
            "endpoint_not_allowed",
        ),
        (
            "GET",
            "https://api.mock.test/v1x/models",
            403,
            "endpoint_not_allowed",
        ),
        (
            "DELETE",
            "https://api.mock.test/v1/models",
            403,
            "method_not_allowed",
        ),
        (
            "GET",
            "https://api.mock.test/v1%2fmodels",
            400,
            "invalid_url",
        ),
    ];
    for (m, url, status, code) in cases {
        let r = c
            .request(m.parse().expect("method"), url)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), status, "{m} {url}");
        assert_eq!(r.headers()["x-llm-egress-reason"], code);
        assert_eq!(r.headers()["x-should-retry"], "false");
        let v: serde_json::Value = r.json().await.expect("json");
        assert_eq!(v["error"]["code"], code);
        assert_eq!(v["error"]["type"], "llm_egress_error");
    }
    // Dot segments sent raw.
    for (path, status) in [
        ("/v1/%2e%2e/admin", "400"),
        ("/v1/.%2E/admin", "400"),
        ("/v1/../admin", "403"),
    ] {
        assert_eq!(curl_raw_path(&proxy, path), status, "{path}");
    }
    // Dot segments that stay inside the prefix are normalized and forwarded normalized.
    let r = c
        .get("https://api.mock.test/v1/chat/../models")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let seen = mock.requests(&pki.root_pem);
    assert_eq!(
        seen.len(),
        1,
        "only the allowed request reached the provider: {seen:?}"
    );
    assert_eq!(seen[0]["path"], "/v1/models");
    // Sent raw: a path the proxy rewrites keeps its query; a normal one goes out as sent.
    for (path, upstream) in [
        (
            "/v1/chat/../models?limit=2&a=%41",
            "/v1/models?limit=2&a=%41",
        ),
        ("/v1/%6dodels?x=1", "/v1/models?x=1"),
        ("/v1/models?after=m-1&b=%7E", "/v1/models?after=m-1&b=%7E"),
        ("/v1/models", "/v1/models"),
    ] {
        assert_eq!(curl_raw_path(&proxy, path), "200", "{path}");
        let seen = mock.requests(&pki.root_pem);
        assert_eq!(seen.last().expect("recorded")["path"], upstream, "{path}");
        let last = seen.last().expect("recorded");
        assert_eq!(
            last["authority"],
            serde_json::Value::Null,
            "origin-form upstream: {path}"
        );
        let hosts: Vec<_> = last["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .filter(|h| {
                h[0].as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("host"))
            })
            .collect();
        assert_eq!(hosts.len(), 1, "one Host header: {last}");
        assert_eq!(hosts[0][1], "api.mock.test", "{path}");
    }
    let blocked = proxy.audit_lines(7, |v| v["event"] == "blocked");
    assert_eq!(blocked.len(), 7);
    assert!(blocked.iter().all(|b| b["request_id"].is_string()));
    // Each line names the normalized URL without its query (none when the path could not
    // be normalized); the raw `/v1/../admin` is judged, and named, as `/admin`.
    let urls: Vec<_> = blocked.iter().map(|b| b["url"].as_str()).collect();
    assert_eq!(
        urls,
        [
            Some("https://api.mock.test/admin"),
            Some("https://api.mock.test/v1x/models"),
            Some("https://api.mock.test/v1/models"),
            None,
            None,
            None,
            Some("https://api.mock.test/admin"),
        ],
        "{blocked:?}"
    );
}

#[tokio::test]
async fn hop_by_hop_and_control_headers_never_reach_upstream_and_keys_never_logged() {
    let (pki, mock, proxy) = setup("");
    let c = proxy.client();
    let secret = "sk-live-SECRET-4242424242";
    let r = c
        .post("https://api.mock.test/v1/chat/completions")
        .header("authorization", format!("Bearer {secret}"))
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-llm-egress-route", "anything")
        .header("x-request-id", "req-client-123")
        .json(&chat_body("hi", false))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "req-client-123");
    let seen = mock.requests(&pki.root_pem);
    assert_eq!(seen.len(), 1);
    let names: Vec<String> = seen[0]["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter_map(|h| h[0].as_str().map(str::to_ascii_lowercase))
        .collect();
    for banned in [
        "x-drop-me",
        "keep-alive",
        "proxy-authorization",
        "x-llm-egress-route",
        "connection",
    ] {
        assert!(
            !names.contains(&banned.to_owned()),
            "{banned} reached upstream: {names:?}"
        );
    }
    assert!(
        names.contains(&"authorization".to_owned()),
        "the client's own key passes to the host it addressed"
    );
    // A blocked request with the same key, then check no log or audit line has it.
    let _ = c
        .get("https://api.mock.test/nope")
        .header("authorization", format!("Bearer {secret}"))
        .send()
        .await;
    proxy.audit_lines(1, |v| v["event"] == "blocked");
    let audit = std::fs::read_to_string(&proxy.audit).expect("audit");
    assert!(!audit.contains(secret) && !audit.contains("SECRET"));
    assert!(!proxy.proc.output().contains("SECRET"));
}

#[tokio::test]
async fn tunnel_mode_splices_tls_end_to_end() {
    let pki = Pki::new(&["api.mock.test", "127.0.0.1"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let policy = format!(
        "[upstream]\nresolve = {{ \"api.mock.test:443\" = \"{}\" }}\n\n[[allow]]\nname = \"mock-tunnel\"\nbase_url = \"https://api.mock.test\"\nmode = \"tunnel\"\n",
        mock.addr
    );
    let proxy = Proxy::start(&policy);
    // The client trusts only the test root: a minted leaf would fail, the upstream's passes.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail-with-body",
            "-x",
            &proxy.url(),
            "--cacert",
            pki.root_pem.to_str().expect("utf8"),
            "https://api.mock.test/v1/models",
        ])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"object\""));
    // And the proxy CA does not work for a tunnel: nothing was minted.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-x",
            &proxy.url(),
            "--cacert",
            proxy.ca().to_str().expect("utf8"),
            "https://api.mock.test/v1/models",
        ])
        .output()
        .expect("curl");
    assert!(!out.status.success());
}

#[test]
fn absolute_form_http_requests_are_proxied_and_judged() {
    let mock = {
        let mut proc = Proc::spawn(
            &[
                "mock-provider",
                "--listen",
                "127.0.0.1:0",
                "--name",
                "plain",
            ],
            None,
        );
        let addr: std::net::SocketAddr = proc.wait_for("mock listening", |l| {
            l.split("listening on http://")
                .nth(1)
                .and_then(|a| a.trim().parse().ok())
        });
        (proc, addr)
    };
    let policy = format!(
        "[[allow]]\nname = \"local\"\nbase_url = \"http://127.0.0.1:{}/v1\"\nmethods = [\"GET\"]\n",
        mock.1.port()
    );
    let proxy = Proxy::start(&policy);
    let get = |url: &str| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-x",
                &proxy.url(),
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                url,
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let ok = get(&format!("http://127.0.0.1:{}/v1/models", mock.1.port()));
    assert!(ok.ends_with("\n200") && ok.contains("\"object\""), "{ok}");
    let denied = get(&format!("http://127.0.0.1:{}/admin", mock.1.port()));
    assert!(
        denied.ends_with("\n403") && denied.contains("endpoint_not_allowed"),
        "{denied}"
    );
    let other = get("http://example.invalid/v1/models");
    assert!(other.ends_with("\n403"), "{other}");
    assert_eq!(proxy.audit_lines(2, |v| v["event"] == "blocked").len(), 2);
}

#[test]
fn policy_schema_is_a_json_schema_of_the_policy() {
    let out = Command::new(bin())
        .args(["policy", "schema"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        v["$schema"]
            .as_str()
            .is_some_and(|s| s.contains("json-schema")),
        "{v}"
    );
    for key in [
        "allow",
        "upstream",
        "provider",
        "route",
        "protect",
        "tool_calls",
        "audit",
    ] {
        assert!(v["properties"].get(key).is_some(), "{key} missing");
    }
}

/// Upstream connections speak HTTP/1.1 unless `[upstream] http2 = true`; with it, the
/// proxy offers h2 and the mock (which accepts it) sees HTTP/2 requests. Either way the
/// client's own protocol is independent of the upstream's.
#[tokio::test]
async fn upstream_protocol_follows_the_http2_setting() {
    let pki = Pki::new(&["api.mock.test", "127.0.0.1"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    for (http2, want) in [(false, "HTTP/1.1"), (true, "HTTP/2")] {
        let policy = mock_policy(&pki, mock.addr, "")
            .replace("[upstream]\n", &format!("[upstream]\nhttp2 = {http2}\n"));
        let proxy = Proxy::start(&policy);
        let r = proxy
            .client()
            .post("https://api.mock.test/v1/chat/completions")
            .json(&chat_body(&format!("protocol check {http2}"), false))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        let records = mock.requests(&pki.root_pem);
        let rec = records
            .iter()
            .rev()
            .find(|r| {
                r["body"]
                    .as_str()
                    .is_some_and(|b| b.contains(&format!("protocol check {http2}")))
            })
            .unwrap_or_else(|| panic!("no record for http2 = {http2}: {records:?}"));
        assert_eq!(rec["version"], want, "http2 = {http2}");
    }
}

/// `llm_egress_worker_connections` by worker, from the admin `/metrics`.
fn worker_connections(proxy: &Proxy) -> Vec<u64> {
    let (code, text) = proxy.admin_get("/metrics");
    assert_eq!(code, 200, "{text}");
    text.lines()
        .filter(|l| l.starts_with("llm_egress_worker_connections{"))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .unwrap_or_default()
                .parse()
                .expect("count")
        })
        .collect()
}

#[test]
fn a_burst_of_connections_is_spread_over_the_workers_and_served() {
    let pki = Pki::new(&["api.mock.test", "127.0.0.1"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let proxy = Proxy::start_with_env(
        &mock_policy(&pki, mock.addr, ""),
        &[("LLM_EGRESS_WORKERS", "3")],
    );
    assert_eq!(worker_connections(&proxy), vec![0, 0, 0]);
    // A client opening its pool: nine connections at once, before any request.
    let conns: Vec<_> = (0..9)
        .map(|_| std::net::TcpStream::connect(proxy.addr).expect("connect"))
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let counts = loop {
        let c = worker_connections(&proxy);
        if c.iter().sum::<u64>() == 9 || std::time::Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // Whichever worker woke first accepted them; each worker serves its share.
    assert_eq!(counts.iter().sum::<u64>(), 9, "{counts:?}");
    assert!(counts.iter().all(|&n| (2..=4).contains(&n)), "{counts:?}");
    // Every one of them is served, whichever worker it was handed to.
    for mut c in conns {
        use std::io::{Read, Write};
        c.write_all(b"CONNECT api.mock.test:443 HTTP/1.1\r\nHost: api.mock.test:443\r\n\r\n")
            .expect("write");
        let mut head = [0u8; 12];
        c.read_exact(&mut head).expect("read");
        assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while worker_connections(&proxy).iter().sum::<u64>() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "connections never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The local ports of established TCP connections on this machine whose remote end is
/// `port` on 127.0.0.1 (from `/proc/net/tcp`: the proxy's side of its upstream
/// connections to the mock).
fn connections_to(port: u16) -> std::collections::BTreeSet<String> {
    let remote = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .expect("/proc/net/tcp")
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            (f.len() > 3 && f[2] == remote && f[3] == "01").then(|| f[1].to_owned())
        })
        .collect()
}

#[tokio::test]
async fn upstream_connections_are_reused_and_replaced_when_the_provider_restarts() {
    let pki = Pki::new(&["api.mock.test", "127.0.0.1"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let proxy = Proxy::start(&mock_policy(&pki, mock.addr, ""));
    let c = proxy.client();
    let chat = |text: &str| {
        c.post("https://api.mock.test/v1/chat/completions")
            .bearer_auth("sk-test")
            .json(&chat_body(text, false))
            .send()
    };
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..10 {
        let r = chat(&format!("hello {i}")).await.expect("send");
        assert_eq!(r.status(), 200);
        r.bytes().await.expect("body");
        seen.extend(connections_to(mock.addr.port()));
    }
    // Ten requests one after another: the upstream connection is reused (one, or two if
    // a request came in before the previous connection was back in the idle list).
    assert!(
        (1..=2).contains(&seen.len()),
        "upstream connections: {seen:?}"
    );
    // The provider restarts on the same address: the idle connection is dead, the next
    // request gets a new one and succeeds.
    let addr = mock.addr;
    drop(mock);
    let mock = Mock::start_tls_at(&pki.chain, &pki.key, &addr.to_string(), &[]);
    let r = chat("after the restart").await.expect("send");
    assert_eq!(r.status(), 200, "{}", proxy.proc.output());
    let v: serde_json::Value = r.json().await.expect("json");
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .contains("after the restart"));
    assert_eq!(mock.requests(&pki.root_pem).len(), 1);
}
