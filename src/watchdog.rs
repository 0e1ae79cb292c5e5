//! The timing watch wired to the audit log (PRODUCT.md §7): each new upstream TLS
//! handshake and each time-to-headers is compared with that endpoint's own baseline; a
//! departure writes one `timing_anomaly` line. Together with pins, this is how a new hop
//! on the path is noticed.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::audit::{AuditEvent, Auditor, EventKind};
use crate::route::{Metric, TimingWatch};
use crate::tls::client::ConnectObserver;

/// Feeds the timing watch and audits anomalies.
pub struct TimingObserver {
    /// The watch (also read by the admin API).
    pub watch: Arc<TimingWatch>,
    /// Set once the audit log is open.
    pub auditor: OnceLock<Auditor>,
}

// === impl TimingObserver ===

impl TimingObserver {
    /// A new observer over `watch`.
    pub fn new(watch: Arc<TimingWatch>) -> Self {
        TimingObserver {
            watch,
            auditor: OnceLock::new(),
        }
    }

    /// Records one sample; audits an anomaly.
    pub fn observe(&self, host: &str, port: u16, metric: Metric, d: Duration) {
        let endpoint = format!("{host}:{port}");
        if let Some(a) = self.watch.observe(&endpoint, metric, d) {
            tracing::warn!(
                endpoint,
                metric = metric.as_str(),
                "timing anomaly: {}",
                serde_json::to_string(&a).unwrap_or_default()
            );
            if let Some(aud) = self.auditor.get() {
                aud.record(AuditEvent {
                    event: EventKind::TimingAnomaly,
                    reason: Some(format!("{}_slower", metric.as_str())),
                    host: Some(host.to_owned()),
                    port: Some(port),
                    detail: serde_json::to_value(&a).ok(),
                    ..AuditEvent::default()
                });
            }
        }
    }
}

impl ConnectObserver for TimingObserver {
    fn handshake(&self, host: &str, port: u16, elapsed: Duration) {
        self.observe(host, port, Metric::TlsHandshake, elapsed);
    }
}
