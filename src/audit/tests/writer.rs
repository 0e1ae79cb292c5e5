//! The writer: line format, chain continuation, rotation, drop rules and write failures.

use std::sync::atomic::Ordering;

use super::*;
use crate::audit::verify::verify_reader;
use crate::audit::{verify, Auditor, GENESIS_HASH, HEAD_STATE_FILE};

/// A key in `dir/certs/audit.key`, so the head state lives beside it.
fn key_in(dir: &Path) -> ChainKey {
    ChainKey::load_or_create(&dir.join("certs").join("audit.key")).expect("key")
}

#[tokio::test]
async fn writes_ordered_fields_stripped_urls_and_a_valid_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_in(dir.path());
    let path = dir.path().join("audit").join("audit.jsonl");
    let (auditor, task) = Auditor::start(path.clone(), key.clone(), 16)
        .await
        .expect("start");
    auditor.record(blocked("evil.example"));
    auditor.set_policy_hash("sha256:abc");
    auditor.record(AuditEvent {
        event: EventKind::PolicyLoaded,
        detail: Some(serde_json::json!({"files": 2})),
        ..AuditEvent::default()
    });
    auditor.flush().await;
    let (seq, hash) = auditor.head();
    task.shutdown().await;

    let lines = lines_of(&path);
    assert_eq!(lines.len(), 2);
    let values = values(&lines);
    let keys: Vec<&str> = values[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["ts", "seq", "event", "reason", "method", "url", "host", "port", "prev", "hash"]
    );
    assert_eq!(values[0]["seq"], 1);
    assert_eq!(values[0]["prev"], GENESIS_HASH);
    assert_eq!(values[0]["url"], "https://evil.example/v1/chat/completions");
    assert!(!lines[0].contains("sk-secret"));
    assert!(values[0].get("policy").is_none());
    assert_eq!(values[1]["policy"], "sha256:abc");
    assert_eq!(values[1]["prev"], values[0]["hash"]);
    assert_eq!(
        (seq, hash.as_str()),
        (2, values[1]["hash"].as_str().expect("hash"))
    );
    let ts = values[0]["ts"].as_str().expect("ts");
    assert_eq!(ts.len(), "2026-11-24T13:05:01.123Z".len());
    assert!(ts.ends_with('Z'));

    let report = verify(&path, &key).expect("verify");
    assert_eq!(report.problem, None);
    assert_eq!(
        (report.lines, report.first_seq, report.last_seq),
        (2, Some(1), Some(2))
    );
    assert_eq!(report.head_hash, Some(hash));
}

#[tokio::test]
async fn a_restart_continues_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    // No head state file: the chain continues from the file's last line alone.
    for _ in 0..2 {
        let (auditor, task) = Auditor::start(path.clone(), key(), 8).await.expect("start");
        auditor.record(blocked("a.example"));
        auditor.record(blocked("b.example"));
        task.shutdown().await;
    }
    let seqs: Vec<u64> = values(&lines_of(&path))
        .iter()
        .map(|v| v["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    let report = verify(&path, &key()).expect("verify");
    assert_eq!(report.problem, None);
    assert_eq!(report.lines, 4);
}

#[tokio::test]
async fn a_rotated_file_continues_from_the_saved_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_in(dir.path());
    let path = dir.path().join("audit.jsonl");
    let old = dir.path().join("audit.jsonl.1");

    let (auditor, task) = Auditor::start(path.clone(), key.clone(), 8)
        .await
        .expect("start");
    for host in ["a", "b", "c"] {
        auditor.record(blocked(host));
    }
    task.shutdown().await;
    assert!(dir.path().join("certs").join(HEAD_STATE_FILE).exists());
    std::fs::rename(&path, &old).expect("rotate");

    let (auditor, task) = Auditor::start(path.clone(), key.clone(), 8)
        .await
        .expect("start");
    assert_eq!(auditor.head().0, 3);
    auditor.record(blocked("d"));
    auditor.record(blocked("e"));
    task.shutdown().await;

    let new = verify(&path, &key).expect("verify new");
    assert_eq!(new.problem, None);
    assert_eq!((new.first_seq, new.last_seq), (Some(4), Some(5)));
    assert_eq!(verify(&old, &key).expect("verify old").problem, None);
    // Old and new together are one unbroken chain.
    let mut both = lines_of(&old);
    both.extend(lines_of(&path));
    let joined = verify_reader(join(&both).as_bytes(), &key).expect("verify both");
    assert_eq!((joined.problem, joined.lines), (None, 5));
}

