//! The handle the proxy holds ([`Auditor`]) and the drop rules of PRODUCT.md §8.
//!
//! `record()` never awaits: it stamps the event with the time and the active policy hash and
//! `try_send`s it to the writer. When the bounded channel is full (or closed), an `allowed`
//! event is dropped and counted; a security event goes to an overflow queue the writer drains,
//! bounded at [`OVERFLOW_CAPACITY`], beyond which it is counted as lost and reported by the
//! next `audit_gap` line.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use super::chain::{ChainKey, Head};
use super::event::AuditEvent;
use super::sink::{FileSink, Sink};
use super::task::Writer;
use super::AuditError;

/// How many security events may wait in the overflow queue beside a full channel.
pub const OVERFLOW_CAPACITY: usize = 65_536;

/// A message to the writer task. Nearly every message is an event, so boxing it would add an
/// allocation per event and save nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    /// An event to write.
    Event(Pending),
    /// Acknowledge once everything sent before has been written (or counted lost).
    Flush(oneshot::Sender<()>),
}

/// An event with what `record()` knew when it was called.
pub(crate) struct Pending {
    /// The caller's event.
    pub ev: AuditEvent,
    /// When it was recorded.
    pub ts: OffsetDateTime,
    /// The active policy hash at that moment.
    pub policy: Option<Arc<str>>,
}

/// State shared by the handles and the writer task.
pub(crate) struct Shared {
    /// `allowed` events dropped (full channel, or their batch failed to write).
    pub dropped_allowed: AtomicU64,
    /// Security events that could not be written.
    pub lost_security: AtomicU64,
    /// Security events lost by `record()` that no `audit_gap` line has reported yet.
    pub unreported_lost: AtomicU64,
    /// Wakes the writer when the overflow queue grows or shutdown begins.
    pub notify: Notify,
    /// Set by [`AuditTask::shutdown`].
    pub closing: AtomicBool,
    overflow: Mutex<Overflow>,
    overflow_cap: usize,
    policy: RwLock<Option<Arc<str>>>,
    head: Mutex<Head>,
}

/// Security events waiting beside a full channel.
struct Overflow {
    queue: VecDeque<Pending>,
    /// The writer has taken its last look: later events can only be counted.
    finished: bool,
}

// === impl Shared ===

impl Shared {
    pub(crate) fn new(head: Head, overflow_cap: usize) -> Shared {
        Shared {
            dropped_allowed: AtomicU64::new(0),
            lost_security: AtomicU64::new(0),
            unreported_lost: AtomicU64::new(0),
            notify: Notify::new(),
            closing: AtomicBool::new(false),
            overflow: Mutex::new(Overflow {
                queue: VecDeque::new(),
                finished: false,
            }),
            overflow_cap,
            policy: RwLock::new(None),
            head: Mutex::new(head),
        }
    }

    /// Queues a security event the channel refused, or counts it lost.
    fn push_overflow(&self, pending: Pending) {
        let mut overflow = self.overflow.lock().unwrap_or_else(PoisonError::into_inner);
        if overflow.finished || overflow.queue.len() >= self.overflow_cap {
            drop(overflow);
            self.lost_security.fetch_add(1, Ordering::SeqCst);
            self.unreported_lost.fetch_add(1, Ordering::SeqCst);
        } else {
            overflow.queue.push_back(pending);
            drop(overflow);
        }
        self.notify.notify_one();
    }

    /// Takes the queued overflow; with `finish`, later pushes are counted as lost instead.
    pub(crate) fn take_overflow(&self, finish: bool) -> VecDeque<Pending> {
        let mut overflow = self.overflow.lock().unwrap_or_else(PoisonError::into_inner);
        overflow.finished |= finish;
        std::mem::take(&mut overflow.queue)
    }

    pub(crate) fn policy(&self) -> Option<Arc<str>> {
        self.policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_head(&self, head: Head) {
        *self.head.lock().unwrap_or_else(PoisonError::into_inner) = head;
    }
}

/// Cheap clonable handle to the audit writer. Sending never blocks and never awaits.
#[derive(Clone)]
pub struct Auditor {
    tx: Option<mpsc::Sender<Msg>>,
    shared: Arc<Shared>,
}

// === impl Auditor ===

impl Auditor {
    /// Opens (creating parent directories) the JSONL file at `path` in append mode, continues
    /// the chain from its last line (or, if the file is new or empty, from the head state saved
    /// beside the key, so numbering continues across rotation), and spawns the single writer
    /// task. `capacity` bounds the channel (at least 1). Needs a tokio runtime.
    pub async fn start(
        path: PathBuf,
        key: ChainKey,
        capacity: usize,
    ) -> Result<(Auditor, AuditTask), AuditError> {
        let (sink, head) = FileSink::open(&path, &key)?;
        tracing::info!(path = %path.display(), seq = head.seq, hash = %head.hash, "audit log opened; the chain continues from this head");
        Auditor::start_with(Box::new(sink), head, key, capacity, OVERFLOW_CAPACITY)
            .map_err(|e| AuditError::io(path, e))
    }

