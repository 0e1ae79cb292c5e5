//! Prompt protection end to end through HTTPS_PROXY with the official SDK: the provider
//! never sees the sensitive values, the client gets them back (JSON and streaming), secrets
//! are redacted outright, and a rotated key still restores tokens made under the old one.

use std::process::Command;

use crate::common::*;

fn sdk(proxy: &Proxy, prompt: &str) -> serde_json::Value {
    run_sdk(proxy, "protect_sdk.py", &[("PROMPT", prompt)])
}

fn keygen(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    let out = Command::new(bin())
        .args(["protect", "keygen", "--out", p.to_str().expect("utf8")])
        .output()
        .expect("keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&p).expect("key").permissions().mode() & 0o777,
        0o600
    );
    let again = Command::new(bin())
        .args(["protect", "keygen", "--out", p.to_str().expect("utf8")])
        .output()
        .expect("keygen");
    assert!(!again.status.success(), "keygen refuses to overwrite");
    p
}

fn protect_policy(
    pki: &Pki,
    mock: std::net::SocketAddr,
    keys: &[(&str, &std::path::Path)],
) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|(id, f)| format!("{{ id = \"{id}\", file = \"{}\" }}", f.display()))
        .collect();
    mock_policy(pki, mock, "")
        + &format!(
            "\n[protect]\nmode = \"tokenize\"\nkeys = [{}]\ndetectors = [\"email\", \"phone\", \"credit_card\", \"iban\", \"secret\"]\npatterns = [{{ name = \"customer_id\", regex = \"CUST-[0-9]{{8}}\" }}]\n",
            keys.join(", ")
        )
}

const EMAIL: &str = "jane.doe@example.com";
const CARD: &str = "4111 1111 1111 1111";
const IBAN: &str = "DE89 3704 0044 0532 0130 00";
const CUST: &str = "CUST-12345678";
const SECRET: &str = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD";

#[test]
fn sensitive_values_never_reach_the_provider_and_come_back_restored() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let keys = tempfile::tempdir().expect("tempdir");
    let k1 = keygen(keys.path(), "k1.key");
    let k2 = keygen(keys.path(), "k2.key");
    let proxy = Proxy::start(&protect_policy(&pki, mock.addr, &[("k1", &k1)]));
    let prompt = format!(
        "Mail {EMAIL}, card {CARD}, IBAN {IBAN}, customer {CUST}, \"quoted\" and key {SECRET}."
    );
    let v = sdk(&proxy, &prompt);
    for answer in [&v["json"], &v["stream"]] {
        let a = answer.as_str().expect("text");
        for value in [EMAIL, CARD, IBAN, CUST] {
            assert!(a.contains(value), "{value} restored in {a}");
        }
        assert!(
            !a.contains(SECRET) && a.contains("[redacted:secret]"),
            "{a}"
        );
        assert!(!a.contains("PII."), "no token left in the answer: {a}");
    }
    let seen = mock.requests(&pki.root_pem);
    assert_eq!(seen.len(), 2);
    let bodies: String = seen.iter().filter_map(|r| r["body"].as_str()).collect();
    for value in [EMAIL, CARD, IBAN, CUST, SECRET, "4111"] {
        assert!(
            !bodies.contains(value),
            "{value} reached the provider: {bodies}"
        );
    }
    assert!(
        bodies.contains("PII.k1.email.") && bodies.contains("[redacted:secret]"),
        "{bodies}"
    );
    let (_, m) = proxy.admin_get("/metrics");
    assert!(
        m.contains("llm_egress_protected_spans_total{detector=\"email\"} 2"),
        "{m}"
    );
    // Neither plaintext nor keys in logs or audit lines.
    let logs = proxy.proc.output();
    let audit = std::fs::read_to_string(&proxy.audit).unwrap_or_default();
    for value in [
        EMAIL,
        SECRET,
        std::fs::read_to_string(&k1).expect("key").trim(),
    ] {
        assert!(!logs.contains(value) && !audit.contains(value));
    }
    // Rotation: k2 now encrypts, k1 still decrypts a token made under it.
    let token = bodies
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'))
        .find(|w| w.starts_with("PII.k1.email."))
        .expect("a k1 email token")
        .trim_end_matches('.')
        .to_owned();
    drop(proxy);
    let proxy = Proxy::start(&protect_policy(
        &pki,
        mock.addr,
        &[("k2", &k2), ("k1", &k1)],
    ));
    let v = sdk(&proxy, &format!("old token {token} and new mail {EMAIL}"));
    for answer in [&v["json"], &v["stream"]] {
        let a = answer.as_str().expect("text");
        assert_eq!(
            a.matches(EMAIL).count(),
            2,
            "both the old token and the new one restore: {a}"
        );
    }
    let seen = mock.requests(&pki.root_pem);
    let last: String = seen
        .iter()
        .rev()
        .take(2)
        .filter_map(|r| r["body"].as_str())
        .collect();
    assert!(
        last.contains("PII.k2.email.") && !last.contains(EMAIL),
        "{last}"
    );
}

#[test]
fn a_group_readable_key_file_is_refused() {
    let pki = Pki::new(&["api.mock.test"]);
    let keys = tempfile::tempdir().expect("tempdir");
    let k1 = keygen(keys.path(), "k1.key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&k1, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("00.toml"),
        protect_policy(&pki, "127.0.0.1:9".parse().expect("addr"), &[("k1", &k1)]),
    )
    .expect("write");
    let out = Command::new(bin())
        .args(["check", "--policy", dir.path().to_str().expect("utf8")])
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
}

/// The proxy rewrites only the protected strings: the rest of the body reaches the
/// provider as the client wrote it. A body that repeats a key protection reads (which a
/// splice could not settle) is protected through a parsed tree instead, where the last
/// value counts, and nothing sensitive leaves either way.
#[tokio::test(flavor = "multi_thread")]
async fn only_protected_strings_change_and_a_repeated_key_is_still_protected() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let keys = tempfile::tempdir().expect("tempdir");
    let k1 = keygen(keys.path(), "k1.key");
    let proxy = Proxy::start(&protect_policy(&pki, mock.addr, &[("k1", &k1)]));
    let c = proxy.client();
    let post = |body: String| {
        c.post("https://api.mock.test/v1/chat/completions")
            .bearer_auth("sk-test-abc")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let spelled = format!(
        "{{ \"model\" : \"gpt-4o-mini\", \"temperature\": 1.50e0,\n  \"messages\": [{{\"role\":\"user\", \"content\" : \"mail {EMAIL} now\"}}] }}"
    );
    let r = post(spelled.clone()).await.expect("send");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    assert_eq!(content, format!("echo: mail {EMAIL} now"));
    let twice = format!(
        "{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"first {CUST}\",\"content\":\"second {EMAIL}\"}}]}}"
    );
    let r = post(twice).await.expect("send");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    assert_eq!(content, format!("echo: second {EMAIL}"));

    let seen = mock.requests(&pki.root_pem);
    assert_eq!(seen.len(), 2);
    let first = seen[0]["body"].as_str().expect("body");
    let (head, tail) = spelled
        .split_once(&format!("mail {EMAIL} now"))
        .expect("split");
    assert!(
        first.starts_with(head) && first.ends_with(tail) && !first.contains(EMAIL),
        "only the content string differs from what the client sent: {first}"
    );
    let second = seen[1]["body"].as_str().expect("body");
    assert!(
        !second.contains(EMAIL) && !second.contains(CUST) && second.contains("PII.k1.email."),
        "{second}"
    );
}
