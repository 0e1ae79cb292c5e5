//! Per-provider circuit breaker (PRODUCT.md §7): a small state machine, driven by the
//! caller's clock so it can be tested on paused time.
//!
//! closed → open on `consecutive_failures` failures in a row, on a failure rate at or above
//! `failure_rate` once the sliding window holds `min_requests` requests, or on the window's
//! p99 time to first byte above `p99_latency` once it holds 100 latency samples.
//! open → half-open after `open_for`: up to `half_open_probes` concurrent probes are let
//! through; when that many have succeeded the circuit closes with a fresh window, and any
//! probe failure opens it again. Client errors (other 4xx) are neutral: they neither count
//! as failures nor as requests, and they give back a probe slot.
//!
//! The state sits behind a `std::sync::Mutex` that is only held for a few arithmetic steps,
//! never across an await. Breakers live in a [`BreakerRegistry`] keyed by provider name,
//! which outlives policy reloads.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::policy::model::BreakerSection;

mod machine;
mod registry;

use machine::{len_u32, Inner, Phase};
pub use registry::BreakerRegistry;

/// The p99 trip is evaluated only once the window holds this many latency samples.
pub const P99_MIN_SAMPLES: u32 = 100;

/// The window keeps at most this many samples (the oldest are dropped first), so a very
/// busy provider cannot grow it without bound.
pub const MAX_WINDOW_SAMPLES: usize = 65_536;

/// Resolved breaker settings of one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// Open when the window's failure rate reaches this (0.0 to 1.0) …
    pub failure_rate: f64,
    /// … given at least this many requests in the window.
    pub min_requests: u32,
    /// Sliding window length.
    pub window: Duration,
    /// Open when the window's p99 time to first byte passes this; `None` disables the rule.
    pub p99_latency: Option<Duration>,
    /// How long the circuit stays open before probes are let through.
    pub open_for: Duration,
    /// Probes admitted (and successes needed to close) while half-open.
    pub half_open_probes: u32,
}

/// What one admitted request turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A good response; `ttfb` is the time to its first body byte (for streams, the first
    /// event).
    Success {
        /// Time to first byte.
        ttfb: Duration,
    },
    /// A retry status, a connect error or a timeout; `ttfb` when a response came at all.
    Failure {
        /// Time to first byte, if any byte came.
        ttfb: Option<Duration>,
    },
    /// Another 4xx: the client's fault. Not counted; gives back a probe slot.
    ClientError,
}

/// Why a circuit opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenReason {
    /// `consecutive_failures` failures in a row.
    ConsecutiveFailures,
    /// The window's failure rate reached `failure_rate`.
    FailureRate,
    /// The window's p99 time to first byte passed `p99_latency`.
    P99Latency,
    /// A half-open probe failed.
    ProbeFailed,
}

/// A state change, for the audit log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// closed or half-open → open.
    Opened {
        /// Which rule tripped.
        reason: OpenReason,
    },
    /// open → half-open (reported by the first probe's [`Attempt::transition`]).
    HalfOpened,
    /// half-open → closed.
    Closed,
}

/// The state as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Requests flow.
    Closed,
    /// Requests are refused until `open_for` has passed.
    Open,
    /// A few probes decide (also reported once `open_for` has passed and no probe has
    /// been made yet).
    HalfOpen,
}

/// A breaker's state for the admin API.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerState {
    /// Closed, open or half-open.
    pub state: CircuitState,
    /// Failures in a row so far (closed only).
    pub consecutive_failures: u32,
    /// Requests in the window (client errors excluded).
    pub window_requests: u32,
    /// Failures in the window.
    pub window_failures: u32,
    /// Time-to-first-byte samples in the window.
    pub latency_samples: u32,
    /// The window's p99 time to first byte (nearest rank), when it has any sample.
    pub p99: Option<Duration>,
    /// When the circuit last opened, while open or half-open.
    pub opened_at: Option<Instant>,
    /// Why it last opened, while open or half-open.
    pub reason: Option<OpenReason>,
    /// Probes in flight while half-open.
    pub probes_in_flight: u32,
}

/// Permission to send one request, handed back through [`Breaker::record`]. Dropping it
/// unrecorded (a cancelled request) gives back its probe slot without a verdict.
#[derive(Debug)]
pub struct Attempt {
    owner: Arc<Breaker>,
    probe: bool,
    epoch: u64,
    done: bool,
    transition: Option<Transition>,
}

/// One provider's circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
}

// === impl OpenReason ===

impl OpenReason {
    /// The name used in audit lines and metrics, e.g. `"consecutive_failures"`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpenReason::ConsecutiveFailures => "consecutive_failures",
            OpenReason::FailureRate => "failure_rate",
            OpenReason::P99Latency => "p99_latency",
            OpenReason::ProbeFailed => "probe_failed",
        }
    }
}

// === impl BreakerConfig ===

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(30),
            p99_latency: Some(Duration::from_secs(2)),
            open_for: Duration::from_secs(30),
            half_open_probes: 3,
        }
    }
}

