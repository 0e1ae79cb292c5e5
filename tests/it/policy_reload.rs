//! Hot reload end to end: edits take effect on the next request (also on connections
//! opened before), bad edits keep the last good policy and are audited, the Kubernetes
//! ConfigMap symlink swap reloads, SIGHUP reloads, and a storm of edits fails no request.

use std::time::{Duration, Instant};

use crate::common::*;

/// Polls until `f` holds or 10 s pass.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Waits until `GET /v1/models` through the proxy answers `status`.
async fn models_status_becomes(c: &reqwest::Client, status: u16) {
    eventually(&format!("models endpoint answering {status}"), async || {
        c.get("https://api.mock.test/v1/models")
            .send()
            .await
            .map(|r| r.status() == status)
            .unwrap_or(false)
    })
    .await;
}

fn two_entry_policy(pki: &Pki, mock: std::net::SocketAddr, with_models: bool) -> String {
    let mut p = format!(
        "[upstream]\nextra_roots = [\"{}\"]\nresolve = {{ \"api.mock.test:443\" = \"{mock}\" }}\n\n[[allow]]\nname = \"chat\"\nbase_url = \"https://api.mock.test/v1/chat\"\n",
        pki.root_pem.display()
    );
    if with_models {
        p.push_str(
            "\n[[allow]]\nname = \"models\"\nbase_url = \"https://api.mock.test/v1/models\"\n",
        );
    }
    p
}

#[tokio::test]
async fn removing_and_adding_an_endpoint_applies_to_existing_connections() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let proxy = Proxy::start(&two_entry_policy(&pki, mock.addr, true));
    let c = proxy.client(); // one client: its keep-alive tunnel outlives the edit
    assert_eq!(
        c.get("https://api.mock.test/v1/models")
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    let file = proxy.policy_dir.join("00.toml");
    std::fs::write(&file, two_entry_policy(&pki, mock.addr, false)).expect("write");
    models_status_becomes(&c, 403).await;
    // Chat still flows on the same connection.
    let r = c
        .post("https://api.mock.test/v1/chat/completions")
        .json(&chat_body("still here", false))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    std::fs::write(&file, two_entry_policy(&pki, mock.addr, true)).expect("write");
    models_status_becomes(&c, 200).await;
    let loaded = proxy.audit_lines(3, |v| v["event"] == "policy_loaded");
    assert!(loaded.len() >= 3, "startup + two reloads: {loaded:?}");
    let (_, ready) = proxy.admin_get("/readyz");
    let v: serde_json::Value = serde_json::from_str(&ready).expect("json");
    assert_eq!(v["policy"]["hash"], loaded.last().expect("line")["policy"]);
}

#[tokio::test]
async fn an_invalid_edit_keeps_the_last_good_policy_and_is_audited() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let proxy = Proxy::start(&two_entry_policy(&pki, mock.addr, true));
    let c = proxy.client();
    let (_, before) = proxy.admin_get("/readyz");
    std::fs::write(
        proxy.policy_dir.join("00.toml"),
        "[[allow]]\nname = \"x\"\nbase_url = \"https://api.mock.test/v1\"\nmethodz = [\"GET\"]\n",
    )
    .expect("write");
    let rejected = proxy.audit_lines(1, |v| v["event"] == "policy_rejected");
    assert_eq!(rejected.len(), 1);
    let err = rejected[0]["detail"]["error"].as_str().expect("error text");
    assert!(err.contains("00.toml:4:1"), "{err}");
    assert!(err.contains("methodz"), "{err}");
    // Still the old policy.
    assert_eq!(
        c.get("https://api.mock.test/v1/models")
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    let (_, after) = proxy.admin_get("/readyz");
    let h = |s: &str| {
        serde_json::from_str::<serde_json::Value>(s).expect("json")["policy"]["hash"].clone()
    };
    assert_eq!(h(&before), h(&after));
    assert!(proxy.proc.output().contains("policy rejected"));
}

