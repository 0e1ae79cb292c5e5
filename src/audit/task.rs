//! The writer loop: drain what is queued, seal each line onto the chain, write the batch with
//! one call, and account for what could not be written.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::chain::{ChainKey, Head, HeadFile};
use super::event::{write_unsealed, AuditEvent, EventKind, Stamp};
use super::sink::Sink;
use super::writer::{Msg, Pending, Shared};

/// At most this many channel messages go into one batch, so a busy channel cannot starve the
/// overflow queue or grow a batch without bound.
const MAX_BATCH: usize = 4096;

/// After writing a batch of more than one event — events arrive faster than they are
/// written — the writer waits this long before it looks again, so a busy proxy's lines go
/// out in a few large writes and its workers seldom have to wake the writer (with every
/// allowed request audited, waking it for each line cost the proxy ~7 µs of CPU per
/// request; docs/benchmarks.md, section 6). A lone event is written at once; shutdown or a
/// full channel ends the wait early.
const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// What one turn of the loop collected.
#[derive(Default)]
struct Batch {
    events: Vec<Pending>,
    acks: Vec<oneshot::Sender<()>>,
}

// === impl Batch ===

impl Batch {
    fn push(&mut self, msg: Msg) {
        match msg {
            Msg::Event(pending) => self.events.push(pending),
            Msg::Flush(ack) => self.acks.push(ack),
        }
    }

    fn len(&self) -> usize {
        self.events.len() + self.acks.len()
    }
}

/// The single writer: owns the sink and the chain head.
pub(crate) struct Writer {
    sink: Box<dyn Sink>,
    key: ChainKey,
    head: Head,
    /// Where the head is saved after each batch (when the key came from a file).
    head_file: Option<HeadFile>,
    shared: Arc<Shared>,
    /// The batch being assembled: whole sealed lines, written with one call.
    buf: Vec<u8>,
    /// Security events of failed batches that no `audit_gap` line has reported yet.
    pending_lost: u64,
    /// `dropped_allowed` as of the last `audit_gap` line written.
    dropped_reported: u64,
    /// Saving the head state failed and was logged; stay quiet until it works again.
    head_save_failing: bool,
}

/// Counts of the events in one batch by class.
#[derive(Default)]
struct Counts {
    security: u64,
    allowed: u64,
}

// === impl Writer ===

impl Writer {
    pub(crate) fn new(sink: Box<dyn Sink>, key: ChainKey, head: Head, shared: Arc<Shared>) -> Self {
        Writer {
            sink,
            head_file: key.head_file().map(HeadFile::new),
            key,
            head,
            shared,
            buf: Vec::with_capacity(64 * 1024),
            pending_lost: 0,
            dropped_reported: 0,
            head_save_failing: false,
        }
    }

