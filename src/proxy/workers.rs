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
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::listener::{Accepted, AcceptedStd};
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

/// Live connections per worker, for `/metrics` (empty until the workers start).
#[derive(Default)]
pub struct Load(OnceLock<Arc<[AtomicUsize]>>);

// === impl Load ===

impl Load {
    /// The live connection count of each worker, by index.
    pub fn snapshot(&self) -> Vec<usize> {
        self.0.get().map_or_else(Vec::new, |live| {
            live.iter().map(|n| n.load(Ordering::Relaxed)).collect()
        })
    }
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
    let n = count();
    let live: Arc<[AtomicUsize]> = (0..n).map(|_| AtomicUsize::new(0)).collect();
    let live = app.workers.0.get_or_init(|| live).clone();
    let (senders, mut receivers): (Vec<_>, Vec<_>) =
        (0..n).map(|_| mpsc::unbounded_channel()).unzip();
    let senders: Arc<[_]> = senders.into();
    let mut accepting = Vec::new();
    let mut threads = Vec::new();
    for (i, mut handoffs) in receivers.drain(..).enumerate() {
        let l = listener.try_clone()?;
        let spread = Spread {
            me: i,
            live: live.clone(),
            to: senders.clone(),
            local: Local {
                tracker: tracker.clone(),
                kill: kill.clone(),
            },
        };
        let (app, stop, tracker, limit) = (
            app.clone(),
            stop_accepting.clone(),
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
                    // Connections other workers accepted for this one; ends once every
                    // worker has stopped accepting (the senders are gone).
                    let local = spread.local.clone();
                    tracker.spawn(async move {
                        while let Some((a, guard)) = handoffs.recv().await {
                            local.serve_std(a, guard);
                        }
                    });
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => super::listener::serve_until(l, app, limit, stop, spread).await,
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

/// Hands each accepted connection to the worker serving the fewest.
///
/// Workers share one listening socket, and whichever is awake accepts: a burst of new
/// connections (a client opening its pool) all lands on the first worker to wake, leaving
/// the others idle while it saturates its core. Spreading by live connection count keeps
/// the load even; a handoff costs one channel send and an epoll re-registration, once
/// per connection.
pub struct Spread {
    me: usize,
    live: Arc<[AtomicUsize]>,
    to: Arc<[mpsc::UnboundedSender<(AcceptedStd, LiveGuard)>]>,
    local: Local,
}

/// Serves connections on the worker it was made on.
#[derive(Clone)]
struct Local {
    tracker: TaskTracker,
    kill: CancellationToken,
}

/// One live connection of a worker: counted from the moment it is assigned until it ends.
pub struct LiveGuard(Arc<[AtomicUsize]>, usize);

impl LiveGuard {
    fn new(live: Arc<[AtomicUsize]>, worker: usize) -> Self {
        live[worker].fetch_add(1, Ordering::Relaxed);
        LiveGuard(live, worker)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Spread ===

impl Spread {
    /// Serves `a` here, or hands it to the worker with the fewest live connections
    /// (this one on a tie).
    pub fn dispatch(&self, a: Accepted) {
        let target = least_loaded(&self.live, self.me);
        // Counted at once, so a burst of accepts spreads before the handoffs land.
        let guard = LiveGuard::new(self.live.clone(), target);
        if target == self.me {
            return self.local.serve(a, guard);
        }
        match a.into_std().map(|a| self.to[target].send((a, guard))) {
            Ok(Ok(())) => {}
            // The target is gone (shutting down): serve it here.
            Ok(Err(mpsc::error::SendError((a, _)))) => self
                .local
                .serve_std(a, LiveGuard::new(self.live.clone(), self.me)),
            Err(e) => tracing::warn!("cannot hand over a connection: {e}"),
        }
    }
}

// === impl Local ===

impl Local {
    fn serve(&self, a: Accepted, guard: LiveGuard) {
        a.serve(&self.tracker, self.kill.clone(), guard);
    }

    /// Registers a connection another worker accepted with this worker's reactor, then
    /// serves it.
    fn serve_std(&self, a: AcceptedStd, guard: LiveGuard) {
        match a.register() {
            Ok(a) => self.serve(a, guard),
            Err(e) => tracing::warn!("cannot register a connection: {e}"),
        }
    }
}

/// The index of the smallest count, preferring `me` among equals.
fn least_loaded(live: &[AtomicUsize], me: usize) -> usize {
    let mut best = (live[me].load(Ordering::Relaxed), me);
    for (i, n) in live.iter().enumerate() {
        let n = n.load(Ordering::Relaxed);
        if n < best.0 {
            best = (n, i);
        }
    }
    best.1
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_loaded_worker_is_chosen_and_a_tie_keeps_the_connection_here() {
        let live =
            |v: &[usize]| -> Vec<AtomicUsize> { v.iter().map(|&n| AtomicUsize::new(n)).collect() };
        assert_eq!(least_loaded(&live(&[0, 0, 0]), 1), 1);
        assert_eq!(least_loaded(&live(&[1, 0, 0]), 0), 1);
        assert_eq!(least_loaded(&live(&[3, 2, 1]), 1), 2);
        assert_eq!(least_loaded(&live(&[2, 2, 5]), 2), 0);
        assert_eq!(least_loaded(&live(&[7]), 0), 0);
    }
}
