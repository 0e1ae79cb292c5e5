//! Applying policy changes: load, validate and compile off the request path, then swap
//! atomically. Requests in flight keep the `Arc<Policy>` they started with; a policy that
//! fails to load leaves the last good one in force (PRODUCT.md §9.1, §10).

use std::sync::Arc;

use crate::audit::{AuditEvent, EventKind};
use crate::policy::{self, Policy, PolicyErrors};
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

/// Loads, validates and compiles the policy at `path`, reusing `prev`'s upstream pools.
/// Every error carries file, line and column.
pub fn load(
    path: &std::path::Path,
    prev: Option<&Policy>,
    observer: Option<Arc<dyn crate::tls::client::ConnectObserver>>,
) -> Result<Policy, PolicyErrors> {
    let loaded = policy::validate::load_and_validate(path)?;
    compile(loaded, prev, observer)
}

fn compile(
    loaded: policy::load::LoadedPolicy,
    prev: Option<&Policy>,
    observer: Option<Arc<dyn crate::tls::client::ConnectObserver>>,
) -> Result<Policy, PolicyErrors> {
    Policy::compile(loaded.model, loaded.hash, prev, observer).map_err(|e| {
        PolicyErrors::from(loaded.locator.error(
            &policy::compile::field_path(&e.path),
            e.message,
            None,
        ))
    })
}

// === impl App ===

impl App {
    /// Re-reads the policy; swaps it in when it changed (or `force`) and is valid;
    /// audits the result. Runs off the request path (a blocking task).
    pub fn reload(self: &Arc<Self>, force: bool) -> Outcome {
        let current = self.policy.load_full();
        let result = policy::load::load(&self.policy_path).and_then(|loaded| {
            if loaded.hash == current.hash && !force {
                return Ok(None);
            }
            let issues = policy::validate::validate(&loaded.model);
            if !issues.is_empty() {
                return Err(PolicyErrors(
                    issues
                        .into_iter()
                        .map(|i| loaded.locator.error(&i.path, i.message, i.hint))
                        .collect(),
                ));
            }
            compile(loaded, Some(&current), Some(self.timing.clone())).map(Some)
        });
        match result {
            Ok(None) => {
                self.metrics.reload("unchanged");
                Outcome::Unchanged
            }
            Ok(Some(p)) if p.hash == current.hash => {
                // Forced reload of identical files: swap (key files may have changed) quietly.
                self.policy.store(Arc::new(p));
                self.metrics.reload("unchanged");
                Outcome::Unchanged
            }
            Ok(Some(p)) => {
                let hash = p.hash.clone();
                self.auditor.set_policy_hash(&hash);
                self.policy.store(Arc::new(p));
                self.policy_generation.send_modify(|g| *g += 1);
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
                let e = e.to_string();
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

/// Watches the policy directory and reloads on change until `shutdown`.
pub fn spawn_watch(app: Arc<App>, shutdown: tokio_util::sync::CancellationToken) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let path = app.policy_path.clone();
    tokio::spawn(async move {
        let watch = policy::watch::watch(
            path,
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(2),
            tx,
        );
        if let Err(e) = watch.await {
            tracing::error!("policy watch stopped: {e}; SIGHUP still reloads");
        }
    });
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = rx.recv() => if r.is_none() { return },
                _ = shutdown.cancelled() => return,
            }
            let a = app.clone();
            let _ = tokio::task::spawn_blocking(move || a.reload(false)).await;
        }
    });
}