    /// Runs until shutdown is requested or every handle is gone, then drains, fsyncs, returns.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut open = true;
        while open && !self.shared.closing.load(Ordering::SeqCst) {
            let mut batch = Batch::default();
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => batch.push(msg),
                    None => open = false,
                },
                () = self.shared.notify.notified() => {}
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(_) => break,
                }
            }
            batch.events.extend(self.shared.take_overflow(false));
            let busy = batch.events.len() > 1;
            self.write(batch);
            if busy {
                tokio::select! {
                    () = tokio::time::sleep(LINGER) => {}
                    () = self.shared.notify.notified() => {}
                }
            }
        }
        // Stop accepting, then write whatever was accepted before.
        rx.close();
        let mut batch = Batch::default();
        while let Ok(msg) = rx.try_recv() {
            batch.push(msg);
        }
        batch.events.extend(self.shared.take_overflow(true));
        self.write(batch);
        if let Err(e) = self.sink.sync() {
            tracing::error!(error = %e, "audit log: fsync at shutdown failed");
        }
        tracing::info!(seq = self.head.seq, hash = %self.head.hash, "audit log closed");
    }

    /// Seals and writes one batch (preceded by an `audit_gap` line when events were lost),
    /// then acknowledges its flush requests whatever happened.
    fn write(&mut self, batch: Batch) {
        let Batch { mut events, acks } = batch;
        // Channel and overflow events interleave in time; keep the log in recording order.
        events.sort_by_key(|p| p.ts);
        let lost = self.pending_lost + self.shared.unreported_lost.swap(0, Ordering::SeqCst);
        let dropped_now = self.shared.dropped_allowed.load(Ordering::SeqCst);
        self.buf.clear();
        let mut head = self.head.clone();
        let mut counts = Counts::default();
        if lost > 0 {
            let gap = AuditEvent {
                event: EventKind::AuditGap,
                detail: Some(serde_json::json!({
                    "lost": lost,
                    "dropped_allowed": dropped_now.saturating_sub(self.dropped_reported),
                })),
                ..AuditEvent::default()
            };
            let policy = self.shared.policy();
            self.append(
                &gap,
                OffsetDateTime::now_utc(),
                policy.as_deref(),
                &mut head,
            );
        }
        for pending in &events {
            let written = self.append(
                &pending.ev,
                pending.ts,
                pending.policy.as_deref(),
                &mut head,
            );
            match (written, pending.ev.event.is_security()) {
                (true, true) => counts.security += 1,
                (true, false) => counts.allowed += 1,
                (false, true) => {
                    self.lose(1);
                    self.shared.unreported_lost.fetch_add(1, Ordering::SeqCst);
                }
                (false, false) => self.drop_allowed(1),
            }
        }
        if !self.buf.is_empty() {
            match self.sink.write_batch(&self.buf) {
                Ok(()) => self.committed(head, lost, dropped_now),
                Err(e) => {
                    tracing::error!(error = %e, lost = counts.security, "audit log write failed");
                    self.lose(counts.security);
                    self.drop_allowed(counts.allowed);
                    // Still unreported: what the gap line would have said, plus this batch.
                    self.pending_lost = lost + counts.security;
                }
            }
        } else {
            self.pending_lost = lost;
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }

    /// Appends one sealed line to the batch buffer, advancing `head`; false if the event
    /// could not be serialized (then nothing was appended).
    fn append(
        &mut self,
        ev: &AuditEvent,
        ts: OffsetDateTime,
        policy: Option<&str>,
        head: &mut Head,
    ) -> bool {
        let start = self.buf.len();
        let seq = head.seq + 1;
        let stamp = Stamp {
            ts,
            seq,
            policy,
            prev: &head.hash,
        };
        if let Err(e) = write_unsealed(&mut self.buf, ev, &stamp) {
            tracing::error!(error = %e, event = %ev.event, "audit event could not be serialized");
            return false;
        }
        let hash = self.key.seal(&mut self.buf, start);
        self.buf.push(b'\n');
        *head = Head { seq, hash };
        true
    }

    /// The batch is in the file: advance the head, publish and save it.
    fn committed(&mut self, head: Head, reported_lost: u64, dropped_now: u64) {
        if reported_lost > 0 {
            self.dropped_reported = dropped_now;
        }
        self.pending_lost = 0;
        self.shared.set_head(head.clone());
        if let Some(file) = &mut self.head_file {
            match file.save(&head) {
                Ok(()) => self.head_save_failing = false,
                Err(e) if !self.head_save_failing => {
                    self.head_save_failing = true;
                    tracing::warn!(path = %file.path().display(), error = %e, "cannot save the audit chain head");
                }
                Err(_) => {}
            }
        }
        self.head = head;
    }

    /// Counts security events that will never be written; the next batch reports them.
    fn lose(&mut self, n: u64) {
        if n > 0 {
            self.shared.lost_security.fetch_add(n, Ordering::SeqCst);
        }
    }

    fn drop_allowed(&mut self, n: u64) {
        if n > 0 {
            self.shared.dropped_allowed.fetch_add(n, Ordering::SeqCst);
        }
    }
}
