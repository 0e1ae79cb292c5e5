//! Retry settings of a route and the backoff between re-tries (PRODUCT.md §7).
//!
//! Backoff uses *decorrelated jitter* (the AWS Architecture Blog's "Exponential Backoff
//! And Jitter"): each wait is drawn uniformly from `[backoff, 3 × previous wait]` and capped
//! at `max_backoff`, starting from `previous = backoff`. Waits therefore grow roughly
//! exponentially, never fall below `backoff` (a re-tried target always gets a breather),
//! never exceed `max_backoff`, and concurrent clients spread out instead of retrying in
//! lock-step.

use std::time::Duration;

use rand::Rng;

use crate::policy::model::Retry;

/// Statuses that count as failures when a route has no `retry.on`.
pub const DEFAULT_RETRY_ON: [u16; 6] = [429, 500, 502, 503, 504, 529];

/// First backoff when a route sets none.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(200);

/// Backoff cap when a route sets none.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Overall deadline when a route sets none: generous, because a reasoning model may think
/// for minutes before its first byte (the provider `first_byte` timeout defaults to 600s).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(900);

/// A route's resolved retry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total across all targets; `None`: one per available target.
    pub attempts: Option<u32>,
    /// Statuses that are failures (retried elsewhere, counted by the breaker).
    pub on: Vec<u16>,
    /// First backoff before re-trying a target already tried.
    pub backoff: Duration,
    /// Backoff cap (a `Retry-After` may ask for more and is honoured).
    pub max_backoff: Duration,
    /// Overall deadline for all attempts, from the start of the plan.
    pub deadline: Duration,
}

/// Decorrelated-jitter backoff state; one per attempt plan.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    prev: Duration,
}

// === impl RetryPolicy ===

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: None,
            on: DEFAULT_RETRY_ON.to_vec(),
            backoff: DEFAULT_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            deadline: DEFAULT_DEADLINE,
        }
    }
}

impl RetryPolicy {
    /// A route's `retry` table with defaults filled in.
    pub fn from_model(retry: Option<&Retry>) -> Self {
        let mut p = Self::default();
        if let Some(r) = retry {
            p.attempts = r.attempts.map(|n| n.max(1));
            if let Some(on) = &r.on {
                p.on.clone_from(on);
            }
            if let Some(b) = r.backoff {
                p.backoff = b.0;
            }
            if let Some(m) = r.max_backoff {
                p.max_backoff = m.0;
            }
            if let Some(d) = r.deadline {
                p.deadline = d.0;
            }
        }
        p.max_backoff = p.max_backoff.max(p.backoff);
        p
    }

    /// Whether an upstream status is a failure that moves on to the next attempt.
    pub fn is_retryable_status(&self, status: u16) -> bool {
        self.on.contains(&status)
    }

    /// Attempts in total for a plan over `targets` available targets: `attempts` when
    /// set, else one per target.
    pub fn total_attempts(&self, targets: usize) -> u32 {
        self.attempts
            .unwrap_or_else(|| u32::try_from(targets).unwrap_or(u32::MAX))
    }

    /// Fresh backoff state for one plan.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff, self.max_backoff)
    }
}

// === impl Backoff ===

impl Backoff {
    /// Waits start at `base` and are capped at `cap` (at least `base`).
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            prev: base,
        }
    }

    /// The next wait: uniform in `[base, 3 × previous]`, capped.
    pub fn next_delay<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let lo = self.base.as_nanos();
        let hi = self.prev.saturating_mul(3).as_nanos().max(lo);
        let pick = if hi > lo {
            rng.random_range(lo..=hi)
        } else {
            lo
        };
        let pick = Duration::from_nanos(u64::try_from(pick).unwrap_or(u64::MAX));
        let d = pick.min(self.cap);
        self.prev = d;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::Dur;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn defaults_without_a_retry_table() {
        let p = RetryPolicy::from_model(None);
        assert_eq!(p.on, [429, 500, 502, 503, 504, 529]);
        assert_eq!(p.backoff, Duration::from_millis(200));
        assert_eq!(p.max_backoff, Duration::from_secs(5));
        assert_eq!(p.deadline, Duration::from_secs(900));
        assert_eq!(p.total_attempts(3), 3);
        assert!(p.is_retryable_status(529));
        assert!(!p.is_retryable_status(400));
        assert!(!p.is_retryable_status(200));
    }

    #[test]
    fn a_retry_table_overrides() {
        let r = Retry {
            attempts: Some(5),
            on: Some(vec![503]),
            backoff: Some(Dur(Duration::from_millis(50))),
            max_backoff: None,
            deadline: Some(Dur(Duration::from_secs(60))),
        };
        let p = RetryPolicy::from_model(Some(&r));
        assert_eq!(p.total_attempts(2), 5);
        assert!(p.is_retryable_status(503));
        assert!(!p.is_retryable_status(429));
        assert_eq!(p.backoff, Duration::from_millis(50));
        assert_eq!(p.max_backoff, Duration::from_secs(5));
        assert_eq!(p.deadline, Duration::from_secs(60));
    }

    #[test]
    fn backoff_grows_within_base_and_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        let base = Duration::from_millis(200);
        let cap = Duration::from_secs(2);
        let mut b = Backoff::new(base, cap);
        let delays: Vec<Duration> = (0..50).map(|_| b.next_delay(&mut rng)).collect();
        assert!(delays.iter().all(|d| *d >= base && *d <= cap));
        assert!(delays[0] <= base * 3);
        assert!(delays.contains(&cap), "reaches the cap: {delays:?}");
    }

    #[test]
    fn backoff_equal_base_and_cap_is_constant() {
        let mut rng = StdRng::seed_from_u64(1);
        let d = Duration::from_millis(100);
        let mut b = Backoff::new(d, d);
        assert!((0..10).all(|_| b.next_delay(&mut rng) == d));
    }
}
