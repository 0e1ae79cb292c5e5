//! The breaker's state machine and sliding window, behind [`Breaker`](super::Breaker)'s
//! lock. Every method here runs with the lock held and does only arithmetic.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::{BreakerConfig, OpenReason, Outcome, Transition, MAX_WINDOW_SAMPLES, P99_MIN_SAMPLES};

/// Mutable state of one breaker.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) cfg: BreakerConfig,
    pub(super) phase: Phase,
    /// Bumped on every phase change, so results of attempts admitted in an earlier phase
    /// are ignored.
    pub(super) epoch: u64,
    pub(super) consecutive: u32,
    pub(super) window: VecDeque<Sample>,
    pub(super) failures: u32,
    pub(super) latency_samples: u32,
    /// Latency samples above `p99_latency`: p99 > threshold iff enough of them exist.
    pub(super) slow: u32,
    pub(super) opened_at: Option<Instant>,
    pub(super) reason: Option<OpenReason>,
}

/// Where the circuit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Closed,
    Open,
    HalfOpen { in_flight: u32, succeeded: u32 },
}

/// One request in the window.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    at: Instant,
    failed: bool,
    ttfb: Option<Duration>,
}

// === impl Inner ===

impl Inner {
    pub(super) fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            phase: Phase::Closed,
            epoch: 0,
            consecutive: 0,
            window: VecDeque::new(),
            failures: 0,
            latency_samples: 0,
            slow: 0,
            opened_at: None,
            reason: None,
        }
    }

    pub(super) fn open_elapsed(&self, now: Instant) -> bool {
        self.opened_at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.cfg.open_for)
    }

    pub(super) fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.epoch = self.epoch.wrapping_add(1);
    }

    pub(super) fn release_probe(&mut self) {
        if let Phase::HalfOpen { in_flight, .. } = &mut self.phase {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    pub(super) fn record_closed(&mut self, outcome: Outcome, now: Instant) -> Option<Transition> {
        let (failed, ttfb) = match outcome {
            Outcome::ClientError => return None,
            Outcome::Success { ttfb } => (false, Some(ttfb)),
            Outcome::Failure { ttfb } => (true, ttfb),
        };
        self.consecutive = if failed {
            self.consecutive.saturating_add(1)
        } else {
            0
        };
        self.prune(now);
        self.push(Sample {
            at: now,
            failed,
            ttfb,
        });
        let reason = self.trip_reason()?;
        self.open(reason, now)
    }

    pub(super) fn record_probe(&mut self, outcome: Outcome, now: Instant) -> Option<Transition> {
        let Phase::HalfOpen {
            in_flight,
            succeeded,
        } = &mut self.phase
        else {
            return None;
        };
        match outcome {
            Outcome::ClientError => {
                *in_flight = in_flight.saturating_sub(1);
                None
            }
            Outcome::Failure { .. } => self.open(OpenReason::ProbeFailed, now),
            Outcome::Success { .. } => {
                *in_flight = in_flight.saturating_sub(1);
                *succeeded = succeeded.saturating_add(1);
                if *succeeded < self.cfg.half_open_probes.max(1) {
                    return None;
                }
                self.set_phase(Phase::Closed);
                self.reset_window();
                self.opened_at = None;
                self.reason = None;
                Some(Transition::Closed)
            }
        }
    }

    fn trip_reason(&self) -> Option<OpenReason> {
        if self.consecutive >= self.cfg.consecutive_failures.max(1) {
            return Some(OpenReason::ConsecutiveFailures);
        }
        let requests = len_u32(self.window.len());
        if requests >= self.cfg.min_requests.max(1)
            && f64::from(self.failures) / f64::from(requests) >= self.cfg.failure_rate
        {
            return Some(OpenReason::FailureRate);
        }
        let n = self.latency_samples;
        if self.cfg.p99_latency.is_some() && n >= P99_MIN_SAMPLES {
            // Nearest rank: p99 is the k-th smallest, k = ceil(0.99 n); it is above the
            // threshold iff at least n - k + 1 samples are.
            let k = (u64::from(n) * 99).div_ceil(100);
            if u64::from(self.slow) > u64::from(n) - k {
                return Some(OpenReason::P99Latency);
            }
        }
        None
    }

    pub(super) fn open(&mut self, reason: OpenReason, now: Instant) -> Option<Transition> {
        self.set_phase(Phase::Open);
        self.opened_at = Some(now);
        self.reason = Some(reason);
        self.consecutive = 0;
        Some(Transition::Opened { reason })
    }

    fn is_slow(&self, ttfb: Option<Duration>) -> bool {
        matches!((ttfb, self.cfg.p99_latency), (Some(d), Some(t)) if d > t)
    }

    fn push(&mut self, s: Sample) {
        if self.window.len() >= MAX_WINDOW_SAMPLES {
            self.pop_oldest();
        }
        self.failures += u32::from(s.failed);
        self.latency_samples += u32::from(s.ttfb.is_some());
        self.slow += u32::from(self.is_slow(s.ttfb));
        self.window.push_back(s);
    }

    fn pop_oldest(&mut self) {
        if let Some(s) = self.window.pop_front() {
            self.failures = self.failures.saturating_sub(u32::from(s.failed));
            self.latency_samples = self
                .latency_samples
                .saturating_sub(u32::from(s.ttfb.is_some()));
            self.slow = self.slow.saturating_sub(u32::from(self.is_slow(s.ttfb)));
        }
    }

    pub(super) fn prune(&mut self, now: Instant) {
        while self
            .window
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) > self.cfg.window)
        {
            self.pop_oldest();
        }
    }

    fn reset_window(&mut self) {
        self.window.clear();
        self.failures = 0;
        self.latency_samples = 0;
        self.slow = 0;
        self.consecutive = 0;
    }

    pub(super) fn recount_slow(&mut self) {
        let slow = self.window.iter().filter(|s| self.is_slow(s.ttfb)).count();
        self.slow = len_u32(slow);
    }

    pub(super) fn p99(&self) -> Option<Duration> {
        let mut v: Vec<Duration> = self.window.iter().filter_map(|s| s.ttfb).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let k = (v.len() * 99).div_ceil(100).max(1);
        v.get(k - 1).copied()
    }
}

pub(super) fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
