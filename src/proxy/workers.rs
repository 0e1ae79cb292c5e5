//! Thread per core: the proxy port is served by `N` worker threads, each running its own
//! single-threaded tokio runtime and accepting from the same listening socket.
//!
//! A connection lives on the worker that accepted it, and so do the upstream connections
//! it uses: every upstream client keeps one pool per worker ([`current`] picks it), so a
//! request, its upstream exchange and the response travel through one thread without
//! cross-thread wake-ups. On a small machine shared with the application this is what
//! keeps the proxy's CPU per request low (docs/benchmarks.md, "Optimizations").
//!
//! Admin, reload and signal handling stay on the main runtime.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::App;

/// Most workers accepted by `--workers`.
pub const MAX_WORKERS: usize = 256;

static COUNT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many workers this process runs (1 until [`set_count`]); upstream clients keep one
/// pool per worker.
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// Sets the worker count; call before the first policy is compiled.
pub fn set_count(n: usize) {
    COUNT.store(n.clamp(1, MAX_WORKERS), Ordering::Relaxed);
}

/// The index of the worker running on this thread (0 off the worker threads).
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// The default worker count: the CPUs this process may use (cgroup quotas included).
pub fn default_count() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS)
}

/// Running workers.
pub struct Workers {
    accepting: Vec<tokio::sync::oneshot::Receiver<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Starts [`count`] workers accepting from `listener` until `stop_accepting` fires.
/// Connections are tracked by `tracker` (for the drain) and cut when `kill` fires; each
/// worker thread ends once `tracker` is closed and empty.
pub fn start(
    listener: std::net::TcpListener,
    app: Arc<App>,
    stop_accepting: CancellationToken,
    kill: CancellationToken,
    tracker: TaskTracker,
) -> std::io::Result<Workers> {
    listener.set_nonblocking(true)?;
    let limit = Arc::new(Semaphore::new(app.policy.load().limits.max_connections));
    let mut accepting = Vec::new();
    let mut threads = Vec::new();
    for i in 0..count() {
        let l = listener.try_clone()?;
        let (app, stop, kill, tracker, limit) = (
            app.clone(),
            stop_accepting.clone(),
            kill.clone(),
            tracker.clone(),
            limit.clone(),
        );
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let t = std::thread::Builder::new()
            .name(format!("llm-egress-w{i}"))
            .spawn(move || {
                INDEX.with(|c| c.set(i));
                rt.block_on(async move {
                    tokio::spawn(keep_timer_armed());
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => {
                            super::listener::serve_until(l, app, limit, stop, kill, tracker.clone())
                                .await
                        }
                        Err(e) => tracing::error!(worker = i, "cannot register the listener: {e}"),
                    }
                    let _ = done_tx.send(());
                    // Keep serving this worker's connections through the drain.
                    tracker.wait().await;
                });
            })?;
        accepting.push(done_rx);
        threads.push(t);
    }
    Ok(Workers { accepting, threads })
}

/// How often [`keep_timer_armed`] ticks: shorter than any per-request timeout.
const TIMER_ANCHOR: std::time::Duration = std::time::Duration::from_millis(500);

/// Keeps one timer pending on this worker for as long as it runs.
///
/// Tokio's timer wakes its own thread (an `eventfd` write, then one more `epoll_wait`)
/// whenever a new timer is due before the earliest one it is already waiting for — and
/// with none pending, every new timer is. hyper arms a header-read timer for each request
/// and the proxy a first-byte timer, so an otherwise idle worker paid an extra wake-up
/// per request (docs/benchmarks.md, "Optimizations"). With this tick pending, later
/// deadlines are simply filed away. Cost: two wake-ups a second per idle worker.
async fn keep_timer_armed() {
    let mut tick = tokio::time::interval(TIMER_ANCHOR);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

// === impl Workers ===

impl Workers {
    /// Waits until every worker has stopped accepting.
    pub async fn stopped_accepting(&mut self) {
        for rx in self.accepting.drain(..) {
            let _ = rx.await;
        }
    }

    /// Waits for the worker threads to end (after the tracker is closed and empty).
    pub async fn join(self) {
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}