impl BreakerConfig {
    /// `[breaker]` defaults overridden key by key by a provider's own `breaker` table.
    pub fn from_model(
        default: Option<&BreakerSection>,
        provider_override: Option<&BreakerSection>,
    ) -> Self {
        let mut cfg = Self::default();
        for section in [default, provider_override].into_iter().flatten() {
            if let Some(v) = section.consecutive_failures {
                cfg.consecutive_failures = v.max(1);
            }
            if let Some(v) = section.failure_rate {
                cfg.failure_rate = v;
            }
            if let Some(v) = section.min_requests {
                cfg.min_requests = v.max(1);
            }
            if let Some(v) = section.window {
                cfg.window = v.0;
            }
            if let Some(v) = section.p99_latency {
                cfg.p99_latency = Some(v.0);
            }
            if let Some(v) = section.open_for {
                cfg.open_for = v.0;
            }
        }
        cfg
    }
}

// === impl Attempt ===

impl Attempt {
    /// `Some(HalfOpened)` when acquiring this attempt moved the circuit to half-open.
    pub fn transition(&self) -> Option<Transition> {
        self.transition
    }

    /// Whether this is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done && self.probe {
            let mut inner = self.owner.lock();
            if inner.epoch == self.epoch {
                inner.release_probe();
            }
        }
    }
}

// === impl Breaker ===

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            inner: Mutex::new(Inner::new(cfg)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections cannot panic halfway through an update that matters, so
        // a poisoned lock still holds a usable state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks to send one request: always while closed; never while open, until `open_for`
    /// has passed; then as one of at most `half_open_probes` concurrent probes.
    pub fn try_acquire(self: &Arc<Self>, now: Instant) -> Option<Attempt> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut transition = None;
        if inner.phase == Phase::Open && inner.open_elapsed(now) {
            inner.set_phase(Phase::HalfOpen {
                in_flight: 0,
                succeeded: 0,
            });
            transition = Some(Transition::HalfOpened);
        }
        let probe = match &mut inner.phase {
            Phase::Closed => false,
            Phase::Open => return None,
            Phase::HalfOpen {
                in_flight,
                succeeded,
            } => {
                if in_flight.saturating_add(*succeeded) >= inner.cfg.half_open_probes.max(1) {
                    return None;
                }
                *in_flight += 1;
                true
            }
        };
        Some(Attempt {
            owner: Arc::clone(self),
            probe,
            epoch: inner.epoch,
            done: false,
            transition,
        })
    }

    /// Whether [`try_acquire`](Self::try_acquire) would admit a request now (for the
    /// strategies, which skip open circuits).
    pub fn admits(&self, now: Instant) -> bool {
        let inner = self.lock();
        match inner.phase {
            Phase::Closed => true,
            Phase::Open => inner.open_elapsed(now),
            Phase::HalfOpen {
                in_flight,
                succeeded,
            } => in_flight.saturating_add(succeeded) < inner.cfg.half_open_probes.max(1),
        }
    }

    /// Records how an admitted request went; returns the state change it caused, if any.
    /// Results of attempts admitted before the last state change are ignored.
    pub fn record(
        &self,
        mut attempt: Attempt,
        outcome: Outcome,
        now: Instant,
    ) -> Option<Transition> {
        attempt.done = true;
        if !std::ptr::eq(Arc::as_ptr(&attempt.owner), self) {
            return None;
        }
        let mut inner = self.lock();
        if inner.epoch != attempt.epoch {
            return None;
        }
        match inner.phase {
            Phase::Closed => inner.record_closed(outcome, now),
            Phase::HalfOpen { .. } => inner.record_probe(outcome, now),
            Phase::Open => None,
        }
    }

    /// The state for the admin API.
    pub fn state(&self, now: Instant) -> BreakerState {
        let mut inner = self.lock();
        inner.prune(now);
        let (state, probes_in_flight) = match inner.phase {
            Phase::Closed => (CircuitState::Closed, 0),
            Phase::Open if inner.open_elapsed(now) => (CircuitState::HalfOpen, 0),
            Phase::Open => (CircuitState::Open, 0),
            Phase::HalfOpen { in_flight, .. } => (CircuitState::HalfOpen, in_flight),
        };
        let closed = state == CircuitState::Closed;
        BreakerState {
            state,
            consecutive_failures: inner.consecutive,
            window_requests: len_u32(inner.window.len()),
            window_failures: inner.failures,
            latency_samples: inner.latency_samples,
            p99: inner.p99(),
            opened_at: if closed { None } else { inner.opened_at },
            reason: if closed { None } else { inner.reason },
            probes_in_flight,
        }
    }

    /// The current settings.
    pub fn config(&self) -> BreakerConfig {
        self.lock().cfg.clone()
    }

    /// Replaces the settings without touching the state (a policy reload).
    pub fn set_config(&self, cfg: BreakerConfig) {
        let mut inner = self.lock();
        if inner.cfg != cfg {
            inner.cfg = cfg;
            inner.recount_slow();
        }
    }
}

#[cfg(test)]
mod tests;
