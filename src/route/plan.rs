//! The attempt plan of one request (PRODUCT.md §7): which target to try next and how long
//! to wait before it.
//!
//! The plan walks the strategy's order (best first). A failed attempt moves on to the next
//! target not yet tried; only when every target has been tried does it come back to the
//! first, and from then on each attempt is a re-try preceded by a backoff (see
//! [`Backoff`]), or by the target's `Retry-After` when that is longer. Attempts are bounded by `retry.attempts` in total (default: one per target in
//! the order) and by the overall deadline: an attempt that could not start before the
//! deadline is not made.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::time::Instant;

use super::retry::{Backoff, RetryPolicy};

/// The attempts of one request, in order.
///
/// ```text
/// let mut plan = AttemptPlan::new(order, &policy);
/// while let Some((target, wait)) = plan.next() {
///     if let Some(wait) = wait { tokio::time::sleep(wait).await }
///     let Some(permit) = breaker_of(target).try_acquire(Instant::now()) else {
///         plan.mark_unavailable();            // circuit opened meanwhile: not an attempt
///         continue;
///     };
///     match send(target, plan.remaining()).await { ... }   // on 429/503: note_retry_after
/// }
/// ```
#[derive(Debug, Clone)]
pub struct AttemptPlan {
    order: Vec<usize>,
    tried: Vec<bool>,
    dropped: Vec<bool>,
    retry_after: Vec<Option<Instant>>,
    cursor: usize,
    last: Option<usize>,
    made: u32,
    max: u32,
    deadline: Instant,
    backoff: Backoff,
    rng: StdRng,
}

// === impl AttemptPlan ===

impl AttemptPlan {
    /// A plan over `order` (target indices, best first) starting now.
    pub fn new(order: Vec<usize>, policy: &RetryPolicy) -> Self {
        Self::with_rng(order, policy, StdRng::from_rng(&mut rand::rng()))
    }

    /// Like [`new`](Self::new) with a given random source for the jitter (tests).
    pub fn with_rng(order: Vec<usize>, policy: &RetryPolicy, rng: StdRng) -> Self {
        let n = order.len();
        let now = Instant::now();
        let deadline = now.checked_add(policy.deadline).unwrap_or(now + DAY);
        Self {
            max: policy.total_attempts(n),
            order,
            tried: vec![false; n],
            dropped: vec![false; n],
            retry_after: vec![None; n],
            cursor: 0,
            last: None,
            made: 0,
            deadline,
            backoff: policy.backoff(),
            rng,
        }
    }

    /// [`Iterator::next`] at a given instant.
    pub fn next_at(&mut self, now: Instant) -> Option<(usize, Option<Duration>)> {
        let n = self.order.len();
        for _ in 0..n {
            if self.made >= self.max {
                return None;
            }
            let pos = self.cursor % n;
            self.cursor = self.cursor.wrapping_add(1);
            if self.dropped[pos] {
                continue;
            }
            let wait = if self.tried[pos] {
                let asked = self.retry_after[pos].map(|t| t.saturating_duration_since(now));
                if asked.is_some_and(|a| now.checked_add(a).is_none_or(|t| t >= self.deadline)) {
                    // This target asked for more time than is left; another may not.
                    self.dropped[pos] = true;
                    continue;
                }
                let w = self.backoff.next_delay(&mut self.rng);
                Some(asked.map_or(w, |a| a.max(w)))
            } else {
                None
            };
            let starts = now.checked_add(wait.unwrap_or_default());
            if starts.is_none_or(|t| t >= self.deadline) {
                return None;
            }
            self.tried[pos] = true;
            self.made += 1;
            self.last = Some(pos);
            return Some((self.order[pos], wait));
        }
        None
    }

    /// The last target answered 429 or 503 with `Retry-After: d`: a re-try of it waits at
    /// least that long (even beyond `max_backoff`; if that passes the deadline the target
    /// is not re-tried).
    pub fn note_retry_after(&mut self, d: Duration) {
        let now = Instant::now();
        if let Some(pos) = self.last {
            self.retry_after[pos] = Some(now.checked_add(d).unwrap_or(self.deadline));
        }
    }

    /// The last target turned out unavailable before anything was sent (its breaker
    /// refused): it leaves the plan and the attempt is given back.
    pub fn mark_unavailable(&mut self) {
        if let Some(pos) = self.last.take() {
            self.dropped[pos] = true;
            self.made = self.made.saturating_sub(1);
        }
    }

    /// When the plan gives up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left until the deadline (bound each attempt's timeouts by it).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Attempts handed out so far.
    pub fn attempts_made(&self) -> u32 {
        self.made
    }

    /// The order the plan walks.
    pub fn order(&self) -> &[usize] {
        &self.order
    }
}

impl Iterator for AttemptPlan {
    type Item = (usize, Option<Duration>);

    /// The next target index and the wait before it (`None` for a target not tried yet);
    /// `None` when attempts, targets or time are exhausted.
    fn next(&mut self) -> Option<Self::Item> {
        self.next_at(Instant::now())
    }
}

const DAY: Duration = Duration::from_secs(86_400);

#[cfg(test)]
mod tests;
