//! Routing and failover (PRODUCT.md §7), as pure logic: no I/O, time through
//! `tokio::time` so everything here is tested on paused time.
//!
//! The proxy's route step, in order:
//!
//! 1. [`matcher::find_route`]: the first `[[route]]` whose `match` fits.
//! 2. For each target, a [`Candidate`]: its provider's breaker ([`Breaker::admits`]), the
//!    request's expected cost there ([`pricing::expected_cost`]) and the provider's recent
//!    latency ([`LatencyRegistry`]).
//! 3. [`strategy::rank`]: the order to try the targets in; empty when every circuit is
//!    open (503 `all_targets_unavailable`).
//! 4. [`AttemptPlan`]: which target next and how long to wait first, within
//!    `retry.attempts` and the deadline; each attempt takes a [`Breaker::try_acquire`]
//!    permit and hands it back through [`Breaker::record`] with its [`Outcome`].
//!
//! Beside it, the [`TimingWatch`] compares each endpoint's handshake and header times
//! with their own baseline. See `docs/routing.md`.

pub mod breaker;
pub mod latency;
pub mod matcher;
pub mod plan;
pub mod pricing;
pub mod retry;
pub mod strategy;
pub mod timing;

pub use breaker::{
    Attempt, Breaker, BreakerConfig, BreakerRegistry, BreakerState, CircuitState, OpenReason,
    Outcome, Transition,
};
pub use latency::{Ewma, LatencyRegistry, REPROBE_AFTER};
pub use matcher::{find_route, RouteRequest};
pub use plan::AttemptPlan;
pub use pricing::{expected_cost, expected_output_tokens, price_from_model};
pub use retry::{Backoff, RetryPolicy};
pub use strategy::{rank, reprobe, Candidate};
pub use timing::{Anomaly, Metric, TimingSnapshot, TimingWatch};
