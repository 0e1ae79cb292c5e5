//! Races a connection against a cancellation token without asking the token on every
//! wake-up of the connection.
//!
//! `tokio::select!` over a connection and `token.cancelled()` polls both whenever the task
//! wakes, and a connection's task wakes several times per request (socket readiness, the
//! upstream answer, timers). Polling a `CancellationToken` future takes its node's mutex
//! (`is_cancelled`) and the `Notified` waiter list: ~1 % of the proxy's CPU at 16
//! connections with the two tokens every inspected connection watches (docs/benchmarks.md).
//! [`Cancellable`] gives the token's future a waker of its own and polls it only after that
//! waker fired.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// `fut` until it completes (`Some`) or `token` is cancelled (`None`, `fut` is left
/// unfinished).
pub struct Cancellable<F> {
    fut: F,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    signal: Arc<Signal>,
    waker: Waker,
}

/// Set when the token's future may have become ready; wakes the task polling us.
#[derive(Default)]
struct Signal {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

// === impl Cancellable ===

impl<F: Future + Unpin> Cancellable<F> {
    /// Races `fut` against `token`.
    pub fn new(fut: F, token: CancellationToken) -> Self {
        let signal = Arc::new(Signal::default());
        // The first poll asks the token (and registers the waker with it).
        signal.fired.store(true, Ordering::Relaxed);
        Cancellable {
            fut,
            cancelled: Box::pin(token.cancelled_owned()),
            waker: Waker::from(signal.clone()),
            signal,
        }
    }
}

impl<F: Future + Unpin> Future for Cancellable<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // Registered before the flag is read: a cancellation after the read wakes this task.
        this.signal.task.register(cx.waker());
        if this.signal.fired.swap(false, Ordering::AcqRel) {
            let mut own = Context::from_waker(&this.waker);
            if this.cancelled.as_mut().poll(&mut own).is_ready() {
                return Poll::Ready(None);
            }
        }
        Pin::new(&mut this.fut).poll(cx).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_future_finishes_when_nothing_cancels_it() {
        let token = CancellationToken::new();
        let fut = Box::pin(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            7
        });
        assert_eq!(Cancellable::new(fut, token).await, Some(7));
    }

    #[tokio::test]
    async fn a_token_cancelled_before_the_first_poll_wins() {
        let token = CancellationToken::new();
        token.cancel();
        let fut = Box::pin(std::future::pending::<()>());
        assert_eq!(Cancellable::new(fut, token).await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancel_from_another_thread_ends_a_pending_future_promptly() {
        for _ in 0..200 {
            let token = CancellationToken::new();
            let t = token.clone();
            let canceller = std::thread::spawn(move || t.cancel());
            let fut = Box::pin(std::future::pending::<()>());
            let r = tokio::time::timeout(Duration::from_secs(5), Cancellable::new(fut, token))
                .await
                .expect("the cancellation was not seen");
            assert_eq!(r, None);
            canceller.join().expect("canceller");
        }
    }

    #[tokio::test]
    async fn the_future_keeps_running_and_is_left_to_the_caller_after_a_cancel() {
        let token = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(4);
        let t = token.clone();
        let fut = Box::pin(async move {
            let mut seen = 0;
            while let Some(n) = rx.recv().await {
                seen += n;
                if seen >= 3 {
                    t.cancel();
                }
            }
            seen
        });
        let mut fut = fut;
        for n in [1, 2] {
            tx.send(n).await.expect("send");
        }
        assert_eq!(Cancellable::new(fut.as_mut(), token).await, None);
        // The caller finishes it (as the drain does with a graceful shutdown).
        drop(tx);
        assert_eq!(fut.await, 3);
    }
}