#[tokio::test]
async fn a_file_renamed_while_running_is_reopened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let (auditor, task) = Auditor::start(path.clone(), key(), 8).await.expect("start");
    auditor.record(blocked("a"));
    auditor.flush().await;
    std::fs::rename(&path, dir.path().join("old.jsonl")).expect("rotate");
    auditor.record(blocked("b"));
    task.shutdown().await;
    let report = verify(&path, &key()).expect("verify");
    assert_eq!(report.problem, None);
    assert_eq!((report.first_seq, report.lines), (Some(2), 1));
}

#[tokio::test]
async fn a_burst_on_a_full_channel_keeps_every_security_event() {
    let (sink, gate) = MemSink::gated();
    let (auditor, task) =
        Auditor::start_with(Box::new(sink.clone()), Head::genesis(), key(), 4, 1000)
            .expect("start");
    auditor.record(blocked("first"));
    gate.entered
        .recv()
        .expect("writer is inside its first write");
    // The writer is held: 4 events fill the channel, the rest overflow or drop.
    for _ in 0..4 {
        auditor.record(allowed());
    }
    for _ in 0..10 {
        auditor.record(allowed());
    }
    for i in 0..50 {
        auditor.record(blocked(&format!("burst{i}")));
    }
    assert_eq!(auditor.dropped_allowed(), 10);
    gate.release.send(()).expect("release");
    auditor.flush().await;
    task.shutdown().await;

    let lines = sink.lines();
    let values = values(&lines);
    assert_eq!(lines.len(), 1 + 4 + 50);
    let blocked_count = values.iter().filter(|v| v["event"] == "blocked").count();
    assert_eq!(blocked_count, 51);
    assert_eq!(auditor.lost_security(), 0);
    let report = verify_reader(join(&lines).as_bytes(), &key()).expect("verify");
    assert_eq!((report.problem, report.lines), (None, 55));
}

