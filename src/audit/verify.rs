//! Walks an audit file and names the first line that breaks the chain, and how.
//!
//! Each line is checked on its raw text (see `chain.rs` for the sealed form): its HMAC under
//! the key, then its `prev` against the previous line's hash and its `seq` against the
//! previous `seq`. A file may start at any `seq` (an earlier part rotated away); a file that
//! starts at 1 must start from the genesis hash. A tail cut off after a whole line cannot be
//! seen from the file alone: compare the reported head with the exported one.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde::Serialize;

use super::chain::{split_sealed, ChainKey, GENESIS_HASH};
use super::AuditError;

/// The outcome of verifying a file. `lines`, `first_seq`, `last_seq` and `head_hash` describe
/// the lines that verified (all of them when `problem` is `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Number of lines that verified.
    pub lines: u64,
    /// `seq` of the first line.
    pub first_seq: Option<u64>,
    /// `seq` of the last line that verified.
    pub last_seq: Option<u64>,
    /// `hash` of the last line that verified: compare with the exported head.
    pub head_hash: Option<String>,
    /// The first problem found, if any.
    pub problem: Option<VerifyProblem>,
}

/// The first line that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyProblem {
    /// 1-based line number in the file.
    pub line: u64,
    /// What kind of tampering (or damage) it looks like.
    pub kind: ProblemKind,
    /// A sentence for people.
    pub message: String,
}

/// What a broken line looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The line's content changed after it was sealed.
    Edited,
    /// A line that does not belong to the chain was added.
    Inserted,
    /// One or more lines are missing.
    Deleted,
    /// Lines are out of order.
    Reordered,
    /// Not a JSON object with `seq`, `prev` and `hash` (e.g. a truncated line).
    Malformed,
}

// === impl ProblemKind ===

impl ProblemKind {
    /// Lower-case name, as printed by `audit --verify`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProblemKind::Edited => "edited",
            ProblemKind::Inserted => "inserted",
            ProblemKind::Deleted => "deleted",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Malformed => "malformed",
        }
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Verifies the audit file at `path` under `key`. `Err` only when the file cannot be read;
/// tampering is reported in [`VerifyReport::problem`].
pub fn verify(path: &Path, key: &ChainKey) -> Result<VerifyReport, AuditError> {
    let file = File::open(path).map_err(|e| AuditError::io(path, e))?;
    verify_reader(BufReader::new(file), key).map_err(|e| AuditError::io(path, e))
}

/// [`verify`] over any reader.
pub(crate) fn verify_reader(reader: impl BufRead, key: &ChainKey) -> io::Result<VerifyReport> {
    let mut lines = Lines {
        reader,
        peeked: None,
    };
    let mut report = VerifyReport::default();
    let mut last: Option<Entry> = None;
    let mut number = 0u64;
    while let Some(raw) = lines.next()? {
        number += 1;
        let found = match check_line(&raw, key) {
            Checked::Bad(kind, message) => Some((kind, message)),
            Checked::Forged(entry) => {
                let next = lines.peek()?.and_then(loose_entry);
                Some(classify_forged(&entry, last.as_ref(), next.as_ref()))
            }
            Checked::Sealed(entry) => match chain_problem(&entry, last.as_ref(), &mut lines)? {
                Some(problem) => Some(problem),
                None => {
                    report.lines += 1;
                    report.first_seq.get_or_insert(entry.seq);
                    report.last_seq = Some(entry.seq);
                    report.head_hash = Some(entry.hash.clone());
                    last = Some(entry);
                    None
                }
            },
        };
        if let Some((kind, message)) = found {
            report.problem = Some(VerifyProblem {
                line: number,
                kind,
                message,
            });
            break;
        }
    }
    Ok(report)
}

/// The chain fields of one line.
struct Entry {
    seq: u64,
    prev: String,
    hash: String,
}

/// The verdict on one line taken alone.
enum Checked {
    /// Sealed under the key.
    Sealed(Entry),
    /// Well-formed, but its HMAC does not verify.
    Forged(Entry),
    /// Unusable.
    Bad(ProblemKind, String),
}