#[tokio::test]
async fn configmap_symlink_swap_reloads() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pd = dir.path().join("policies");
    std::fs::create_dir_all(pd.join("..2026_11_24_a")).expect("mkdir");
    std::fs::write(
        pd.join("..2026_11_24_a/00.toml"),
        two_entry_policy(&pki, mock.addr, false),
    )
    .expect("write");
    std::os::unix::fs::symlink("..2026_11_24_a", pd.join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/00.toml", pd.join("00.toml")).expect("symlink");
    let proxy = Proxy::start_in(dir, pd.clone());
    let c = proxy.client();
    assert_eq!(
        c.get("https://api.mock.test/v1/models")
            .send()
            .await
            .expect("send")
            .status(),
        403
    );
    // Kubernetes' atomic update: new timestamped dir, new ..data_tmp link, renamed over ..data.
    std::fs::create_dir_all(pd.join("..2026_11_24_b")).expect("mkdir");
    std::fs::write(
        pd.join("..2026_11_24_b/00.toml"),
        two_entry_policy(&pki, mock.addr, true),
    )
    .expect("write");
    std::os::unix::fs::symlink("..2026_11_24_b", pd.join("..data_tmp")).expect("symlink");
    std::fs::rename(pd.join("..data_tmp"), pd.join("..data")).expect("rename");
    std::fs::remove_dir_all(pd.join("..2026_11_24_a")).expect("rm old");
    eventually("allowed after the ConfigMap swap", async || {
        c.get("https://api.mock.test/v1/models")
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
}

#[tokio::test]
async fn sighup_reloads() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let proxy = Proxy::start(&two_entry_policy(&pki, mock.addr, true));
    proxy.proc.signal(libc::SIGHUP);
    proxy.proc.clone_wait_for_line("SIGHUP: reloading policy");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, m) = proxy.admin_get("/metrics");
        if m.lines()
            .any(|l| l.starts_with("llm_egress_policy_reloads_total{result=\"unchanged\"}"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reload counted after SIGHUP:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_removed_tunnel_host_closes_open_tunnels() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let tunnel = format!("[upstream]\nresolve = {{ \"api.mock.test:443\" = \"{}\" }}\n\n[[allow]]\nname = \"t\"\nbase_url = \"https://api.mock.test\"\nmode = \"tunnel\"\n", mock.addr);
    let proxy = Proxy::start(&tunnel);
    install_provider();
    let root =
        reqwest::Certificate::from_pem(&std::fs::read(&pki.root_pem).expect("root")).expect("pem");
    let c = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).expect("proxy"))
        .tls_certs_only([root])
        .build()
        .expect("client");
    assert_eq!(
        c.get("https://api.mock.test/v1/models")
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    std::fs::write(
        proxy.policy_dir.join("00.toml"),
        "[[allow]]\nname = \"other\"\nbase_url = \"https://api.other.test/v1\"\n",
    )
    .expect("write");
    proxy.audit_lines(2, |v| v["event"] == "policy_loaded");
    // The pooled tunnel was closed by the proxy, so the next request must open a new one: refused.
    eventually("tunnel closed and host refused", async || {
        c.get("https://api.mock.test/v1/models")
            .send()
            .await
            .is_err()
    })
    .await;
    assert!(c
        .get("https://api.mock.test/v1/models")
        .send()
        .await
        .is_err());
    assert!(!proxy
        .audit_lines(1, |v| v["event"] == "blocked"
            && v["host"] == "api.mock.test")
        .is_empty());
}

#[tokio::test]
async fn a_storm_of_100_edits_fails_no_request() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let proxy = Proxy::start(&two_entry_policy(&pki, mock.addr, true));
    let file = proxy.policy_dir.join("00.toml");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let c = proxy.client();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let (mut ok, mut bad) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c
                    .post("https://api.mock.test/v1/chat/completions")
                    .json(&chat_body("storm", false))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => bad.push(r.status().to_string()),
                    Err(e) => bad.push(e.to_string()),
                }
            }
            (ok, bad)
        }));
    }
    for i in 0..100 {
        // Alternate between two valid policies that both allow chat.
        let p = two_entry_policy(&pki, mock.addr, i % 2 == 0) + &format!("# edit {i}\n");
        let tmp = proxy.policy_dir.join(format!(".00.toml.{i}"));
        std::fs::write(&tmp, p).expect("write");
        std::fs::rename(&tmp, &file).expect("rename");
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for t in clients {
        let (ok, bad) = t.await.expect("join");
        assert!(bad.is_empty(), "failed requests during the storm: {bad:?}");
        total += ok;
    }
    assert!(total > 50, "requests kept flowing: {total}");
    assert!(proxy
        .audit_lines(0, |v| v["event"] == "policy_rejected")
        .is_empty());
}

#[test]
fn check_reports_file_line_column_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("00.toml"), "[[allow]]\nname = \"a\"\nbase_url = \"https://api.openai.com/v1\"\npins = [\"sha256//nope\"]\n").expect("write");
    std::fs::write(
        dir.path().join("10.toml"),
        "[[allow]]\nname = \"b\"\nbase_url = \"ftp://x\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(bin())
        .args(["check", "--policy", dir.path().to_str().expect("utf8")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("00.toml:4:"), "{err}");
    assert!(
        err.contains("10.toml:2:") || err.contains("10.toml:3:"),
        "{err}"
    );
    assert!(err.contains("NOT valid"));
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let out = std::process::Command::new(bin())
        .args(["check", "--policy", shipped])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("api.openai.com") && text.contains("everything else is denied"));
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_policy_it_started_with() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &["--chunk-delay-ms", "100"]);
    let proxy = Proxy::start(&two_entry_policy(&pki, mock.addr, true));
    let c = proxy.client();
    let resp = c
        .post("https://api.mock.test/v1/chat/completions")
        .json(&chat_body("a b c d e f g h", true))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    // Remove the chat endpoint while the stream is open.
    std::fs::write(
        proxy.policy_dir.join("00.toml"),
        "[[allow]]\nname = \"other\"\nbase_url = \"https://api.other.test/v1\"\n",
    )
    .expect("write");
    proxy.audit_lines(2, |v| v["event"] == "policy_loaded");
    let text = resp.text().await.expect("the open stream completes");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // The next request is judged by the new policy.
    let r = c
        .post("https://api.mock.test/v1/chat/completions")
        .json(&chat_body("x", false))
        .send()
        .await;
    assert!(r.map(|r| r.status() == 403).unwrap_or(true));
}
