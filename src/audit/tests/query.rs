//! The `audit` command: listing, filters, summary, verify and errors.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::audit::event::format_ts;
use crate::audit::{run_query, QueryOptions, HEAD_STATE_FILE};

/// Runs the command; returns (exit code, stdout, stderr).
fn run(opts: &QueryOptions) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_query(opts, &mut out, &mut err);
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf8");
    (code, text(out), text(err))
}

/// A hand-written log (hashes are not checked by listing) in `dir`.
fn sample(dir: &Path) -> PathBuf {
    let now = format_ts(OffsetDateTime::now_utc());
    let lines = [
        r#"{"ts":"2020-01-01T00:00:00.000Z","seq":1,"event":"blocked","reason":"endpoint_not_allowed","host":"old.example","port":443,"prev":"0","hash":"1"}"#.to_string(),
        format!(
            r#"{{"ts":"{now}","seq":2,"event":"blocked","reason":"endpoint_not_allowed","method":"POST","url":"https://evil.example/v1/chat","host":"Evil.Example","port":443,"request_id":"r-1","prev":"1","hash":"2"}}"#
        ),
        format!(
            r#"{{"ts":"{now}","seq":3,"event":"blocked","reason":"certificate_pin_mismatch","host":"api.openai.com","port":443,"rule":"openai","prev":"2","hash":"3"}}"#
        ),
        "not json".to_string(),
        format!(
            r#"{{"ts":"{now}","seq":4,"event":"blocked","reason":"endpoint_not_allowed","host":"evil.example","port":443,"prev":"3","hash":"4"}}"#
        ),
        format!(
            r#"{{"ts":"{now}","seq":5,"event":"policy_loaded","policy":"p","prev":"4","hash":"5"}}"#
        ),
    ];
    let path = dir.join("audit.jsonl");
    std::fs::write(&path, join(&lines)).expect("write");
    path
}

fn opts(file: PathBuf) -> QueryOptions {
    QueryOptions {
        file,
        ..QueryOptions::default()
    }
}

#[test]
fn lists_every_line_as_a_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = run(&opts(sample(dir.path())));
    assert_eq!(code, 0);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 6, "{out}");
    assert!(rows[0].starts_with("TS "));
    assert!(rows[2].contains("Evil.Example:443"));
    assert!(rows[2].contains("https://evil.example/v1/chat"));
    assert!(rows[2].contains("r-1"));
    assert!(rows[3].contains("openai"));
    assert!(err.contains("1 line(s)"), "{err}");
}

#[test]
fn filters_by_reason_host_and_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = sample(dir.path());
    let mut o = opts(path);
    o.json = true;
    o.reason = Some("endpoint_not_allowed".into());
    let (_, out, _) = run(&o);
    assert_eq!(out.lines().count(), 3);

    o.host = Some("EVIL.example".into());
    let (_, out, _) = run(&o);
    let seqs: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["seq"]
                .as_u64()
                .expect("seq")
        })
        .collect();
    assert_eq!(seqs, [2, 4]);

    let mut o = opts(o.file.clone());
    o.json = true;
    o.since = Some(Duration::from_secs(3600));
    let (_, out, _) = run(&o);
    assert_eq!(out.lines().count(), 4);
    assert!(!out.contains("old.example"));

    o.reason = Some("no_such_reason".into());
    o.json = false;
    let (code, out, _) = run(&o);
    assert_eq!((code, out.trim()), (0, "no matching events"));
}

#[test]
fn json_output_is_the_raw_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = sample(dir.path());
    let mut o = opts(path.clone());
    o.json = true;
    o.host = Some("api.openai.com".into());
    let (_, out, _) = run(&o);
    let raw = lines_of(&path);
    assert_eq!(out, format!("{}\n", raw[2]));
}

#[test]
fn summary_groups_blocked_by_host_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = opts(sample(dir.path()));
    o.summary = true;
    let (code, out, _) = run(&o);
    assert_eq!(code, 0);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert!(rows[1].contains("evil.example") && rows[1].trim_start().starts_with('2'));
    o.json = true;
    o.since = Some(Duration::from_secs(60));
    let (_, out, _) = run(&o);
    assert_eq!(out.lines().count(), 2);
}

/// A verified log and its key file in `dir`.
fn signed(dir: &Path) -> (PathBuf, PathBuf, Vec<String>) {
    let key_file = dir.join("audit.key");
    std::fs::write(&key_file, hex::encode([9u8; 32])).expect("key");
    let lines = build_log(&key(), 3);
    let path = dir.join("audit.jsonl");
    std::fs::write(&path, join(&lines)).expect("log");
    (path, key_file, lines)
}

#[test]
fn verify_reports_ok_and_the_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, key_file, lines) = signed(dir.path());
    let head: serde_json::Value = serde_json::from_str(&lines[2]).expect("json");
    let hash = head["hash"].as_str().expect("hash");
    let mut o = opts(path);
    o.verify = true;
    o.key_file = Some(key_file);
    let (code, out, _) = run(&o);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().next(),
        Some(format!("OK: 3 lines, seq 1..3, head {hash}").as_str())
    );

    let saved = Head {
        seq: 3,
        hash: hash.to_string(),
    };
    saved
        .save(&dir.path().join(HEAD_STATE_FILE))
        .expect("save head");
    let (_, out, _) = run(&o);
    assert!(out.contains("head matches"), "{out}");

    o.json = true;
    let (code, out, _) = run(&o);
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(
        (code, &report["ok"], &report["lines"]),
        (0, &serde_json::json!(true), &serde_json::json!(3))
    );
}

#[test]
fn verify_fails_with_line_and_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, key_file, mut lines) = signed(dir.path());
    lines[1] = lines[1].replace("POST", "GET");
    std::fs::write(&path, join(&lines)).expect("log");
    let mut o = opts(path);
    o.verify = true;
    o.key_file = Some(key_file);
    let (code, out, _) = run(&o);
    assert_eq!(code, 1);
    assert!(out.starts_with("FAILED at line 2: edited: "), "{out}");
}

#[test]
fn errors_exit_2_with_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.jsonl");
    let (code, out, err) = run(&opts(missing.clone()));
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(
        err.contains("does not exist") && err.contains("nope.jsonl"),
        "{err}"
    );

    let (path, _, _) = signed(dir.path());
    let mut o = opts(path);
    o.verify = true;
    let (code, _, err) = run(&o);
    assert_eq!(code, 2);
    assert!(err.contains("chain key"), "{err}");

    o.key_file = Some(dir.path().join("missing.key"));
    let (code, _, err) = run(&o);
    assert_eq!(code, 2);
    assert!(err.contains("missing.key"), "{err}");

    let mut o = opts(missing);
    o.verify = true;
    o.key_file = Some(dir.path().join("audit.key"));
    let (code, _, err) = run(&o);
    assert_eq!(code, 2);
    assert!(err.contains("does not exist"), "{err}");
}
