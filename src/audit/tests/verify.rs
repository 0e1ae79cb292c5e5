//! Tampering with a log and what `verify` says about it.

use proptest::prelude::*;

use super::*;
use crate::audit::verify::verify_reader;
use crate::audit::{ProblemKind, VerifyReport};

fn check(lines: &[String]) -> VerifyReport {
    verify_reader(join(lines).as_bytes(), &key()).expect("verify")
}

/// The problem's (line, kind).
fn problem(lines: &[String]) -> (u64, ProblemKind) {
    let report = check(lines);
    let problem = report.problem.expect("a problem");
    (problem.line, problem.kind)
}

#[test]
fn a_clean_log_passes() {
    let lines = build_log(&key(), 6);
    let report = check(&lines);
    assert_eq!(report.problem, None);
    assert_eq!(
        (report.lines, report.first_seq, report.last_seq),
        (6, Some(1), Some(6))
    );
    let last: serde_json::Value = serde_json::from_str(&lines[5]).expect("json");
    assert_eq!(report.head_hash.as_deref(), last["hash"].as_str());
    assert_eq!(check(&[]), VerifyReport::default());
}

#[test]
fn a_log_starting_after_rotation_passes() {
    let lines = build_log(&key(), 6);
    let report = check(&lines[3..]);
    assert_eq!(report.problem, None);
    assert_eq!(report.first_seq, Some(4));
}

#[test]
fn the_wrong_key_fails_on_the_first_line() {
    let lines = build_log(&ChainKey::from_bytes([1; 32]), 3);
    assert_eq!(problem(&lines), (1, ProblemKind::Edited));
}

#[test]
fn an_edited_line_is_found() {
    let mut lines = build_log(&key(), 5);
    lines[2] = lines[2].replace("endpoint_not_allowed", "method_not_allowed");
    assert_eq!(problem(&lines), (3, ProblemKind::Edited));
}

#[test]
fn a_reserialized_line_is_edited() {
    let mut lines = build_log(&key(), 3);
    let value: serde_json::Value = serde_json::from_str(&lines[1]).expect("json");
    lines[1] = serde_json::to_string_pretty(&value)
        .expect("json")
        .replace('\n', "");
    assert_eq!(problem(&lines), (2, ProblemKind::Edited));
}

#[test]
fn a_deleted_line_is_found() {
    let mut lines = build_log(&key(), 5);
    lines.remove(2);
    let report = check(&lines);
    let found = report.problem.expect("problem");
    assert_eq!((found.line, found.kind), (3, ProblemKind::Deleted));
    assert!(found.message.contains("from 2 to 4"), "{}", found.message);
    assert_eq!(report.lines, 2);
}

#[test]
fn a_forged_inserted_line_is_found() {
    let mut lines = build_log(&key(), 5);
    // A forger copies line 3's shape, chains it to line 2, but cannot compute the HMAC.
    let forged = lines[2]
        .replace("h3.example", "innocent.example")
        .replace(&hash_of(&lines[2]), &"0".repeat(64));
    lines.insert(2, forged);
    assert_eq!(problem(&lines), (3, ProblemKind::Inserted));
}

#[test]
fn a_forged_line_with_a_fresh_seq_between_lines_is_inserted() {
    let mut lines = build_log(&key(), 4);
    let forged = lines[1].replace("\"seq\":2", "\"seq\":99");
    lines.insert(2, forged);
    assert_eq!(problem(&lines), (3, ProblemKind::Inserted));
}

#[test]
fn swapped_lines_are_reordered() {
    let mut lines = build_log(&key(), 5);
    lines.swap(2, 3);
    assert_eq!(problem(&lines), (3, ProblemKind::Reordered));
}

#[test]
fn a_line_moved_later_is_reordered_not_deleted() {
    let mut lines = build_log(&key(), 6);
    let moved = lines.remove(1);
    lines.push(moved);
    assert_eq!(problem(&lines), (2, ProblemKind::Reordered));
}

#[test]
fn a_replayed_line_is_reordered() {
    let mut lines = build_log(&key(), 4);
    let copy = lines[1].clone();
    lines.push(copy);
    assert_eq!(problem(&lines), (5, ProblemKind::Reordered));
}

#[test]
fn a_truncated_line_is_malformed() {
    let mut lines = build_log(&key(), 4);
    let cut = lines[3].len() / 2;
    lines[3].truncate(cut);
    assert_eq!(problem(&lines), (4, ProblemKind::Malformed));
    // A truncated middle line, and a file whose last line lost its newline too.
    let mut lines = build_log(&key(), 4);
    lines[1].truncate(10);
    assert_eq!(problem(&lines), (2, ProblemKind::Malformed));
    let lines = build_log(&key(), 2);
    let text = format!("{}\n{}", lines[0], &lines[1][..20]);
    let report = verify_reader(text.as_bytes(), &key()).expect("verify");
    assert_eq!(
        report.problem.map(|p| (p.line, p.kind)),
        Some((2, ProblemKind::Malformed))
    );
}

#[test]
fn a_blank_or_foreign_line_is_malformed() {
    let mut lines = build_log(&key(), 3);
    lines.insert(1, String::new());
    assert_eq!(problem(&lines), (2, ProblemKind::Malformed));
    let mut lines = build_log(&key(), 3);
    lines.insert(1, "{\"hello\":1}".into());
    assert_eq!(problem(&lines), (2, ProblemKind::Malformed));
}

fn hash_of(line: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(line).expect("json");
    value["hash"].as_str().expect("hash").to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any change of any single byte of the file is noticed.
    #[test]
    fn every_single_byte_change_is_detected(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let text = join(&build_log(&key(), 4)).into_bytes();
        let i = pos.index(text.len());
        prop_assume!(text[i] != byte);
        let mut tampered = text.clone();
        tampered[i] = byte;
        let report = verify_reader(tampered.as_slice(), &key()).expect("verify");
        prop_assert!(report.problem.is_some(), "undetected change at {}", i);
    }
}
