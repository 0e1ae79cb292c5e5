//! `llm-egress run`: CA, policy, audit, listeners, signals; then serve until stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEvent, Auditor, ChainKey, EventKind, CHAIN_KEY_FILE};
use crate::metrics::Metrics;
use crate::tls::ca::{CaFiles, CertAuthority};
use crate::App;

/// Options of `run` after CLI and environment parsing.
pub struct RunOptions {
    /// Policy file or directory.
    pub policy: PathBuf,
    /// Proxy listen address (flag or env); None: policy, then default.
    pub listen: Option<SocketAddr>,
    /// Admin listen address.
    pub admin: Option<SocketAddr>,
    /// Directory of the audit chain key, and of the CA unless `ca_dir` is given.
    pub certs: PathBuf,
    /// Read the CA from here (e.g. a mounted Kubernetes Secret); never created.
    pub ca_dir: Option<PathBuf>,
    /// Accept a CA key in `ca_dir` that its group may read (never one others may read).
    pub ca_key_group_readable: bool,
    /// Audit file.
    pub audit: Option<PathBuf>,
    /// How long to drain on shutdown.
    pub drain: Duration,
    /// Proxy worker threads (None: one per CPU).
    pub workers: Option<usize>,
}

/// Default proxy address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8480";
/// Default admin address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:8481";

/// The message of the log line that says the proxy is serving (its fields `proxy` and
/// `admin` hold the bound addresses); see [`listening_addrs`].
pub const LISTENING: &str = "llm-egress listening";

/// The proxy and admin addresses of a JSON log line (`--log-format json`) announcing
/// [`LISTENING`]; `None` for any other line. For supervisors and tests that start the
/// binary on port 0.
pub fn listening_addrs(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let f = &v["fields"];
    if f["message"] != LISTENING {
        return None;
    }
    Some((
        f["proxy"].as_str()?.parse().ok()?,
        f["admin"].as_str()?.parse().ok()?,
    ))
}

/// Runs the proxy until SIGTERM / SIGINT.
pub async fn run(opts: RunOptions) -> Result<()> {
    // Before the listening line: a supervisor may signal as soon as it sees it, and a
    // SIGHUP or SIGTERM that found no handler would kill the process (default action)
    // instead of reloading or draining. Signals that arrive before the handlers run are
    // kept by their streams.
    let signals = Signals::install()?;
    let running = start(opts, CancellationToken::new()).await?;
    signals.spawn(running.app.clone(), running.shutdown.clone());
    crate::reload::spawn_watch(running.app.clone(), running.shutdown.clone());
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    running.finished().await
}

