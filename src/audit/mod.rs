//! The audit log: what the proxy refused or noticed, as tamper-evident JSON Lines.
//!
//! One writer task appends events to a JSONL file (PRODUCT.md §8). Callers hold a cheap
//! [`Auditor`] handle whose [`Auditor::record`] never blocks: `allowed` events may be dropped
//! when the bounded channel is full (counted), security events go to an overflow queue and,
//! if they still cannot be written, are counted and reported by an `audit_gap` line once
//! writing works again.
//!
//! Every line carries `prev` (the previous line's hash) and `hash`, an HMAC-SHA256 under a
//! [`ChainKey`] kept beside the CA, so the chain cannot be recomputed without the key. The
//! chain continues across restarts (from the file's last line) and rotations (from the head
//! state saved beside the key, [`HEAD_STATE_FILE`]). [`verify`] walks a file and names the
//! first edited, inserted, deleted, reordered or malformed line; [`run_query`] is the
//! `llm-egress audit` command.
//!
//! # Line format
//!
//! One compact JSON object per line, fields in this order: `ts` (RFC 3339 UTC with
//! milliseconds), `seq` (from 1, +1 per line, continued across restarts and rotations),
//! `event`, then whichever of `reason`, `client`, `method`, `url` (query string and fragment
//! stripped), `host`, `port`, `rule`, `policy`, `request_id`, `detail` are present, then
//! `prev` (the previous line's hash; 64 zeros for the first line ever) and last `hash`.
//!
//! # How `hash` is computed
//!
//! The writer serializes the object *without* `hash` (it already ends in `"prev":"…"}`),
//! computes `hash = hex(HMAC-SHA256(key, those exact bytes))`, and splices
//! `,"hash":"<hex>"` in before the final `}`. The verifier works on the raw line text, never
//! on re-serialized JSON: it cuts off the exact suffix `,"hash":"<64 lowercase hex>"}`,
//! appends `}`, and recomputes the HMAC over those bytes. Changing any byte of a line (even
//! whitespace or key order) breaks its hash, and without the key no new one can be made.
//!
//! Layout: `event.rs` (what callers report, line serialization) · `chain.rs` (key, HMAC,
//! head state) · `writer.rs` (the handle and drop rules) · `task.rs` (the writer loop) ·
//! `sink.rs` (the file, resume, rotation) · `verify.rs` · `query.rs` (the CLI) ·
//! `summary.rs` (`--summary`).

pub(crate) mod chain;
mod event;
mod query;
mod sink;
mod summary;
mod task;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use chain::{ChainKey, CHAIN_KEY_FILE, GENESIS_HASH, HEAD_STATE_FILE};
pub use event::{AuditEvent, EventKind};
pub use query::{run_query, QueryOptions};
pub use verify::{verify, ProblemKind, VerifyProblem, VerifyReport};
pub use writer::{AuditTask, Auditor, OVERFLOW_CAPACITY};

/// Errors of the audit subsystem: files that cannot be read or written, and bad keys.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The chain key file exists but does not hold a usable key.
    #[error("chain key {path}: {reason}")]
    InvalidKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it (never the key material).
        reason: String,
    },
}

// === impl AuditError ===

impl AuditError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the error is a missing file (the query CLI words this case plainly).
    pub fn is_not_found(&self) -> bool {
        matches!(self, AuditError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}