#[tokio::test]
async fn overflow_beyond_its_bound_is_counted_and_reported_by_a_gap_line() {
    let (sink, gate) = MemSink::gated();
    let (auditor, task) =
        Auditor::start_with(Box::new(sink.clone()), Head::genesis(), key(), 1, 2).expect("start");
    auditor.record(blocked("a"));
    gate.entered
        .recv()
        .expect("writer is inside its first write");
    auditor.record(blocked("b")); // the channel's one slot
    auditor.record(blocked("c")); // overflow
    auditor.record(blocked("d")); // overflow
    for host in ["e", "f", "g"] {
        auditor.record(blocked(host)); // lost
    }
    auditor.record(allowed()); // dropped
    assert_eq!((auditor.lost_security(), auditor.dropped_allowed()), (3, 1));
    gate.release.send(()).expect("release");
    auditor.flush().await;
    task.shutdown().await;

    let values = values(&sink.lines());
    let events: Vec<&str> = values
        .iter()
        .map(|v| v["event"].as_str().expect("event"))
        .collect();
    assert_eq!(
        events,
        ["blocked", "audit_gap", "blocked", "blocked", "blocked"]
    );
    assert_eq!(
        values[1]["detail"],
        serde_json::json!({"lost": 3, "dropped_allowed": 1})
    );
    let hosts: Vec<&str> = values.iter().filter_map(|v| v["host"].as_str()).collect();
    assert_eq!(hosts, ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn a_failed_write_is_counted_and_the_next_write_starts_with_a_gap_line() {
    let sink = MemSink::default();
    let (auditor, task) =
        Auditor::start_with(Box::new(sink.clone()), Head::genesis(), key(), 16, 100)
            .expect("start");
    auditor.record(blocked("before"));
    auditor.flush().await;

    sink.fail.store(true, Ordering::SeqCst);
    auditor.record(blocked("lost"));
    auditor.record(allowed());
    auditor.flush().await;
    assert_eq!((auditor.lost_security(), auditor.dropped_allowed()), (1, 1));
    assert_eq!(auditor.head().0, 1);

    sink.fail.store(false, Ordering::SeqCst);
    auditor.record(blocked("after"));
    auditor.flush().await;
    task.shutdown().await;

    let lines = sink.lines();
    let values = values(&lines);
    let events: Vec<&str> = values
        .iter()
        .map(|v| v["event"].as_str().expect("event"))
        .collect();
    assert_eq!(events, ["blocked", "audit_gap", "blocked"]);
    assert_eq!(
        values[1]["detail"],
        serde_json::json!({"lost": 1, "dropped_allowed": 1})
    );
    assert_eq!(values[2]["host"], "after");
    let report = verify_reader(join(&lines).as_bytes(), &key()).expect("verify");
    assert_eq!((report.problem, report.last_seq), (None, Some(3)));
}

#[tokio::test]
async fn events_after_shutdown_are_counted_not_written() {
    let sink = MemSink::default();
    let (auditor, task) =
        Auditor::start_with(Box::new(sink.clone()), Head::genesis(), key(), 4, 100).expect("start");
    auditor.record(blocked("kept"));
    task.shutdown().await;
    auditor.record(blocked("late"));
    auditor.record(allowed());
    auditor.flush().await;
    assert_eq!((auditor.lost_security(), auditor.dropped_allowed()), (1, 1));
    assert_eq!(sink.lines().len(), 1);
}

#[tokio::test]
async fn dropping_every_handle_ends_the_writer_after_writing() {
    let sink = MemSink::default();
    let (auditor, task) =
        Auditor::start_with(Box::new(sink.clone()), Head::genesis(), key(), 4, 100).expect("start");
    let clone = auditor.clone();
    clone.record(blocked("x"));
    drop((auditor, clone));
    task.shutdown().await;
    assert_eq!(sink.lines().len(), 1);
}

#[tokio::test]
async fn a_disabled_auditor_does_nothing() {
    let auditor = Auditor::disabled();
    auditor.record(blocked("x"));
    auditor.set_policy_hash("p");
    auditor.flush().await;
    assert_eq!(auditor.head(), (0, GENESIS_HASH.to_string()));
    assert_eq!((auditor.dropped_allowed(), auditor.lost_security()), (0, 0));
    assert!(!auditor.is_enabled());
}

#[tokio::test]
async fn a_partial_last_line_is_terminated_and_the_chain_resumes_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let (auditor, task) = Auditor::start(path.clone(), key(), 8).await.expect("start");
    auditor.record(blocked("a"));
    task.shutdown().await;
    let mut text = std::fs::read_to_string(&path).expect("read");
    text.push_str("{\"ts\":\"2026-");
    std::fs::write(&path, &text).expect("write");

    let (auditor, task) = Auditor::start(path.clone(), key(), 8).await.expect("start");
    assert_eq!(auditor.head().0, 1);
    auditor.record(blocked("b"));
    task.shutdown().await;
    let lines = lines_of(&path);
    assert_eq!(lines.len(), 3);
    assert_eq!(values(&lines[2..])[0]["seq"], 2);
    // The crash's half line is still evidence: verify names it.
    let report = verify(&path, &key()).expect("verify");
    let problem = report.problem.expect("problem");
    assert_eq!(problem.line, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_recorders_on_a_small_channel_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let (auditor, task) = Auditor::start(path.clone(), key(), 8).await.expect("start");
    let recorders: Vec<_> = (0..4)
        .map(|t| {
            let auditor = auditor.clone();
            tokio::spawn(async move {
                for i in 0..500 {
                    auditor.record(blocked(&format!("t{t}-{i}")));
                }
            })
        })
        .collect();
    for recorder in recorders {
        recorder.await.expect("recorder");
    }
    task.shutdown().await;
    assert_eq!(auditor.lost_security(), 0);
    let report = verify(&path, &key()).expect("verify");
    assert_eq!((report.problem, report.lines), (None, 2000));
}