fn check_line(raw: &[u8], key: &ChainKey) -> Checked {
    let Ok(text) = std::str::from_utf8(raw) else {
        return Checked::Bad(ProblemKind::Malformed, "not UTF-8 text".into());
    };
    let value = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => value,
        Err(e) => return Checked::Bad(ProblemKind::Malformed, format!("not JSON ({e})")),
    };
    let Some(entry) = entry_of(&value) else {
        return Checked::Bad(
            ProblemKind::Malformed,
            "not an audit line (needs seq, prev and hash)".into(),
        );
    };
    match split_sealed(text) {
        Some((prefix, hash)) if hash == entry.hash => {
            if key.check(prefix, hash) {
                Checked::Sealed(entry)
            } else {
                Checked::Forged(entry)
            }
        }
        _ => Checked::Bad(
            ProblemKind::Edited,
            "the line is not in its sealed form (hash must be the last field; was it re-serialized?)"
                .into(),
        ),
    }
}

fn entry_of(value: &serde_json::Value) -> Option<Entry> {
    Some(Entry {
        seq: value.get("seq")?.as_u64()?,
        prev: value.get("prev")?.as_str()?.to_string(),
        hash: value.get("hash")?.as_str()?.to_string(),
    })
}

/// The chain fields of a line, without checking anything else.
fn loose_entry(raw: &[u8]) -> Option<Entry> {
    entry_of(&serde_json::from_slice(raw).ok()?)
}

/// A line whose HMAC fails: forged and slipped in, or edited in place.
fn classify_forged(
    entry: &Entry,
    last: Option<&Entry>,
    next: Option<&Entry>,
) -> (ProblemKind, String) {
    let duplicates =
        last.is_some_and(|l| l.seq == entry.seq) || next.is_some_and(|n| n.seq == entry.seq);
    let bypassed = matches!((last, next), (Some(l), Some(n)) if n.prev == l.hash);
    if duplicates || bypassed {
        let message = format!(
            "line with seq {} does not verify under the key and does not belong to the chain",
            entry.seq
        );
        (ProblemKind::Inserted, message)
    } else {
        let message = format!("line with seq {} does not verify under the key", entry.seq);
        (ProblemKind::Edited, message)
    }
}

/// Checks a sealed line's place in the chain.
fn chain_problem(
    entry: &Entry,
    last: Option<&Entry>,
    lines: &mut Lines<impl BufRead>,
) -> io::Result<Option<(ProblemKind, String)>> {
    let Some(last) = last else {
        if entry.seq == 0 || (entry.seq == 1 && entry.prev != GENESIS_HASH) {
            let message = format!("seq {} cannot start a chain", entry.seq);
            return Ok(Some((ProblemKind::Edited, message)));
        }
        return Ok(None);
    };
    if entry.prev == last.hash {
        if entry.seq == last.seq + 1 {
            return Ok(None);
        }
        let message = format!("seq {} does not follow seq {}", entry.seq, last.seq);
        return Ok(Some((ProblemKind::Edited, message)));
    }
    if entry.seq <= last.seq {
        let message = format!("seq {} comes after seq {}", entry.seq, last.seq);
        return Ok(Some((ProblemKind::Reordered, message)));
    }
    if entry.seq == last.seq + 1 {
        let message = format!(
            "seq {} does not chain to the line before it (its prev is another hash)",
            entry.seq
        );
        return Ok(Some((ProblemKind::Inserted, message)));
    }
    // A gap: deleted, unless a missing line turns up later (moved).
    let missing = last.seq + 1..entry.seq;
    while let Some(raw) = lines.next()? {
        if let Some(later) = loose_entry(&raw).filter(|e| missing.contains(&e.seq)) {
            let message = format!("seq {} comes before seq {}", entry.seq, later.seq);
            return Ok(Some((ProblemKind::Reordered, message)));
        }
    }
    let count = entry.seq - last.seq - 1;
    let message = format!(
        "seq jumps from {} to {}: {count} line{} missing",
        last.seq,
        entry.seq,
        if count == 1 { "" } else { "s" }
    );
    Ok(Some((ProblemKind::Deleted, message)))
}

/// Raw lines with one line of lookahead.
struct Lines<R> {
    reader: R,
    peeked: Option<Option<Vec<u8>>>,
}

// === impl Lines ===

impl<R: BufRead> Lines<R> {
    fn read(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        if self.reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        Ok(Some(line))
    }

    fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        match self.peeked.take() {
            Some(line) => Ok(line),
            None => self.read(),
        }
    }

    fn peek(&mut self) -> io::Result<Option<&[u8]>> {
        if self.peeked.is_none() {
            self.peeked = Some(self.read()?);
        }
        Ok(self.peeked.as_ref().and_then(|l| l.as_deref()))
    }
}
