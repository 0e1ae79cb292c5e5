//! `llm-egress demo`: the offline tour runs, every scenario does what the policy says, the
//! audit log it leaves holds each block and verifies, and nothing secret is printed.

use std::process::Command;

use crate::common::*;

fn demo(dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(["demo", "--dir"])
        .arg(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the demo");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The table row of `scenario`, split on runs of two or more spaces.
fn row<'a>(stdout: &'a str, scenario: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.get(1) == Some(&scenario))
        .unwrap_or_else(|| panic!("no row {scenario:?} in:\n{stdout}"))
}

#[test]
fn the_demo_runs_offline_and_leaves_a_verifiable_audit_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tour");
    let (code, out, err) = demo(&dir);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let expect = [
        ("allowed", "200", "-"),
        ("streamed", "200", "-"),
        ("host not allowed", "403", "endpoint_not_allowed"),
        ("path not allowed", "403", "endpoint_not_allowed"),
        ("pin mismatch", "502", "certificate_pin_mismatch"),
        ("failover", "200", "-"),
        ("protected", "200", "-"),
        ("invalid tool call", "502", "tool_call_invalid"),
    ];
    for (scenario, status, code) in expect {
        let cells = row(&out, scenario);
        assert_eq!(cells[0], "ok", "{cells:?}");
        assert_eq!(cells[3], status, "{cells:?}");
        assert_eq!(cells[4], code, "{cells:?}");
    }
    assert!(!out.contains("FAIL"), "{out}");
    assert!(row(&out, "failover")[5].ends_with("answered by alpha"));
    assert!(row(&out, "protected")[5].contains("PII.demo.email."));
    assert!(out.contains("llm_egress_protected_spans_total{detector=\"email\"} 1"));

    // The audit log: every block, the failover, the invalid call; never the prompt's email.
    let audit_path = dir.join("audit/audit.jsonl");
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |event: &str, reason: Option<&str>| {
        lines
            .iter()
            .filter(|l| l["event"] == event && reason.is_none_or(|r| l["reason"] == r))
            .count()
    };
    assert_eq!(count("blocked", Some("endpoint_not_allowed")), 2, "{audit}");
    assert_eq!(count("blocked", Some("certificate_pin_mismatch")), 1);
    assert_eq!(count("tool_call_invalid", None), 1);
    assert_eq!(count("failover", None), 1);
    assert!(count("allowed", None) >= 4, "log_allowed is on in the demo");
    for text in [&audit, &out, &err] {
        assert!(
            !text.contains(EMAIL),
            "the protected address leaked:\n{text}"
        );
        assert!(!text.contains("sk-demo-"), "an API key leaked:\n{text}");
    }
    let verify = Command::new(bin())
        .args(["audit", "--verify", "--file"])
        .arg(&audit_path)
        .arg("--certs")
        .arg(dir.join("certs"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert!(out.contains(&format!(
        "llm-egress audit --file {}",
        std::fs::canonicalize(&audit_path).unwrap().display()
    )));

    // A second run replaces the first one's directory: a fresh log, again verified.
    let (code, out, _) = demo(&dir);
    assert_eq!(code, 0, "{out}");
    let again = std::fs::read_to_string(&audit_path).unwrap();
    assert!(again.starts_with("{\"ts\""));
    let first: serde_json::Value = serde_json::from_str(again.lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], 1);
}

/// The address the demo's protected prompt carries (kept in step with src/cli/demo).
const EMAIL: &str = llm_egress::cli::demo::EMAIL;

#[test]
fn the_demo_refuses_a_directory_it_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    let precious = tmp.path().join("notes.txt");
    std::fs::write(&precious, "keep me").unwrap();
    let (code, out, err) = demo(tmp.path());
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("was not made by `llm-egress demo`"),
        "stderr: {err}"
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
}
