//! Applying policy changes: load, validate and compile off the request path, then swap
//! atomically. Requests in flight keep the `Arc<Policy>` they started with; a policy that
//! fails to load leaves the last good one in force (PRODUCT.md §9.1, §10).

use std::sync::Arc;

use crate::audit::{AuditEvent, EventKind};
use crate::policy::{self, Policy};
use crate::App;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new policy is in force.
    Loaded(String),
    /// The files hash to the active policy; nothing changed.
    Unchanged,
    /// The new files were refused; the old policy stays.
    Rejected(String),
}

/// Loads and compiles the policy at `path`, reusing `prev`'s upstream pools.
pub fn load(path: &std::path::Path, prev: Option<&Policy>) -> Result<Policy, String> {
    let (model, hash) = policy::load_simple(path)?;
    Policy::compile(model, hash, prev, None).map_err(|e| format!("{}: {}", e.path, e.message))
}

// === impl App ===

impl App {
    /// Re-reads the policy; swaps it in when it changed and is valid; audits the result.
    pub fn reload(self: &Arc<Self>) -> Outcome {
        let current = self.policy.load_full();
        match load(&self.policy_path, Some(&current)) {
            Ok(p) if p.hash == current.hash => {
                self.metrics.reload("unchanged");
                Outcome::Unchanged
            }
            Ok(p) => {
                let hash = p.hash.clone();
                self.auditor.set_policy_hash(&hash);
                self.policy.store(Arc::new(p));
                self.metrics.reload("loaded");
                self.auditor.record(AuditEvent {
                    event: EventKind::PolicyLoaded,
                    detail: Some(serde_json::json!({ "previous": current.hash })),
                    ..AuditEvent::default()
                });
                tracing::info!(policy = %hash, "policy reloaded");
                Outcome::Loaded(hash)
            }
            Err(e) => {
                self.metrics.reload("rejected");
                self.auditor.record(AuditEvent {
                    event: EventKind::PolicyRejected,
                    detail: Some(serde_json::json!({ "error": e })),
                    ..AuditEvent::default()
                });
                tracing::error!("policy rejected, keeping {}: {e}", current.hash);
                Outcome::Rejected(e)
            }
        }
    }
}

/// Watches the policy path and reloads on change until `shutdown`.
pub fn spawn_watch(app: Arc<App>, shutdown: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        let mut last = fingerprint(&app.policy_path);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let now = fingerprint(&app.policy_path);
            if now != last {
                last = now;
                let a = app.clone();
                let _ = tokio::task::spawn_blocking(move || a.reload()).await;
            }
        }
    });
}

/// Cheap change detector over the policy files' names, sizes and mtimes.
fn fingerprint(
    path: &std::path::Path,
) -> Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut out = Vec::new();
    let entries: Vec<std::path::PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    } else {
        vec![path.to_path_buf()]
    };
    for p in entries {
        if let Ok(m) = std::fs::metadata(&p) {
            out.push((p, m.len(), m.modified().ok()));
        }
    }
    out.sort();
    out
}
