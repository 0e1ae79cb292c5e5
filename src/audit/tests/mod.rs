//! Tests across the audit modules: the writer with real files and injected sinks, tampering
//! caught by `verify`, and the `audit` command. No sleeps: tests synchronize on
//! `Auditor::flush`, `AuditTask::shutdown` and a gate inside the test sink.

mod query;
mod verify;
mod writer;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use time::OffsetDateTime;

use super::chain::{ChainKey, Head};
use super::event::{write_unsealed, AuditEvent, EventKind, Stamp};
use super::sink::Sink;

/// A fixed test key without a head state file.
fn key() -> ChainKey {
    ChainKey::from_bytes([9; 32])
}

/// A `blocked` event for `host`.
fn blocked(host: &str) -> AuditEvent {
    AuditEvent {
        event: EventKind::Blocked,
        reason: Some("endpoint_not_allowed".into()),
        method: Some("POST".into()),
        url: Some(format!("https://{host}/v1/chat/completions?key=sk-secret")),
        host: Some(host.into()),
        port: Some(443),
        ..AuditEvent::default()
    }
}

/// An `allowed` event.
fn allowed() -> AuditEvent {
    AuditEvent::new(EventKind::Allowed)
}

/// The lines of a file, without newlines.
fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read audit file")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Parses each line as JSON.
fn values(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// `n` sealed lines (seq 1..=n) built without the writer, as `verify` would see them.
fn build_log(key: &ChainKey, n: u64) -> Vec<String> {
    let mut head = Head::genesis();
    let mut lines = Vec::new();
    for seq in 1..=n {
        let mut buf = Vec::new();
        let stamp = Stamp {
            ts: OffsetDateTime::now_utc(),
            seq,
            policy: Some("p"),
            prev: &head.hash,
        };
        write_unsealed(&mut buf, &blocked(&format!("h{seq}.example")), &stamp).expect("json");
        let hash = key.seal(&mut buf, 0);
        lines.push(String::from_utf8(buf).expect("utf8"));
        head = Head { seq, hash };
    }
    lines
}

/// Joins lines into file content.
fn join(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// A sink in memory that can be told to fail, and can hold its first write until released.
#[derive(Clone, Default)]
struct MemSink {
    data: Arc<Mutex<Vec<u8>>>,
    fail: Arc<AtomicBool>,
    gate: Arc<Mutex<Option<Gate>>>,
}

/// Holds the first write: signals `entered`, then waits for `release`.
struct Gate {
    entered: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

/// The test's side of a [`Gate`].
struct GateHandle {
    entered: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

// === impl MemSink ===

impl MemSink {
    /// A sink whose first write blocks until the returned handle releases it.
    fn gated() -> (MemSink, GateHandle) {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let sink = MemSink::default();
        *sink.gate.lock().expect("lock") = Some(Gate {
            entered: entered_tx,
            release: release_rx,
        });
        let handle = GateHandle {
            entered: entered_rx,
            release: release_tx,
        };
        (sink, handle)
    }

    fn lines(&self) -> Vec<String> {
        let data = self.data.lock().expect("lock");
        String::from_utf8_lossy(&data)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Sink for MemSink {
    fn write_batch(&mut self, bytes: &[u8]) -> io::Result<()> {
        let gate = self.gate.lock().expect("lock").take();
        if let Some(gate) = gate {
            gate.entered.send(()).expect("test waits");
            gate.release.recv().expect("test releases");
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected failure"));
        }
        self.data.lock().expect("lock").extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}