/// A proxy started in this process (by `run`, or by `demo` beside its mock providers).
pub struct Running {
    /// The proxy's state.
    pub app: Arc<App>,
    /// Where the proxy port listens.
    pub proxy: SocketAddr,
    /// Where the admin port listens.
    pub admin: SocketAddr,
    /// The audit file.
    pub audit: PathBuf,
    /// Cancel to stop: drain, then flush the audit log.
    pub shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Running {
    /// Waits until the proxy has stopped (after `shutdown`) and its audit log is flushed.
    pub async fn finished(self) -> Result<()> {
        self.task.await.context("the proxy task panicked")?
    }
}

/// Loads the CA, the policy and the audit log, binds both ports and serves in a task until
/// `shutdown` is cancelled. Signals and the policy watch are the caller's.
pub async fn start(opts: RunOptions, shutdown: CancellationToken) -> Result<Running> {
    // Before the first compile: upstream clients keep one pool per worker.
    crate::proxy::workers::set_count(
        opts.workers
            .unwrap_or_else(crate::proxy::workers::default_count),
    );
    let (files, created) = match &opts.ca_dir {
        // An explicit CA directory (a mounted Secret) is read, never created in.
        Some(dir) => (
            CaFiles::load_checked(dir, opts.ca_key_group_readable)
                .with_context(|| format!("loading the CA from --ca-dir {}", dir.display()))?,
            false,
        ),
        None => CaFiles::load_or_create(&opts.certs)?,
    };
    if created {
        tracing::warn!(
            "created a new local CA in {}; clients must trust it:\n{}",
            opts.certs.display(),
            super::ca::trust_hint(&opts.certs)
        );
    }
    let ca = CertAuthority::new(files)?;
    // Fail closed: no valid policy, no proxy.
    let timing = Arc::new(crate::watchdog::TimingObserver::new(Arc::new(
        crate::route::TimingWatch::new(),
    )));
    let policy = crate::reload::load(&opts.policy, None, Some(timing.clone())).map_err(|e| {
        anyhow::anyhow!(
            "policy {} is not valid; refusing to start:\n{e}",
            opts.policy.display()
        )
    })?;
    let listen = pick(
        opts.listen,
        policy
            .model
            .proxy
            .as_ref()
            .and_then(|p| p.listen.as_deref()),
        DEFAULT_LISTEN,
    )?;
    let admin = pick(
        opts.admin,
        policy.model.proxy.as_ref().and_then(|p| p.admin.as_deref()),
        DEFAULT_ADMIN,
    )?;
    let audit_path = opts
        .audit
        .clone()
        .or_else(|| {
            policy
                .model
                .audit
                .as_ref()
                .and_then(|a| a.path.clone())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("audit/audit.jsonl"));
    let key = ChainKey::load_or_create(&opts.certs.join(CHAIN_KEY_FILE))?;
    let (auditor, audit_task) = Auditor::start(audit_path.clone(), key, 8192).await?;
    auditor.set_policy_hash(&policy.hash);
    let _ = timing.auditor.set(auditor.clone());
    let proxy_l = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding proxy port {listen}"))?;
    let admin_l = TcpListener::bind(admin)
        .await
        .with_context(|| format!("binding admin port {admin}"))?;
    let hash = policy.hash.clone();
    let app = Arc::new(App {
        policy: ArcSwap::from_pointee(policy),
        policy_path: opts.policy.clone(),
        ca,
        auditor: auditor.clone(),
        metrics: Metrics::new(),
        ready: AtomicBool::new(false),
        started: Instant::now(),
        stopping: CancellationToken::new(),
        policy_generation: tokio::sync::watch::channel(0).0,
        tool_schemas: Default::default(),
        breakers: crate::route::BreakerRegistry::new(),
        latency: crate::route::LatencyRegistry::new(),
        timing: timing.clone(),
        workers: Default::default(),
    });
    auditor.record(AuditEvent {
        event: EventKind::PolicyLoaded,
        detail: Some(
            serde_json::json!({ "startup": true, "path": opts.policy.display().to_string() }),
        ),
        ..AuditEvent::default()
    });
    let (seq, head) = auditor.head();
    let (proxy, admin) = (proxy_l.local_addr()?, admin_l.local_addr()?);
    tracing::info!(
        %proxy,
        %admin,
        policy = %hash,
        audit = %audit_path.display(),
        audit_seq = seq,
        audit_head = %head,
        "{LISTENING}"
    );
    let serve = app
        .clone()
        .run(proxy_l, admin_l, shutdown.clone(), opts.drain);
    let task = tokio::spawn(async move {
        serve.await.context("serving the proxy port")?;
        audit_task.shutdown().await;
        let (seq, head) = auditor.head();
        tracing::info!(audit_seq = seq, audit_head = %head, "stopped; audit log flushed");
        Ok(())
    });
    Ok(Running {
        app,
        proxy,
        admin,
        audit: audit_path,
        shutdown,
        task,
    })
}

fn pick(flag: Option<SocketAddr>, policy: Option<&str>, default: &str) -> Result<SocketAddr> {
    if let Some(a) = flag {
        return Ok(a);
    }
    let s = policy.unwrap_or(default);
    s.parse()
        .with_context(|| format!("{s:?} is not an address:port"))
}

/// The proxy's SIGTERM, SIGINT and SIGHUP handlers, installed before it serves.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// SIGHUP reloads the policy; SIGTERM or SIGINT starts the drain.
    fn spawn(self, app: Arc<App>, shutdown: CancellationToken) {
        let Signals {
            mut term,
            mut int,
            mut hup,
        } = self;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading policy");
                        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                        let a = app.clone();
                        let _ = tokio::task::spawn_blocking(move || a.reload(true)).await;
                        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                    }
                }
            }
            tracing::info!("shutting down: draining in-flight requests");
            // systemd: stopping starts now (the drain may take up to --drain-seconds).
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            shutdown.cancel();
        });
    }
}
