//! `audit --summary`: blocked endpoints grouped by host and reason, most frequent first.

use std::collections::HashMap;
use std::io::{self, Write};

use serde::Serialize;
use serde_json::Value;

use super::query::field;

/// Counts of `blocked` lines per (host, reason).
#[derive(Debug, Default)]
pub(crate) struct Summary {
    groups: HashMap<(String, String), Group>,
}

/// One row of the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Group {
    host: String,
    reason: String,
    count: u64,
    first_seen: String,
    last_seen: String,
}

// === impl Summary ===

impl Summary {
    /// Counts `value` if it is a `blocked` line. Hosts are grouped case-insensitively.
    pub(crate) fn add(&mut self, value: &Value) {
        if value.get("event").and_then(Value::as_str) != Some("blocked") {
            return;
        }
        let host = field(value, "host").to_ascii_lowercase();
        let reason = field(value, "reason");
        let ts = field(value, "ts");
        let group = self
            .groups
            .entry((host.clone(), reason.clone()))
            .or_insert_with(|| Group {
                host,
                reason,
                count: 0,
                first_seen: ts.clone(),
                last_seen: ts.clone(),
            });
        group.count += 1;
        // The timestamps share one fixed UTC format, so text order is time order.
        if ts < group.first_seen {
            group.first_seen = ts.clone();
        }
        if ts > group.last_seen {
            group.last_seen = ts;
        }
    }

    /// The rows, by count descending, then host and reason.
    fn rows(&self) -> Vec<&Group> {
        let mut rows: Vec<&Group> = self.groups.values().collect();
        rows.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.host.cmp(&b.host))
                .then_with(|| a.reason.cmp(&b.reason))
        });
        rows
    }

    /// Writes a table, or one JSON object per row with `json`.
    pub(crate) fn write(&self, out: &mut dyn Write, json: bool) -> io::Result<()> {
        let rows = self.rows();
        if json {
            for row in rows {
                let line = serde_json::to_string(row).map_err(io::Error::other)?;
                writeln!(out, "{line}")?;
            }
            return Ok(());
        }
        if rows.is_empty() {
            return writeln!(out, "no blocked events");
        }
        writeln!(
            out,
            "{:>7}  {:<32} {:<26} {:<24} LAST SEEN",
            "COUNT", "HOST", "REASON", "FIRST SEEN"
        )?;
        for row in rows {
            writeln!(
                out,
                "{:>7}  {:<32} {:<26} {:<24} {}",
                row.count, row.host, row.reason, row.first_seen, row.last_seen
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn groups_and_sorts_by_count() {
        let mut summary = Summary::default();
        let lines = [
            json!({"ts":"2026-01-01T00:00:02.000Z","event":"blocked","reason":"endpoint_not_allowed","host":"Evil.example"}),
            json!({"ts":"2026-01-01T00:00:01.000Z","event":"blocked","reason":"endpoint_not_allowed","host":"evil.example"}),
            json!({"ts":"2026-01-01T00:00:03.000Z","event":"blocked","reason":"certificate_pin_mismatch","host":"api.openai.com"}),
            json!({"ts":"2026-01-01T00:00:04.000Z","event":"failover","host":"evil.example"}),
        ];
        for line in &lines {
            summary.add(line);
        }
        let rows = summary.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].host, "evil.example");
        assert_eq!(rows[0].count, 2);
        assert_eq!(rows[0].first_seen, "2026-01-01T00:00:01.000Z");
        assert_eq!(rows[0].last_seen, "2026-01-01T00:00:02.000Z");
        assert_eq!(rows[1].reason, "certificate_pin_mismatch");

        let mut out = Vec::new();
        summary.write(&mut out, true).expect("write");
        let first: Value =
            serde_json::from_slice(out.split(|b| *b == b'\n').next().expect("row")).expect("json");
        assert_eq!(first["count"], 2);
    }
}
