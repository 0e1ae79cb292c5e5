//! `llm-egress`: a TLS-inspecting egress proxy for OpenAI-compatible LLM APIs.
//!
//! A request's path through the code: `proxy::listener` accepts and reads the first
//! head → `proxy::connect` (CONNECT: deny, tunnel, or TLS with a leaf from `tls::ca`) →
//! `proxy::pipeline` (authority check, `proxy::url` normalization, the `policy`
//! allowlist, forward over `tls::client` whose verifier is `tls::verify`) → the response
//! streams back. Refusals are `error::ProxyError`s and land in the `audit` log.

pub mod addr;
pub mod admin;
pub mod audit;
pub mod cli;
pub mod error;
pub mod metrics;
pub mod mock_provider;
pub mod openai;
pub mod policy;
pub mod protect;
pub mod proxy;
pub mod reload;
pub mod route;
mod sparse;
pub mod tls;
pub mod tokens;
pub mod toolcalls;
pub mod watchdog;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use audit::Auditor;
use metrics::Metrics;
use policy::Policy;
use tls::ca::CertAuthority;

/// Shared state of a running proxy.
pub struct App {
    /// The active policy; requests load it once and keep it to the end.
    pub policy: ArcSwap<Policy>,
    /// Where the policy is read from.
    pub policy_path: PathBuf,
    /// The leaf-minting CA.
    pub ca: CertAuthority,
    /// The audit log handle.
    pub auditor: Auditor,
    /// Process metrics.
    pub metrics: Metrics,
    /// Set once listeners are bound and a policy is loaded.
    pub ready: AtomicBool,
    /// Process start.
    pub started: Instant,
    /// Circuit breakers per provider (survive reloads).
    pub breakers: route::BreakerRegistry,
    /// Recent latency per provider, for `fastest`.
    pub latency: route::LatencyRegistry,
    /// Handshake and time-to-headers baselines per endpoint, audited on departure.
    pub timing: Arc<watchdog::TimingObserver>,
    /// Compiled tool schemas, shared across requests.
    pub tool_schemas: Arc<toolcalls::SchemaCache>,
    /// Bumped on every policy swap, so long-lived tunnels can re-check their host.
    pub policy_generation: tokio::sync::watch::Sender<u64>,
    /// Fires when the proxy stops accepting: connections finish their in-flight
    /// requests and close (graceful shutdown).
    pub stopping: CancellationToken,
    /// Live connections per proxy worker.
    pub workers: proxy::workers::Load,
}

// === impl App ===

impl App {
    /// Serves the proxy and admin listeners until `shutdown`, then stops accepting and
    /// drains in-flight connections for up to `drain`.
    pub async fn run(
        self: Arc<Self>,
        proxy: TcpListener,
        admin: TcpListener,
        shutdown: CancellationToken,
        drain: Duration,
    ) -> std::io::Result<()> {
        let tracker = TaskTracker::new();
        let conn_shutdown = CancellationToken::new();
        let workers = proxy.into_std().and_then(|l| {
            proxy::workers::start(
                l,
                self.clone(),
                shutdown.clone(),
                conn_shutdown.clone(),
                tracker.clone(),
            )
        });
        let mut workers = workers?;
        let admin_task = tokio::spawn(admin::serve(admin, self.clone(), conn_shutdown.clone()));
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        shutdown.cancelled().await;
        self.stopping.cancel();
        self.ready
            .store(false, std::sync::atomic::Ordering::Release);
        workers.stopped_accepting().await;
        tracker.close();
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            tracing::warn!("drain deadline passed; closing remaining connections");
        }
        conn_shutdown.cancel();
        workers.join().await;
        let _ = admin_task.await;
        Ok(())
    }
}
