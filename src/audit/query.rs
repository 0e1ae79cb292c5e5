//! `llm-egress audit`: list, summarize or verify an audit file (argument parsing excluded).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::chain::{ChainKey, Head};
use super::summary::Summary;
use super::verify::verify;
use super::AuditError;

/// What `llm-egress audit` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// The audit file.
    pub file: PathBuf,
    /// The chain key (`<certs>/audit.key`); needed by `verify`.
    pub key_file: Option<PathBuf>,
    /// Only lines whose `ts` is within this long before now.
    pub since: Option<Duration>,
    /// Only lines with exactly this `reason`.
    pub reason: Option<String>,
    /// Only lines with this `host` (case-insensitive).
    pub host: Option<String>,
    /// Group `blocked` lines by host and reason instead of listing lines.
    pub summary: bool,
    /// Verify the hash chain instead of listing lines (filters do not apply).
    pub verify: bool,
    /// JSON output: the matching raw lines, summary rows or the verify report.
    pub json: bool,
}

/// Why the command could not do its job (exit code 2).
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("audit log {0} does not exist (pass --file)")]
    Missing(PathBuf),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
    #[error("{0}")]
    Usage(&'static str),
}

/// Runs the `audit` command, writing to `out` (results) and `err` (diagnostics). Returns the
/// exit code: 0 ok, 1 when `verify` finds a problem, 2 on I/O errors (message on `err`).
pub fn run_query(opts: &QueryOptions, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let result = if opts.verify {
        run_verify(opts, out)
    } else if opts.summary {
        run_summary(opts, out, err)
    } else {
        run_list(opts, out, err)
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            let _ = writeln!(err, "error: {failure}");
            2
        }
    }
}

fn run_verify(opts: &QueryOptions, out: &mut dyn Write) -> Result<i32, Failure> {
    let key_file = opts.key_file.as_deref().ok_or(Failure::Usage(
        "verify needs the chain key: pass --certs DIR (the key is DIR/audit.key)",
    ))?;
    if !opts.file.exists() {
        return Err(Failure::Missing(opts.file.clone()));
    }
    let key = ChainKey::load(key_file)?;
    let report = verify(&opts.file, &key)?;
    let code = i32::from(report.problem.is_some());
    if opts.json {
        let mut value = serde_json::to_value(&report).map_err(io::Error::other)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("ok".into(), Value::Bool(code == 0));
        }
        writeln!(out, "{value}")?;
        return Ok(code);
    }
    match (
        &report.problem,
        report.first_seq,
        report.last_seq,
        &report.head_hash,
    ) {
        (Some(p), ..) => writeln!(out, "FAILED at line {}: {}: {}", p.line, p.kind, p.message)?,
        (None, Some(first), Some(last), Some(hash)) => writeln!(
            out,
            "OK: {} lines, seq {first}..{last}, head {hash}",
            report.lines
        )?,
        (None, ..) => writeln!(out, "OK: 0 lines")?,
    }
    if let (None, Some(last), Some(hash), Some(path)) = (
        &report.problem,
        report.last_seq,
        &report.head_hash,
        key.head_file(),
    ) {
        if let Ok(Some(saved)) = Head::load(path) {
            if saved.seq == last && &saved.hash == hash {
                writeln!(out, "head matches the saved head in {}", path.display())?;
            } else if saved.seq > last {
                writeln!(
                    out,
                    "note: the saved head in {} is at seq {}: later lines are in a newer file, or this file's tail was cut",
                    path.display(),
                    saved.seq
                )?;
            } else {
                writeln!(
                    out,
                    "note: the saved head in {} (seq {}) does not match this file's head; compare with the head exported on /metrics",
                    path.display(),
                    saved.seq
                )?;
            }
        }
    }
    Ok(code)
}