    /// Starts a writer over any sink, continuing from `head` (the seam tests use).
    pub(crate) fn start_with(
        sink: Box<dyn Sink>,
        head: Head,
        key: ChainKey,
        capacity: usize,
        overflow_cap: usize,
    ) -> std::io::Result<(Auditor, AuditTask)> {
        let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let shared = Arc::new(Shared::new(head.clone(), overflow_cap));
        let writer = Writer::new(sink, key, head, Arc::clone(&shared));
        // The writer does blocking file I/O, so it gets a blocking thread of its own and
        // drives its async receive loop there.
        let join = tokio::task::spawn_blocking(move || runtime.block_on(writer.run(rx)));
        let auditor = Auditor {
            tx: Some(tx),
            shared: Arc::clone(&shared),
        };
        Ok((auditor, AuditTask { shared, join }))
    }

    /// A disabled auditor for tools and tests: `record()` is a no-op.
    pub fn disabled() -> Auditor {
        Auditor {
            tx: None,
            shared: Arc::new(Shared::new(Head::genesis(), 0)),
        }
    }

    /// Queues `ev` for writing without blocking. A full channel drops an `allowed` event
    /// (counted by [`Auditor::dropped_allowed`]) and diverts a security event to the overflow
    /// queue (beyond its bound: counted by [`Auditor::lost_security`]).
    pub fn record(&self, ev: AuditEvent) {
        let Some(tx) = &self.tx else {
            return;
        };
        let security = ev.event.is_security();
        let pending = Pending {
            ev,
            ts: OffsetDateTime::now_utc(),
            policy: self.shared.policy(),
        };
        if let Err(refused) = tx.try_send(Msg::Event(pending)) {
            let Msg::Event(pending) = refused.into_inner() else {
                return;
            };
            if security {
                self.shared.push_overflow(pending);
            } else {
                self.shared.dropped_allowed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Sets the hash of the active policy, stamped as `policy` into every event recorded
    /// from now on. Call it before recording `policy_loaded`.
    pub fn set_policy_hash(&self, hash: &str) {
        *self
            .shared
            .policy
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::from(hash));
    }

    /// Sequence number and hash of the last line written (`(0, GENESIS_HASH)` before any):
    /// export it (metrics, process log) so a truncated tail can be caught.
    pub fn head(&self) -> (u64, String) {
        let head = self
            .shared
            .head
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (head.seq, head.hash.clone())
    }

    /// How many `allowed` events were dropped.
    pub fn dropped_allowed(&self) -> u64 {
        self.shared.dropped_allowed.load(Ordering::SeqCst)
    }

    /// How many security events could not be written.
    pub fn lost_security(&self) -> u64 {
        self.shared.lost_security.load(Ordering::SeqCst)
    }

    /// Waits until everything recorded before this call has been written (or counted as
    /// lost). Returns at once when the auditor is disabled or shut down.
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else {
            return;
        };
        let (ack, done) = oneshot::channel();
        if tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// False for [`Auditor::disabled`].
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (seq, _) = self.head();
        f.debug_struct("Auditor")
            .field("enabled", &self.is_enabled())
            .field("head_seq", &seq)
            .finish()
    }
}

/// Join handle of the writer task.
pub struct AuditTask {
    shared: Arc<Shared>,
    join: JoinHandle<()>,
}

// === impl AuditTask ===

impl AuditTask {
    /// Stops accepting events, writes everything already queued, fsyncs and returns. Events
    /// recorded afterwards are counted (dropped or lost), never written.
    pub async fn shutdown(self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.notify.notify_one();
        if let Err(e) = self.join.await {
            tracing::error!(error = %e, "audit writer task failed");
        }
    }
}

impl std::fmt::Debug for AuditTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTask").finish_non_exhaustive()
    }
}