fn run_list(opts: &QueryOptions, out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, Failure> {
    let mut header = !opts.json;
    let mut matched = 0u64;
    for_each_match(opts, err, |text, value| {
        matched += 1;
        if opts.json {
            return writeln!(out, "{text}");
        }
        if std::mem::take(&mut header) {
            writeln!(
                out,
                "{:<24} {:<17} {:<24} {:<30} {:<7} {:<40} {:<16} REQUEST_ID",
                "TS", "EVENT", "REASON", "HOST:PORT", "METHOD", "URL", "RULE"
            )?;
        }
        writeln!(
            out,
            "{:<24} {:<17} {:<24} {:<30} {:<7} {:<40} {:<16} {}",
            field(value, "ts"),
            field(value, "event"),
            field(value, "reason"),
            endpoint(value),
            field(value, "method"),
            field(value, "url"),
            field(value, "rule"),
            field(value, "request_id"),
        )
    })?;
    if matched == 0 && !opts.json {
        writeln!(out, "no matching events")?;
    }
    Ok(0)
}

fn run_summary(
    opts: &QueryOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, Failure> {
    let mut summary = Summary::default();
    for_each_match(opts, err, |_, value| {
        summary.add(value);
        Ok(())
    })?;
    summary.write(out, opts.json)?;
    Ok(0)
}

/// Calls `each` with the raw text and parsed value of every line that passes the filters.
/// Lines that are not JSON are skipped with one warning on `err`.
fn for_each_match(
    opts: &QueryOptions,
    err: &mut dyn Write,
    mut each: impl FnMut(&str, &Value) -> io::Result<()>,
) -> Result<(), Failure> {
    let file = File::open(&opts.file).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Failure::Missing(opts.file.clone()),
        _ => Failure::Audit(AuditError::io(&opts.file, e)),
    })?;
    let filter = Filter::new(opts);
    let mut skipped = 0u64;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| AuditError::io(&opts.file, e))?;
        let Ok(line) = std::str::from_utf8(&line) else {
            skipped += 1;
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(value) if value.is_object() => {
                if filter.matches(&value) {
                    each(line, &value)?;
                }
            }
            _ => skipped += 1,
        }
    }
    if skipped > 0 {
        writeln!(
            err,
            "warning: {skipped} line(s) that are not JSON objects were skipped (try --verify)"
        )?;
    }
    Ok(())
}

/// The `--since`, `--reason` and `--host` filters.
struct Filter {
    cutoff: Option<OffsetDateTime>,
    reason: Option<String>,
    host: Option<String>,
}

// === impl Filter ===

impl Filter {
    fn new(opts: &QueryOptions) -> Filter {
        // A `since` longer than the calendar can hold means "everything".
        let cutoff = opts.since.and_then(|since| {
            let since = time::Duration::try_from(since).ok()?;
            OffsetDateTime::now_utc().checked_sub(since)
        });
        Filter {
            cutoff,
            reason: opts.reason.clone(),
            host: opts.host.clone(),
        }
    }

    fn matches(&self, value: &Value) -> bool {
        let text = |name: &str| value.get(name).and_then(Value::as_str);
        if let Some(reason) = &self.reason {
            if text("reason") != Some(reason.as_str()) {
                return false;
            }
        }
        if let Some(host) = &self.host {
            if !text("host").is_some_and(|h| h.eq_ignore_ascii_case(host)) {
                return false;
            }
        }
        if let Some(cutoff) = self.cutoff {
            let ts = text("ts").and_then(|ts| OffsetDateTime::parse(ts, &Rfc3339).ok());
            if ts.is_none_or(|ts| ts < cutoff) {
                return false;
            }
        }
        true
    }
}

/// A field for display: strings as they are, other values as JSON, absent as `-`.
pub(crate) fn field(value: &Value, name: &str) -> String {
    match value.get(name) {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `host:port`, `host`, or `-`.
pub(crate) fn endpoint(value: &Value) -> String {
    match (value.get("host").and_then(Value::as_str), value.get("port")) {
        (Some(host), Some(port)) if !port.is_null() && host.contains(':') => {
            format!("[{host}]:{port}")
        }
        (Some(host), Some(port)) if !port.is_null() => format!("{host}:{port}"),
        (Some(host), _) => host.to_string(),
        (None, _) => "-".to_string(),
    }
}
